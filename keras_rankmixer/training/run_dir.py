"""Run directories: the file layout, JSON in and out, history, plots, and loading the model.

A run directory holds everything one training run produced:

```
<run_dir>/
  config.json        the full configuration of the run (what `rankmixer train` was given)
  features.json      the feature specs (`features.feature_to_config`); also inside model.keras
  history.json       per-epoch metrics (loss, auc, val_loss, val_auc, val_auc_exact, lr, ...)
  metrics.json       final metrics (best epoch, validation / test AUC and logloss, params, time)
  model.keras        the trained model (best validation AUC weights when early stopping)
  curves.png         loss and AUC curves (train and validation; needs the `plots` extra)
  moe_active_ratio.png  SparseMoE models: active ratio per token over training (Fig. 4)
  best.weights.h5    the weights of the best validation epoch so far (`callbacks.KeepBest`)
  backup/            Keras `BackupAndRestore` state while training; removed on completion
```

A model built on a `Backbone` (every model `rankmixer train` makes) carries its feature specs
in `model.keras`, so `load_run_model` needs nothing else; `features.json` is read only for
models saved before backbones existed (plain functional models).

Plots need matplotlib (`pip install keras-rankmixer[plots]`); without it they are skipped
with a one-line note on stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import numpy as np

CONFIG_FILE = "config.json"
FEATURES_FILE = "features.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
PLOT_FILE = "curves.png"
MOE_PLOT_FILE = "moe_active_ratio.png"
BACKUP_DIR = "backup"
BEST_WEIGHTS_FILE = "best.weights.h5"


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), NaN written as null."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def read_json(path: str, what: str) -> Any:
    """`json.load` of a user's file, with an error naming the file and the position.

    Example:

    >>> read_json("no/such/file.json", "config")
    Traceback (most recent call last):
    ...
    FileNotFoundError: config file not found: no/such/file.json
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
            ) from None


def load_history(path: str) -> list[dict]:
    """The list of per-epoch dicts in a history JSON file ([] if absent)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def best_epoch(history: list[dict], monitor: str = "val_auc_exact") -> dict | None:
    """The history entry with the best `monitor` value (max, or min for a loss).

    Example:

    >>> best_epoch([{"epoch": 0, "val_auc_exact": 0.7}, {"epoch": 1, "val_auc_exact": 0.6}])
    {'epoch': 0, 'val_auc_exact': 0.7}
    """
    entries = [h for h in history if h.get(monitor) is not None]
    if not entries:
        return None
    pick = min if "loss" in monitor else max
    return pick(entries, key=lambda h: h[monitor])


def pyplot(path: str):
    """`matplotlib.pyplot` (Agg backend), or None after a one-line note that `path` is skipped
    because matplotlib (the `plots` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        print(
            f"note: matplotlib is not installed (pip install keras-rankmixer[plots]); "
            f"skipped {path}",
            file=sys.stderr,
        )
        return None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], path: str) -> str | None:
    """Draw loss and AUC curves (train and validation) per epoch into a PNG.

    Returns the path, or None when matplotlib is missing (skipped with a note).
    """
    plt = pyplot(path)
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("loss", ("loss", "val_loss", "val_logloss_exact")),
        ("AUC", ("auc", "val_auc", "val_auc_exact")),
    )
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], "o-", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def resolve_model_path(source: str) -> tuple[str, str | None]:
    """(path of the `.keras` file, path of an old run's `features.json` or None) for a
    `.keras` file or a run directory."""
    if os.path.isdir(source):
        model_path = os.path.join(source, MODEL_FILE)
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{source} is a directory without {MODEL_FILE}.")
        features_path = os.path.join(source, FEATURES_FILE)
        return model_path, features_path if os.path.exists(features_path) else None
    if not source.endswith(".keras"):
        raise ValueError(f"SOURCE must be a .keras file or a run directory, got {source!r}.")
    if not os.path.exists(source):
        raise FileNotFoundError(f"no such model file: {source}")
    return source, None


def _backbone_config(config: Any) -> dict | None:
    """The first `{"features": [...], ...}` config inside a saved model's config tree."""
    if isinstance(config, dict):
        features = config.get("features")
        if isinstance(features, list) and all(isinstance(f, dict) for f in features):
            return config
        children = config.values()
    elif isinstance(config, list):
        children = config
    else:
        return None
    for child in children:
        found = _backbone_config(child)
        if found is not None:
            return found
    return None


def saved_inputs(source: str) -> tuple[list | None, list[str] | None]:
    """`(feature specs, task names)` of a saved model, read from the `.keras` archive's
    `config.json` without building the model (so a command can check its data files before
    the slow `load_run_model`).

    The specs are the backbone's (as `load_run_model` returns them), else an old run's
    `features.json`; the tasks are a `Ranker`'s `tasks`. Either is None where the file does
    not say (e.g. a plain functional model, an unreadable archive): then load the model.
    """
    import zipfile

    from keras_rankmixer.features import check_features

    model_path, features_path = resolve_model_path(source)
    try:
        with zipfile.ZipFile(model_path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        config = None
    backbone = _backbone_config(config)
    specs: list | None = None
    if backbone is not None:
        specs = check_features(backbone["features"])
    elif features_path is not None:
        with open(features_path) as f:
            specs = check_features(json.load(f))
    tasks = None
    inner = config.get("config") if isinstance(config, dict) else None
    if isinstance(inner, dict) and "backbone" in inner and "tasks" in inner:
        tasks = list(inner["tasks"])  # a list of names, or a dict name -> options
    return specs, tasks


def load_run_model(source: str, compile: bool = False) -> tuple[Any, list | None]:
    """`(model, feature specs)` from a `.keras` file or a run directory.

    The specs come from the model itself (its backbone's config); a plain functional model
    (saved before backbones existed) takes them from the run's `features.json`, or has none
    (None) without one. A run's `features.json` that names other features than the model's
    inputs is an error, for either kind of model.
    """
    import keras

    import keras_rankmixer  # noqa: F401  (registers the custom layers and backbones)
    from keras_rankmixer.models import model_features
    from keras_rankmixer.models.backbone import find_backbone

    model_path, features_path = resolve_model_path(source)
    model = keras.saving.load_model(model_path, compile=compile)
    if find_backbone(model) is None and features_path is None:
        return model, None
    features = model_features(model, features_path)
    inputs = sorted(t.name for t in model.inputs)
    if features_path is not None:
        # The model's own specs win, but a run's features.json that says otherwise (edited,
        # or from another run) is reported rather than silently ignored.
        with open(features_path) as f:
            names = sorted(c.get("name") if isinstance(c, dict) else None for c in json.load(f))
        if inputs != names:
            raise ValueError(
                f"{features_path} declares features {names}, but the model's inputs are {inputs}."
            )
    return model, features

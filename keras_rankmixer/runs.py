"""Run directories: config, history, metrics, model, plots, and resumable training.

A run directory holds everything one training run produced:

```
<run_dir>/
  config.json        the full configuration of the run (what `rankmixer train` was given)
  features.json      the feature specs (`features.feature_to_config`), for export / serving
  history.json       per-epoch metrics (loss, auc, val_loss, val_auc, val_auc_exact, lr, ...)
  metrics.json       final metrics (best epoch, validation / test AUC and logloss, params, time)
  model.keras        the trained model (best validation AUC weights when early stopping)
  curves.png         loss and AUC curves (train and validation)
  best.weights.h5    the weights of the best validation epoch so far (`KeepBest`)
  backup/            Keras `BackupAndRestore` state while training; removed on completion
```

Resume: `training_callbacks` includes `keras.callbacks.BackupAndRestore(<run_dir>/backup)`,
which saves the model, optimizer and epoch counter at the end of every epoch. If the
process is interrupted (Ctrl-C, killed), running the same command again restores that state
and continues from the next epoch; `HistoryLogger` appends to `history.json`, so the history
of the interrupted epochs is kept. When training finishes, Keras deletes the backup.

Validation AUC: Keras' `AUC` metric is a 200-threshold approximation; `ExactAUC` computes the
exact (rank-based, ties averaged) AUC and logloss of the validation set after every epoch and
logs them as `val_auc_exact` / `val_logloss_exact`, which early stopping monitors.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

CONFIG_FILE = "config.json"
FEATURES_FILE = "features.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
PLOT_FILE = "curves.png"
BACKUP_DIR = "backup"
BEST_WEIGHTS_FILE = "best.weights.h5"


def roc_auc(labels: Any, scores: Any) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN if one class is absent.

    Example:

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype="float64").reshape(-1)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype="float64")
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def logloss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to `[eps, 1 - eps]` (as Keras does).

    Example:

    >>> round(logloss([1, 0], [0.9, 0.2]), 4)
    0.1643
    """
    y = np.asarray(labels, dtype="float64").reshape(-1)
    p = np.clip(np.asarray(probs, dtype="float64").reshape(-1), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate_exact(model: keras.Model, data, batch_size: int = 8192) -> dict[str, float]:
    """Exact AUC and logloss per task of `model` on `data`.

    `data` is `(features, labels)` (dicts of arrays) or a `tf.data.Dataset` of such pairs.
    Returns `{"auc": ..., "logloss": ...}` for one task, `{"<task>_auc": ..., ...}` for several.
    """
    labels, preds = predict_with_labels(model, data, batch_size)
    tasks = list(labels)
    out = {}
    for task in tasks:
        prefix = "" if len(tasks) == 1 else f"{task}_"
        out[f"{prefix}auc"] = roc_auc(labels[task], preds[task])
        out[f"{prefix}logloss"] = logloss(labels[task], preds[task])
    return out


def predict_with_labels(model, data, batch_size: int = 8192):
    """`(labels dict, predictions dict)` of numpy arrays, for arrays or a dataset."""
    if isinstance(data, tuple | list):
        features, labels = data
        preds = model.predict(features, batch_size=batch_size, verbose=0)
        labels = {k: np.asarray(v).reshape(-1) for k, v in labels.items()}
    else:
        parts_l: dict[str, list] = {}
        parts_p: dict[str, list] = {}
        for x, y in data:
            p = model.predict_on_batch(x)
            for k in y:
                parts_l.setdefault(k, []).append(np.asarray(y[k]).reshape(-1))
                parts_p.setdefault(k, []).append(np.asarray(p[k]).reshape(-1))
        labels = {k: np.concatenate(v) for k, v in parts_l.items()}
        preds = {k: np.concatenate(v) for k, v in parts_p.items()}
    if not isinstance(preds, Mapping):
        preds = {next(iter(labels)): preds}
    preds = {k: np.asarray(v).reshape(-1) for k, v in preds.items()}
    missing = sorted(set(labels) - set(preds))
    if missing:
        raise ValueError(f"labels {missing} have no model output; outputs: {sorted(preds)}.")
    return labels, {k: preds[k] for k in labels}


class ExactAUC(keras.callbacks.Callback):
    """Log the exact validation AUC/logloss as `val_auc_exact` / `val_logloss_exact`.

    Put it before `EarlyStopping` / `ModelCheckpoint` in the callback list so they can monitor
    it. With several tasks the logged value is the mean over tasks (and each task's value is
    logged as `val_<task>_auc_exact`).
    """

    def __init__(self, validation_data, batch_size: int = 8192) -> None:
        super().__init__()
        self.validation_data = validation_data
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        labels, preds = predict_with_labels(self.model, self.validation_data, self.batch_size)
        aucs, losses = [], []
        for task in labels:
            auc = roc_auc(labels[task], preds[task])
            loss = logloss(labels[task], preds[task])
            if len(labels) > 1:
                logs[f"val_{task}_auc_exact"] = auc
                logs[f"val_{task}_logloss_exact"] = loss
            aucs.append(auc)
            losses.append(loss)
        logs["val_auc_exact"] = float(np.mean(aucs))
        logs["val_logloss_exact"] = float(np.mean(losses))


class KeepBest(keras.callbacks.Callback):
    """Save the weights whenever `monitor` beats every earlier epoch; restore them at the end.

    Unlike `EarlyStopping(restore_best_weights=True)` this survives a resume: the best value
    so far is read from the run's history file (all epochs, including those before an
    interruption) and the best weights live on disk.
    """

    def __init__(self, weights_path: str, history_path: str, monitor: str, mode: str) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.history_path = history_path
        self.monitor = monitor
        self.mode = mode

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        earlier = [
            h[self.monitor]
            for h in load_history(self.history_path)
            if h.get("epoch", -1) < epoch and h.get(self.monitor) is not None
        ]
        better = min if self.mode == "min" else max
        if not earlier or better(earlier + [float(value)]) == float(value):
            self.model.save_weights(self.weights_path)

    def on_train_end(self, logs=None) -> None:
        if os.path.exists(self.weights_path):
            self.model.load_weights(self.weights_path)


class HistoryLogger(keras.callbacks.Callback):
    """Append each epoch's logs (plus epoch index, wall time, learning rate) to a JSON file.

    On resume, epochs already in the file at or after the resumed epoch are replaced, so the
    file always holds one entry per completed epoch. Optionally redraws the curves PNG.
    """

    def __init__(self, path: str, plot_path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.plot_path = plot_path
        self._start = None

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        history = load_history(self.path)
        history = [h for h in history if h.get("epoch", -1) < epoch]
        entry = {"epoch": int(epoch)}
        for k, v in (logs or {}).items():
            try:
                entry[k] = float(v)
            except (TypeError, ValueError):
                continue
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if lr is not None:
            try:
                entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            except (TypeError, ValueError):
                pass
        entry["epoch_seconds"] = round(time.time() - (self._start or time.time()), 3)
        history.append(entry)
        write_json(self.path, history)
        if self.plot_path:
            plot_history(history, self.plot_path)


def load_history(path: str) -> list[dict]:
    """The list of per-epoch dicts in a history JSON file ([] if absent)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


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


def plot_history(history: list[dict], path: str) -> str:
    """Draw loss and AUC curves (train and validation) per epoch into a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
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


def training_callbacks(
    run_dir: str,
    validation_data=None,
    *,
    monitor: str = "val_auc_exact",
    patience: int | None = 2,
    reduce_lr_on_plateau: bool = False,
    resume: bool = True,
    plot: bool = True,
    min_delta: float = 1e-4,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable run: exact validation AUC, early stopping, history, backup.

    Order matters: `ExactAUC` first (it adds `val_auc_exact` to the logs), then
    `ReduceLROnPlateau` / `EarlyStopping` / `KeepBest` (which read it; at the end of training
    the best epoch's weights are restored), then `HistoryLogger` and last
    `BackupAndRestore` (so a restored run has the full history on disk).

    Args:
        run_dir: The run directory.
        validation_data: `(features, labels)` or a dataset; None disables validation callbacks.
        monitor: The logged value to maximise for early stopping.
        patience: Early-stopping patience in epochs (None: no early stopping).
        reduce_lr_on_plateau: Divide the learning rate by 10 when `monitor` does not improve
            (as FuxiCTR/BARS do).
        resume: Add `BackupAndRestore(run_dir/backup)`.
        plot: Redraw `curves.png` after every epoch.
        min_delta: The smallest change of `monitor` that counts as an improvement, for early
            stopping and the learning-rate schedule alike (default 1e-4, Keras's
            `ReduceLROnPlateau` default: without it a run whose AUC creeps up by 1e-6 an
            epoch at the minimum learning rate never stops).
    """
    os.makedirs(run_dir, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    mode = "min" if "loss" in monitor else "max"
    if validation_data is not None:
        callbacks.append(ExactAUC(validation_data))
        if reduce_lr_on_plateau:
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor,
                    mode=mode,
                    factor=0.1,
                    patience=1,
                    min_lr=1e-6,
                    min_delta=min_delta,
                    verbose=1,
                )
            )
        if patience is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, mode=mode, patience=patience, min_delta=min_delta, verbose=1
                )
            )
        callbacks.append(
            KeepBest(
                os.path.join(run_dir, BEST_WEIGHTS_FILE),
                os.path.join(run_dir, HISTORY_FILE),
                monitor,
                mode,
            )
        )
    callbacks.append(
        HistoryLogger(
            os.path.join(run_dir, HISTORY_FILE),
            os.path.join(run_dir, PLOT_FILE) if plot else None,
        )
    )
    if resume:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP_DIR)))
    return callbacks


def best_epoch(history: list[dict], monitor: str = "val_auc_exact") -> dict | None:
    """The history entry with the best `monitor` value (max, or min for a loss)."""
    entries = [h for h in history if h.get(monitor) is not None]
    if not entries:
        return None
    pick = min if "loss" in monitor else max
    return pick(entries, key=lambda h: h[monitor])

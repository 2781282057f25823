"""The train / evaluate runner behind `rankmixer train` and `rankmixer evaluate`.

`build_and_train(config)` takes a config dict (the keys of `DEFAULTS`): data -> checks ->
model (built inside an optional `scope()`, e.g. a `tf.distribute` strategy scope) -> fit
with the run-dir callbacks (`callbacks.training_callbacks`) -> `<run_dir>` (see `run_dir`)
-> the final metrics dict. `evaluate_run(run_dir)` scores a run's model on files.

- **The model** is named by `config["model"]`: a RankMixer variant (`rankmixer`,
  `no_token_mixing`, `shared_ffn`, `no_residual`, `no_layer_norm`; sized by a rankmixer
  preset, by default `rankmixer_base`, the validated config with its head, and the
  `num_tokens` / `token_dim` / `num_layers` / `hidden_ratio` keys), a baseline (`dnn`,
  `dcnv2`; `models.baselines.BASELINE_DEFAULTS`, the validated MLP), or any backbone registered with
  `keras_rankmixer.models.backbone.register_backbone` (`tokenmixer_large`, or one of
  yours: list its module in `config["imports"]` and it registers before the model is
  built). A registered backbone starts from its preset (`config["preset"]`, default: its
  smallest one; none if it has no presets), then the size keys, `dropout` and the
  `model_kwargs` it takes; the other `model_kwargs` go to its task (`Ranker`, or the
  backbone class's `task_class`, e.g. `TokenMixerLargeRanker` with its auxiliary losses:
  `tower_units`, `aux_loss_weight`).
- **Resume**: running the same config again after an interruption resumes from the last
  completed epoch (`BackupAndRestore` in `<run_dir>/backup`). A finished run (with
  `metrics.json`) is not retrained unless `overwrite` is set; a changed config is refused.
- **Bad data** fails before anything is written: every row of every split is checked first
  (`DataError` naming file, line and column), and empty splits are refused.
- **The reader** (`config["reader"]`): `"native"` (the default) checks and streams the files
  with `data.native.check_native_files` / `make_native_dataset` (CSV/TSV and TFRecord parsed
  by TF ops in a parallel map; Parquet falls back to the Python reader), `"python"` with
  `data.check_files` / `make_dataset`. Same values, report counts and errors; only the
  shuffle order of the training rows differs. Statistics (`read_arrays`) are read by the
  Python reader either way.
- **SparseMoE** models (`model_kwargs: {"moe": {...}}`) also log each layer's active ratio
  and lambda (`moe/...` keys of history.json) and plot them to `moe_active_ratio.png`.

Messages go to `log(message, warning=False)` (default: print; the CLI prefixes them with
the command's name).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keras_rankmixer.training import run_dir as files

#: Every configuration key and its default. `config.json` in the run dir holds the full dict.
DEFAULTS: dict[str, Any] = {
    # data
    "train": None,  # path(s)/glob(s); None -> synthetic clicks
    "valid": None,
    "test": None,
    "features": None,  # JSON file of specs, "frappe", "criteo", "census", or None (synthetic)
    "labels": ["label"],
    "format": None,
    "column_names": None,
    "delimiter": None,
    "hash_columns": [],
    "ignore_columns": [],
    "on_bad_rows": "raise",
    "sequence_delimiter": "|",  # between the ids of a sequence cell in text files
    "compression": None,  # TFRecord files: None, "GZIP" or "ZLIB" (text .gz is by name)
    "chunk_rows": 65_536,  # rows converted at a time by the readers
    "reader": "native",  # "native": parsed by TF ops (data.native); "python": make_dataset
    "shuffle_chunks": 1,  # training rows are shuffled within windows of this many chunks
    "adapt_vocabulary": False,
    "synthetic_samples": 50_000,
    "shard_index": 0,
    "num_shards": 1,
    # model
    "model": "rankmixer",
    "preset": None,  # None: the model's default (RankMixer: rankmixer_base; a backbone: its smallest)
    "num_tokens": None,
    "token_dim": None,
    "num_layers": None,
    "hidden_ratio": None,
    "dropout": None,  # None: the model's default (dnn / dcnv2: 0.2; others: 0 or the preset's)
    "embedding_l2": None,  # None: the model's (rankmixer_base, dnn, dcnv2: 0.01; others: 0)
    "model_kwargs": {},
    "imports": [],  # modules (names or .py paths) imported first, e.g. to register backbones
    # training
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 4096,
    # None: 30 with a validation split (early stopping on its AUC ends training first: the
    # validation runs of benchmarks/RESULTS.md stopped after 4-31 epochs), 10 without one
    "epochs": None,
    "patience": 2,
    "reduce_lr_on_plateau": True,  # learning rate / 10 when validation AUC stalls
    "mixed_precision": False,
    "jit_compile": True,
    "seed": 0,
    "run_dir": None,
    "overwrite": False,
    "verbose": None,
}

#: The values of `config["reader"]`: which reader checks and streams the files.
READERS = ("native", "python")
#: Keys that do not change what a run computes (a finished / interrupted run may differ in them).
_NOT_RUN_KEYS = ("verbose", "overwrite", "reader")

#: The size keys (flags) of token-based models.
SIZE_KEYS = ("num_tokens", "token_dim", "num_layers", "hidden_ratio")
#: Models built by `models.baselines` (today's builders) rather than from the registry.
_BASELINES = ("dnn", "dcnv2")
#: The preset of the RankMixer variants when none is given: the validated default (#18).
DEFAULT_PRESET = "rankmixer_base"

Log = Callable[..., None]


def print_log(message: str, warning: bool = False) -> None:
    """The default `log`: info on stdout, warnings on stderr."""
    if warning:
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(message)


# --------------------------------------------------------------------------- config


def import_modules(names: Sequence[str]) -> None:
    """Import user modules (dotted names, or paths of `.py` files) so that their
    `@register_backbone` classes are registered; a module already imported is not re-run."""
    for name in names:
        if name.endswith(".py") or os.sep in name:
            path = os.path.abspath(name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--import: no such module file: {name}")
            module_name = os.path.splitext(os.path.basename(path))[0]
            known = sys.modules.get(module_name)
            if known is not None and os.path.abspath(getattr(known, "__file__", "")) == path:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
        else:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                raise ValueError(f"--import {name}: {e}") from None


def model_names() -> list[str]:
    """Every name `config["model"]` accepts: RankMixer variants, baselines, registered
    backbones."""
    from keras_rankmixer.models import backbone_names
    from keras_rankmixer.models.baselines import MODEL_NAMES

    return sorted(set(MODEL_NAMES) | set(backbone_names()))


def resolve_preset(model: str, preset: str | None) -> str | None:
    """The preset a model is built from: `preset` checked against the model, or its default.

    RankMixer variants take the rankmixer presets (default `rankmixer_base`, the validated
    config); the baselines ignore it (`models.baselines.BASELINE_DEFAULTS` is theirs; a
    preset given is only checked to exist); a registered backbone takes its own presets
    (default: the smallest by block parameters; None if it has none). Unknown model or
    preset: `ValueError`.
    """
    from keras_rankmixer.models import backbone_names
    from keras_rankmixer.models.baselines import VARIANTS
    from keras_rankmixer.models.presets import get_backbone_preset, preset_names

    if model in _BASELINES:
        if preset is not None:
            get_backbone_preset(preset)  # an unknown name is still an error
        return preset
    if model in VARIANTS:
        backbone = "rankmixer"
        preset = preset or DEFAULT_PRESET
    elif model in backbone_names():
        backbone = model
        if preset is None:
            own = sorted(
                (get_backbone_preset(n) for n in preset_names(model)),
                key=lambda p: p.block_params,
            )
            return own[0].name if own else None
    else:
        raise ValueError(f"unknown model name={model!r}; available: {model_names()}.")
    spec = get_backbone_preset(preset)
    if spec.backbone != backbone:
        raise ValueError(
            f"preset {preset!r} is a {spec.backbone} preset; --model {model} takes "
            f"{preset_names(backbone) or 'no presets'}."
        )
    return preset


def check_config(config: dict) -> dict:
    """`config` completed with `DEFAULTS` and checked; user modules imported, the preset
    resolved (`resolve_preset`). Raises `ValueError` naming the key."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}.")
    config = {**DEFAULTS, **config}
    for key in ("train", "valid", "test", "labels", "hash_columns", "ignore_columns", "imports"):
        if isinstance(config[key], str):
            config[key] = [config[key]]
    if config["epochs"] is None:  # the synthetic data (no `train`) has a validation split
        config["epochs"] = 30 if config["valid"] or not config["train"] else 10
    for key in ("batch_size", "epochs"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"`{key}` must be a positive int, got {key}={config[key]!r}.")
    check_reader(config["reader"])
    if config["train"] and not config["features"]:
        raise ValueError(
            "`features` is required with `train` files (a JSON spec file, 'frappe', 'criteo' "
            "or 'census')."
        )
    if not config["train"]:
        config["labels"] = ["click"]  # the synthetic generator's task
    if config["run_dir"] is None:
        config["run_dir"] = os.path.join("runs", config["model"])
    if config["column_names"] == ["criteo"]:
        from keras_rankmixer.data import CRITEO_COLUMNS

        config["column_names"] = list(CRITEO_COLUMNS)
    read_options(config)  # a bad reader setting names its key before any file is read
    import_modules(config["imports"])
    config["preset"] = resolve_preset(config["model"], config["preset"])
    return config


def check_reader(reader: Any) -> None:
    """`reader` is one of `READERS`, else a `ValueError` naming the key."""
    if reader not in READERS:
        raise ValueError(
            f"`reader` must be one of {list(READERS)} ('native': TF ops, 'python': the "
            f"generator reader), got reader={reader!r}."
        )


def config_changes(saved: dict, config: dict, ignore: Sequence[str] = ()) -> list[str]:
    """The keys whose value differs between a run's saved config and `config` (a key the
    saved config lacks, from an older version, counts as its default)."""
    return sorted(k for k in DEFAULTS if k not in ignore and saved.get(k, DEFAULTS[k]) != config[k])


# --------------------------------------------------------------------------- data


def load_specs(config: dict) -> tuple[list, list[str]]:
    """Feature specs and extra hash columns named by `config["features"]`."""
    from keras_rankmixer.data import census_features, criteo_features, frappe_features
    from keras_rankmixer.features import feature_from_config

    spec = config["features"]
    if spec == "frappe":
        return frappe_features(), []
    if spec == "census":  # files written by keras_rankmixer.data.prepare_census
        return census_features(), []
    if spec == "criteo":
        return criteo_features()
    data = files.read_json(spec, "feature spec")
    if isinstance(data, dict):
        data = data.get("features", data)
    if not isinstance(data, list):
        raise ValueError(f"{spec}: expected a JSON list of feature specs.")
    return [feature_from_config(c) for c in data], []


def read_options(
    config: dict, extra_hash_columns: Sequence[str] = (), on_bad_rows: str | None = None
):
    """The `keras_rankmixer.data.ReadOptions` of a config: format and layout, the hashed
    columns (the config's and `extra_hash_columns`, e.g. a named dataset's), the bad-row
    policy (`on_bad_rows` overrides the config's) and the training shard."""
    from keras_rankmixer.data import ReadOptions

    overrides: dict[str, Any] = {
        "hash_columns": sorted(set(extra_hash_columns) | set(config["hash_columns"] or ()))
    }
    if on_bad_rows is not None:
        overrides["on_bad_rows"] = on_bad_rows
    return ReadOptions.from_config(config, **overrides)


def reader_functions(reader: str) -> tuple[Callable, Callable]:
    """`(check, make)` of a reader name (`READERS`): `check(paths, specs, labels, options=)`
    returns the `ReadReport` of a validation pass, `make(paths, specs, labels, ...)` the
    `tf.data` dataset (with `report`, `files` and `errors`). Looked up when called, so a
    patched module attribute is what runs."""
    check_reader(reader)
    if reader == "python":
        from keras_rankmixer import data

        return data.check_files, data.make_dataset
    from keras_rankmixer.data import native

    return native.check_native_files, native.make_native_dataset


def require_rows(split: str, paths: list[str], report) -> None:
    """A split without one usable row is an error (training on nothing, AUC of nothing)."""
    if report.rows_kept == 0:
        from keras_rankmixer.data import DataError

        skipped = sum(report.skipped.values())
        raise DataError(
            f"--{split} {', '.join(paths)}: no data rows to use ({report.rows_read} read"
            + (f", {skipped} skipped as bad" if skipped else "")
            + "); a header-only or empty split cannot be "
            + ("trained on." if split == "train" else "evaluated.")
        )


def raise_data_error(error: BaseException, *datasets) -> None:
    """Re-raise the reader's `DataError` that tf.data wrapped into `error`, if there is one.

    A `make_dataset` generator (or a `make_native_dataset` block's `tf.py_function`) that hits
    bad data raises inside tf.data's thread; Keras then sees an `InvalidArgumentError` naming
    the py_function node (`[[{{node PyFunc}}]]`). The dataset keeps the original
    (`dataset.errors`): that is what the user needs to read.
    """
    for ds in datasets:
        errors = getattr(ds, "errors", None)
        if errors:
            raise errors[0] from None


def load_data(config: dict) -> dict:
    """Specs and splits: {"specs", "train", "valid", "test", "rows"}; arrays or datasets.

    For files also "steps" and "reports": the train (one process) and valid datasets repeat
    (`data.repeat_epochs`), "steps" gives their batches per pass and "reports" their check
    pass's `ReadReport` (one exact pass).
    """
    from keras_rankmixer.data import (
        adapt_vocabularies,
        make_click_data,
        read_arrays,
        repeat_epochs,
    )
    from keras_rankmixer.features import adapt_features

    if not config["train"]:
        data = make_click_data(config["synthetic_samples"], seed=config["seed"])
        train, rest = data.split(0.8)
        valid, test = rest.split(0.5)
        return {
            "specs": data.specs,
            "train": (train.features, train.labels),
            "valid": (valid.features, valid.labels),
            "test": (test.features, test.labels),
            "oracle": {"valid": valid, "test": test},
            "rows": {"train": len(train.labels["click"])},
        }
    specs, hash_columns = load_specs(config)
    check_files, make_dataset = reader_functions(config["reader"])
    # The training shard reads its part of the files; validation and test read all of them.
    options = {"train": read_options(config, hash_columns)}
    options["valid"] = options["test"] = options["train"].replace(shard_index=0, num_shards=1)
    needs_stats = config["adapt_vocabulary"] or any(f.kind == "numeric" for f in specs)
    checked: dict[str, Any] = {}
    if needs_stats:
        # Statistics from ALL training files, on every process: with per-shard statistics the
        # processes of a multi-host run would build different models (normalisation, vocab).
        whole = options["valid"]  # all training files, not this process's shard
        sample = read_arrays(config["train"], specs, config["labels"], options=whole)
        require_rows("train", config["train"], sample.report)
        checked["train"] = sample.report
        specs = (
            adapt_vocabularies(specs, sample.features)
            if config["adapt_vocabulary"]
            else adapt_features(specs, sample.features)
        )
        del sample
    # Every row of every split is read and checked once before a model is built: bad data
    # fails here with the reader's DataError (file, line, column), not inside tf.data after
    # an epoch, and empty splits are refused instead of trained / validated on.
    for split in ("train", "valid", "test"):
        if config[split] and split not in checked:
            report = check_files(config[split], specs, config["labels"], options=options[split])
            require_rows(split, config[split], report)
            checked[split] = report
    out = {
        "specs": specs,
        "rows": {k: v.rows_kept for k, v in checked.items()},
        "reports": {},  # the check pass's report of each repeating split: one exact pass
        "steps": {},
    }
    for split in ("train", "valid", "test"):
        if config[split]:
            train = split == "train"
            ds = make_dataset(
                config[split],
                specs,
                config["labels"],
                batch_size=config["batch_size"],
                shuffle=train,
                shuffle_chunks=config["shuffle_chunks"] if train else 1,
                seed=config["seed"],
                options=options[split],
            )
            # Train and valid are read once per epoch: through one iterator kept across
            # epochs (same batches), so the iterator's set-up is paid once, not every epoch.
            # A training shard of a multi-process run keeps the old per-epoch iterator (its
            # row count differs from other processes').
            if split == "valid" or (train and options["train"].num_shards == 1):
                ds, out["steps"][split] = repeat_epochs(
                    ds, checked[split].rows_kept, config["batch_size"]
                )
                out["reports"][split] = checked[split]
            out[split] = ds
    return out


def warn_few_steps(config: dict, rows: int | None, log: Log = print_log) -> None:
    """Warn when the batch is so large that an epoch is a handful of steps."""
    if not rows:
        return
    steps = -(-rows // config["batch_size"])
    if steps < 10:
        suggest = max(16, 1 << max(4, (rows // 20).bit_length() - 1))
        log(
            f"--batch-size {config['batch_size']} gives {steps} step(s) per epoch on "
            f"{rows:,} training rows, too few to learn from; try --batch-size {suggest}.",
            warning=True,
        )


# --------------------------------------------------------------------------- model


def _parameters(fn) -> set[str]:
    return {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "self"
    }


def _build_registered(config: dict, specs: list, kwargs: dict):
    """The task of the registered backbone `config["model"]` (its `task_class_of()`: a
    `Ranker`, or e.g. a `TokenMixerLargeRanker` with its auxiliary losses) on it (see the
    module docstring)."""
    from keras_rankmixer.models import Backbone, get_backbone_class, get_backbone_preset
    from keras_rankmixer.models.ranker import ranker_arguments, task_class_for

    model = config["model"]
    backbone_cls = get_backbone_class(model)
    task_cls = task_class_for(backbone_cls)
    backbone_args = _parameters(backbone_cls.__init__) - {"features"}
    ranker_args = ranker_arguments(task_cls)
    backbone_kwargs = {k: config[k] for k in SIZE_KEYS if config[k] is not None}
    if config["dropout"]:
        backbone_kwargs["dropout"] = config["dropout"]
    if config["mixed_precision"]:
        backbone_kwargs["dtype"] = "mixed_bfloat16"
    ranker_kwargs = {"name": model}
    if config["preset"]:  # the preset's head, unless model_kwargs say otherwise
        task = get_backbone_preset(config["preset"]).task
        ranker_kwargs.update({k: v for k, v in task.items() if k in ranker_args})
    for key, value in kwargs.items():
        if key in backbone_args:
            backbone_kwargs[key] = value
        elif key in ranker_args:
            ranker_kwargs[key] = value
        else:
            raise ValueError(
                f"model_kwargs key {key!r} is not an argument of backbone {model!r} "
                f"({sorted(backbone_args)}) or of its {task_cls.__name__} ({sorted(ranker_args)})."
            )
    wrong = sorted(set(backbone_kwargs) - backbone_args)
    if wrong:
        raise ValueError(
            f"backbone {model!r} takes no {wrong} (its arguments: {sorted(backbone_args)})."
        )
    if config["preset"]:
        backbone = Backbone.from_preset(config["preset"], features=specs, **backbone_kwargs)
    else:
        backbone = backbone_cls(features=specs, **backbone_kwargs)
    return task_cls(backbone, tasks=config["labels"], **ranker_kwargs)


def build_model(config: dict, specs: list):
    """The model named by `config["model"]` (a checked config: `check_config`).

    Defaults, then the flags, then `model_kwargs`: a RankMixer variant starts from its preset
    (`rankmixer_base`: the validated T, D, L, k, pooling, embedding L2 and its head,
    `BackbonePreset.task`), the baselines from `models.baselines.BASELINE_DEFAULTS`, a
    registered backbone from its preset; `dropout` / `embedding_l2` None keep those.
    """
    from keras_rankmixer.models import get_backbone_preset, get_preset
    from keras_rankmixer.models.baselines import (
        BASELINE_DEFAULTS,
        VARIANTS,
        build_model,
        set_embedding_l2,
    )

    kwargs = dict(config["model_kwargs"])
    dropout = {} if config["dropout"] is None else {"dropout": config["dropout"]}
    if config["model"] in VARIANTS:
        size = {**get_backbone_preset(config["preset"]).task, **get_preset(config["preset"])}
        size.update({k: config[k] for k in SIZE_KEYS if config[k] is not None})
        if any(config[k] is not None for k in ("token_dim", "hidden_ratio")):
            size.pop("hidden_dim", None)  # a preset's explicit width would override the flags
        kwargs = {**size, **dropout, **kwargs}
    elif config["model"] not in _BASELINES:
        model = _build_registered(config, specs, kwargs)
        if config["embedding_l2"] is not None:
            set_embedding_l2(model, config["embedding_l2"])
        return model
    else:
        kwargs = {**BASELINE_DEFAULTS[config["model"]], **dropout, **kwargs}
    l2 = kwargs.pop("embedding_l2", 0.0)
    if config["embedding_l2"] is not None:
        l2 = config["embedding_l2"]
    if config["mixed_precision"]:
        kwargs["dtype"] = "mixed_bfloat16"
    model = build_model(config["model"], specs, tasks=config["labels"], **kwargs)
    return set_embedding_l2(model, l2)


# --------------------------------------------------------------------------- train


def build_and_train(
    config: dict, scope=None, extra_callbacks: Sequence = (), log: Log = print_log
) -> dict:
    """Train per `config` into `config["run_dir"]`; returns the final metrics dict.

    Args:
        config: A dict with keys of `DEFAULTS` (missing keys take the defaults).
        scope: Optional callable returning a context manager; model construction and
            compilation run inside it (e.g. `strategy.scope`).
        extra_callbacks: More Keras callbacks, run after the run-dir ones.
        log: `log(message, warning=False)` for progress messages.
    """
    import warnings

    import keras

    # Streaming datasets have no known length; Keras warns at every epoch end otherwise.
    warnings.filterwarnings("ignore", message=".*ran out of data.*")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")

    from keras_rankmixer.features import feature_to_config
    from keras_rankmixer.flops import count_model
    from keras_rankmixer.models.ranker import Ranker
    from keras_rankmixer.training.callbacks import training_callbacks
    from keras_rankmixer.training.compile import compile_for_ranking
    from keras_rankmixer.training.metrics import evaluate_exact, roc_auc
    from keras_rankmixer.training.moe_monitor import (
        MoEMonitor,
        find_moe_layers,
        plot_active_ratio,
    )

    config = check_config(config)
    run_dir = config["run_dir"]
    metrics_path = os.path.join(run_dir, files.METRICS_FILE)
    config_path = os.path.join(run_dir, files.CONFIG_FILE)
    backup = os.path.join(run_dir, files.BACKUP_DIR)
    if os.path.exists(metrics_path) and not config["overwrite"]:
        changed = []
        if os.path.exists(config_path):
            with open(config_path) as f:
                changed = config_changes(json.load(f), config, _NOT_RUN_KEYS)
        if changed:
            raise ValueError(
                f"{run_dir} holds a finished run with a different config ({changed}); "
                "use another --run-dir, or --overwrite to retrain."
            )
        log(f"{run_dir} holds a finished run ({metrics_path}); pass --overwrite to retrain.")
        with open(metrics_path) as f:
            return json.load(f)
    resuming = os.path.isdir(backup) and not config["overwrite"]
    if os.path.exists(config_path) and resuming:
        with open(config_path) as f:
            saved = json.load(f)
        changed = config_changes(saved, config, (*_NOT_RUN_KEYS, "epochs"))
        if changed:
            raise ValueError(
                f"{run_dir} holds an interrupted run with a different config ({changed}); "
                "use another --run-dir or --overwrite."
            )
    # Data and model first: a bad or empty file, an unknown model or preset fail before
    # anything is written or removed.
    keras.utils.set_random_seed(config["seed"])
    data = load_data(config)
    specs = data["specs"]
    warn_few_steps(config, data["rows"].get("train"), log)
    with scope() if scope is not None else contextlib.nullcontext():
        model = build_model(config, specs)
        # The task's own compile defaults (per-task BCE and AUC, its tasks' loss weights).
        compile_args = dict(
            learning_rate=config["learning_rate"], jit_compile=config["jit_compile"]
        )
        if isinstance(model, Ranker):
            model.compile(optimizer=config["optimizer"], **compile_args)
        else:
            compile_for_ranking(model, config["optimizer"], **compile_args)
    if config["overwrite"]:
        import shutil

        for name in (
            files.BACKUP_DIR,
            files.HISTORY_FILE,
            files.METRICS_FILE,
            files.BEST_WEIGHTS_FILE,
        ):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)
    files.write_json(config_path, config)
    files.write_json(
        os.path.join(run_dir, files.FEATURES_FILE), [feature_to_config(f) for f in specs]
    )
    stats = count_model(model)
    log(
        f"{config['model']}: {stats['params']:,} params ({stats['dense_params']:,} "
        f"dense), {stats['flops_per_sample']:,} FLOPs/sample; run dir {run_dir}"
        + (" (resuming)" if resuming else "")
    )
    # SparseMoE models: active ratio and lambda per layer into the epoch logs (so into
    # history.json), placed before the run-dir callbacks that write the logs out.
    moe_layers = find_moe_layers(model)
    moe_monitor = MoEMonitor(every_n_batches=10) if moe_layers else None
    callbacks = (
        ([moe_monitor] if moe_monitor else [])
        + training_callbacks(
            run_dir,
            data.get("valid"),
            validation_steps=data.get("steps", {}).get("valid"),
            patience=config["patience"] or None,
            reduce_lr_on_plateau=config["reduce_lr_on_plateau"],
        )
        + list(extra_callbacks)
    )
    verbose = config["verbose"]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    train = data["train"]
    fit_kwargs: dict[str, Any] = {"x": train}
    if "train" in data.get("steps", {}):
        fit_kwargs["steps_per_epoch"] = data["steps"]["train"]
    if isinstance(train, tuple):
        fit_kwargs = {
            "x": train[0],
            "y": train[1],
            "batch_size": config["batch_size"],
            "shuffle": True,
        }
    start = time.time()
    try:
        model.fit(epochs=config["epochs"], callbacks=callbacks, verbose=verbose, **fit_kwargs)
    except Exception as e:
        raise_data_error(e, data.get("train"), data.get("valid"))
        raise
    seconds = time.time() - start

    history = files.load_history(os.path.join(run_dir, files.HISTORY_FILE))
    model.save(os.path.join(run_dir, files.MODEL_FILE))
    if moe_monitor is not None and moe_monitor.records:
        target = next(iter(moe_layers.values())).budget_ratio()
        plot_active_ratio(
            moe_monitor,
            os.path.join(run_dir, files.MOE_PLOT_FILE),
            target=target,
            title=config["model"],
        )
    metrics: dict[str, Any] = {
        "model": config["model"],
        "params": stats["params"],
        "dense_params": stats["dense_params"],
        "flops_per_sample": stats["flops_per_sample"],
        "epochs_run": len(history),
        "train_seconds_this_session": round(seconds, 1),
        "train_seconds_total": round(sum(h.get("epoch_seconds", 0) for h in history), 1),
    }
    best = files.best_epoch(history)
    if best is not None:
        metrics["best_epoch"] = best["epoch"] + 1
        metrics["valid_auc"] = best["val_auc_exact"]
        metrics["valid_logloss"] = best["val_logloss_exact"]
    if data.get("test") is not None:
        try:
            exact = evaluate_exact(model, data["test"])
        except Exception as e:
            raise_data_error(e, data["test"])
            raise
        for k, v in exact.items():
            metrics[f"test_{k}"] = v
    for split, part in data.get("oracle", {}).items():
        metrics[f"{split}_oracle_auc"] = roc_auc(part.labels["click"], part.probabilities["click"])
    for split in ("train", "valid", "test"):
        # A repeating split: the check pass's report, one exact pass (its iterator reads
        # ahead); otherwise the dataset's own, cumulative over epochs (a multi-process
        # run's training shard).
        report = data.get("reports", {}).get(split) or getattr(data.get(split), "report", None)
        if report is not None:
            metrics[f"{split}_data"] = report.to_dict()  # with the first 20 examples
    metrics["model_path"] = os.path.join(run_dir, files.MODEL_FILE)
    files.write_json(metrics_path, metrics)
    if history:
        files.plot_history(history, os.path.join(run_dir, files.PLOT_FILE))
    shown = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in metrics.items()
        if not k.endswith("_data")
    }
    log(f"done: {json.dumps(shown)}")
    return metrics


# --------------------------------------------------------------------------- evaluate


def evaluate_run(
    run_dir: str,
    data: list[str] | None = None,
    batch_size: int = 8192,
    on_bad_rows: str | None = None,
    progress: bool | None = None,
    read_overrides: Mapping[str, Any] | None = None,
    reader: str | None = None,
) -> dict:
    """Exact AUC / logloss of a run's model on `data` files (default: the run's test files,
    else its validation files), read with the run's reader options; returns the metrics.

    `on_bad_rows` and `read_overrides` (other `ReadOptions` fields, e.g. `compression`,
    `sequence_delimiter`, `chunk_rows`) replace the run's (or the defaults') reader options;
    `reader` (`READERS`) replaces the run's `config["reader"]` (default: `DEFAULTS`'s,
    "native").

    The feature specs come from `model.keras` itself (`run_dir.load_run_model`; an old
    run's `features.json` for a plain functional model), the reader options, labels and
    user modules (`imports`) from `config.json`. `run_dir` may also be a bare `.keras` file:
    then `data` is required and read with the default options (format from the file names,
    a header line), the labels being the model's task names.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got batch_size={batch_size!r}.")
    if reader is not None:
        check_reader(reader)
    overrides = {k: v for k, v in (read_overrides or {}).items() if v is not None}
    if run_dir.endswith(".keras") and not os.path.isdir(run_dir):
        if not data:
            raise ValueError(f"evaluating {run_dir} alone needs --data FILE.")
        options = read_options(DEFAULTS, on_bad_rows=on_bad_rows).replace(**overrides)
        specs, labels = files.saved_inputs(run_dir)  # labels: the model's task names
        reader = reader or DEFAULTS["reader"]
    else:
        if not os.path.exists(os.path.join(run_dir, files.MODEL_FILE)):
            raise FileNotFoundError(
                f"{run_dir} holds no trained model ({files.MODEL_FILE}); train it first "
                "(`rankmixer train --run-dir ...`)."
            )
        with open(os.path.join(run_dir, files.CONFIG_FILE)) as f:
            config = check_config(json.load(f))
        data = data or config["test"] or config["valid"]
        if not data:
            raise ValueError(
                f"{run_dir} was trained on synthetic data and has no test files; pass --data FILE."
            )
        named = config["features"] in ("frappe", "criteo", "census")
        options = read_options(config, load_specs(config)[1] if named else (), on_bad_rows)
        options = options.replace(shard_index=0, num_shards=1, **overrides)  # all of the files
        specs, labels = files.saved_inputs(run_dir)[0], config["labels"]
        reader = reader or config["reader"]
    # The data first, as `train` does: every row is checked before the (slow) model load, so
    # a bad row fails fast with the reader's DataError and files without a usable row are
    # refused. Only a model whose archive does not name its inputs is loaded first.
    checked = specs is not None and labels is not None
    if checked:
        check_data(data, specs, labels, options, reader)
    model, specs = files.load_run_model(run_dir)
    if labels is None:
        labels = list(model.output_names)
    if specs is None:
        raise ValueError(
            f"model {model.name!r} holds no feature specs and there is no {files.FEATURES_FILE}."
        )
    if not checked:
        check_data(data, specs, labels, options, reader)
    return _evaluate(model, specs, labels, data, batch_size, options, progress, reader)


def check_data(
    data: Sequence[str], specs: list, labels: Sequence[str], options, reader: str = "native"
) -> None:
    """Every row of the `--data` files checked (`check_files`, or `check_native_files` with
    the native reader): the reader's `DataError` for a bad row, and files without a usable
    row refused (`require_rows`)."""
    check_files = reader_functions(reader)[0]
    require_rows("data", list(data), check_files(data, specs, labels, options=options))


def _evaluate(model, specs, labels, data, batch_size, options, progress, reader) -> dict:
    from keras_rankmixer.training.metrics import evaluate_exact

    make_dataset = reader_functions(reader)[1]

    dataset = make_dataset(data, specs, labels, batch_size=batch_size, options=options)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        metrics = evaluate_exact(model, dataset, progress=progress)
    except Exception as e:
        raise_data_error(e, dataset)
        raise
    return {
        "data": list(data),
        "rows": dataset.report.rows_kept,
        **metrics,
        "data_report": dataset.report.to_dict(),
    }

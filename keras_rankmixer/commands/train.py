"""`rankmixer train`: train RankMixer or a baseline on files (or synthetic clicks) into a run dir.

Structure (so that flags and a distribution scope can be added without touching the rest):

- `add_arguments(parser)` declares the flags; `config_from_args(args)` merges a JSON config
  file (`--config`) with the flags given explicitly (flags win) over `DEFAULTS`;
- `build_and_train(config, scope=None)` does the work: data -> model (built inside `scope()`,
  e.g. a `tf.distribute` strategy scope or a `keras.distribution` context) -> fit -> run dir.

Running the same command again after an interruption resumes from the last completed epoch
(`runs.training_callbacks`: Keras `BackupAndRestore` in `<run_dir>/backup`). A finished run
(with `metrics.json`) is not retrained unless `--overwrite` is given. Models with `SparseMoE`
layers (`model_kwargs: {"moe": {...}}`) also log each layer's active ratio and lambda
(`moe/...` keys of history.json) and plot the per-token active ratio to `moe_active_ratio.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

#: Fig. 4 of the paper for SparseMoE models: active ratio per token over training.
MOE_PLOT_FILE = "moe_active_ratio.png"

#: Every configuration key and its default. `config.json` in the run dir holds the full dict.
DEFAULTS: dict[str, Any] = {
    # data
    "train": None,  # path(s)/glob(s); None -> synthetic clicks
    "valid": None,
    "test": None,
    "features": None,  # JSON file of specs, "frappe", "criteo", or None (synthetic specs)
    "labels": ["label"],
    "format": None,
    "column_names": None,
    "delimiter": None,
    "hash_columns": [],
    "ignore_columns": [],
    "on_bad_rows": "raise",
    "shuffle_chunks": 1,  # training rows are shuffled within windows of this many chunks
    "adapt_vocabulary": False,
    "synthetic_samples": 50_000,
    "shard_index": 0,
    "num_shards": 1,
    # model
    "model": "rankmixer",
    "preset": "tiny",
    "num_tokens": None,
    "token_dim": None,
    "num_layers": None,
    "hidden_ratio": None,
    "dropout": 0.0,
    "embedding_l2": 0.0,
    "model_kwargs": {},
    # training
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 4096,
    "epochs": 10,
    "patience": 2,
    "reduce_lr_on_plateau": False,
    "mixed_precision": False,
    "jit_compile": True,
    "seed": 0,
    "run_dir": None,
    "overwrite": False,
    "verbose": None,
}

_RANKMIXER_SIZE = ("num_tokens", "token_dim", "num_layers", "hidden_ratio")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on CSV/TSV/Parquet/TFRecord files (or synthetic data)",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """All `train` flags. Defaults are None (= "not given"); `DEFAULTS` fills the rest."""
    S = argparse.SUPPRESS
    p.add_argument("--config", default=None, help="JSON config file (keys as in DEFAULTS)")
    d = p.add_argument_group("data")
    d.add_argument("--train", nargs="+", default=S, help="training files / globs / dirs")
    d.add_argument("--valid", nargs="+", default=S, help="validation files")
    d.add_argument("--test", nargs="+", default=S, help="test files (evaluated at the end)")
    d.add_argument(
        "--features",
        default=S,
        help="feature specs: a JSON file (list of feature configs), 'frappe' or "
        "'criteo'; default: the synthetic generator's specs",
    )
    d.add_argument("--labels", nargs="+", default=S, help="label column(s), one per task")
    d.add_argument("--format", choices=["csv", "tsv", "parquet", "tfrecord"], default=S)
    d.add_argument(
        "--column-names",
        nargs="+",
        default=S,
        help="column names of header-less text files ('criteo' for the raw layout)",
    )
    d.add_argument("--delimiter", default=S)
    d.add_argument(
        "--hash-columns",
        nargs="+",
        default=S,
        help="columns of raw strings hashed to int64 ids in the reader",
    )
    d.add_argument("--ignore-columns", nargs="+", default=S)
    d.add_argument("--on-bad-rows", choices=["raise", "skip"], default=S)
    d.add_argument(
        "--shuffle-chunks",
        type=int,
        default=S,
        help="shuffle training rows across windows of this many 65,536-row chunks (memory!)",
    )
    d.add_argument(
        "--adapt-vocabulary",
        action="store_true",
        default=S,
        help="build categorical vocabularies from the training split",
    )
    d.add_argument("--synthetic-samples", type=int, default=S)
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default=S,
        help="rankmixer, dnn, dcnv2, or an ablation: no_token_mixing, shared_ffn, "
        "no_residual, no_layer_norm",
    )
    m.add_argument("--preset", default=S, help="RankMixer preset (tiny, small, ...)")
    m.add_argument("--num-tokens", type=int, default=S)
    m.add_argument("--token-dim", type=int, default=S)
    m.add_argument("--num-layers", type=int, default=S)
    m.add_argument("--hidden-ratio", type=float, default=S)
    m.add_argument("--dropout", type=float, default=S)
    m.add_argument("--embedding-l2", type=float, default=S)
    t = p.add_argument_group("training")
    t.add_argument("--optimizer", default=S)
    t.add_argument("--learning-rate", type=float, default=S)
    t.add_argument("--batch-size", type=int, default=S)
    t.add_argument("--epochs", type=int, default=S)
    t.add_argument(
        "--patience", type=int, default=S, help="early stopping patience on validation AUC (0: off)"
    )
    t.add_argument("--reduce-lr-on-plateau", action="store_true", default=S)
    t.add_argument(
        "--mixed-precision",
        action="store_true",
        default=S,
        help="mixed_bfloat16 compute (outputs stay float32)",
    )
    t.add_argument("--no-jit", dest="jit_compile", action="store_false", default=S)
    t.add_argument("--seed", type=int, default=S)
    t.add_argument("--run-dir", default=S, help="run directory (default runs/<model>)")
    t.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="retrain even if the run dir holds a finished run",
    )
    t.add_argument("--verbose", type=int, choices=[0, 1, 2], default=S)
    # Scale-out (issue 9): handled by keras_rankmixer.distribution.configure_training.
    g = p.add_argument_group("distribution (see docs/distributed.md)")
    g.add_argument("--distribution", choices=["data", "model"], default=None)
    g.add_argument("--mesh", default=None, help="BxM device mesh (batch x model), e.g. 2x4")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-host)")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)


def config_from_args(args: argparse.Namespace) -> dict:
    """DEFAULTS <- `--config` file <- flags given on the command line."""
    config = dict(DEFAULTS)
    if getattr(args, "config", None):
        from_file = read_json(args.config, "config")
        if not isinstance(from_file, dict):
            raise ValueError(f"{args.config}: a config file is a JSON object {{key: value}}.")
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{args.config}: unknown config key(s) {unknown}.")
        config.update(from_file)
    for key, value in vars(args).items():
        if key in DEFAULTS:
            config[key] = value
    return config


def check_config(config: dict) -> dict:
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}.")
    config = {**DEFAULTS, **config}
    for key in ("train", "valid", "test", "labels", "hash_columns", "ignore_columns"):
        if isinstance(config[key], str):
            config[key] = [config[key]]
    for key in ("batch_size", "epochs"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"`{key}` must be a positive int, got {key}={config[key]!r}.")
    if config["train"] and not config["features"]:
        raise ValueError(
            "`features` is required with `train` files (a JSON spec file, 'frappe' or 'criteo')."
        )
    if not config["train"]:
        config["labels"] = ["click"]  # the synthetic generator's task
    if config["run_dir"] is None:
        config["run_dir"] = os.path.join("runs", config["model"])
    if config["column_names"] == ["criteo"]:
        from keras_rankmixer.data import CRITEO_COLUMNS

        config["column_names"] = list(CRITEO_COLUMNS)
    return config


def load_specs(config: dict) -> tuple[list, list[str]]:
    """Feature specs and extra hash columns named by `config["features"]`."""
    from keras_rankmixer.data import criteo_features, frappe_features
    from keras_rankmixer.features import feature_from_config

    spec = config["features"]
    if spec == "frappe":
        return frappe_features(), []
    if spec == "criteo":
        return criteo_features()
    data = read_json(spec, "feature spec")
    if isinstance(data, dict):
        data = data.get("features", data)
    if not isinstance(data, list):
        raise ValueError(f"{spec}: expected a JSON list of feature specs.")
    return [feature_from_config(c) for c in data], []


def read_json(path: str, what: str) -> Any:
    """`json.load` of a user's file, with an error naming the file and the position."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
            ) from None


def load_data(config: dict) -> dict:
    """Specs and splits: {"specs", "train", "valid", "test", "report"}; arrays or datasets."""
    from keras_rankmixer.data import adapt_vocabularies, make_click_data, make_dataset, read_arrays
    from keras_rankmixer.data.readers import check_files
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
    hash_columns = sorted(set(hash_columns) | set(config["hash_columns"]))
    reader = dict(
        format=config["format"],
        column_names=config["column_names"],
        delimiter=config["delimiter"],
        hash_columns=hash_columns,
        ignore_columns=config["ignore_columns"],
        on_bad_rows=config["on_bad_rows"],
    )
    needs_stats = config["adapt_vocabulary"] or any(f.kind == "numeric" for f in specs)
    checked: dict[str, Any] = {}
    if needs_stats:
        # Statistics from ALL training files, on every process: with per-shard statistics the
        # processes of a multi-host run would build different models (normalisation, vocab).
        sample = read_arrays(config["train"], specs, config["labels"], **reader)
        _require_rows("train", config["train"], sample.report)
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
            shard = split == "train"
            report = check_files(
                config[split],
                specs,
                config["labels"],
                shard_index=config["shard_index"] if shard else 0,
                num_shards=config["num_shards"] if shard else 1,
                **reader,
            )
            _require_rows(split, config[split], report)
            checked[split] = report
    out = {"specs": specs, "rows": {k: v.rows_kept for k, v in checked.items()}}
    for split in ("train", "valid", "test"):
        if config[split]:
            out[split] = make_dataset(
                config[split],
                specs,
                config["labels"],
                batch_size=config["batch_size"],
                shuffle=split == "train",
                shuffle_chunks=config["shuffle_chunks"] if split == "train" else 1,
                seed=config["seed"],
                shard_index=config["shard_index"] if split == "train" else 0,
                num_shards=config["num_shards"] if split == "train" else 1,
                **reader,
            )
    return out


def _require_rows(split: str, files: list[str], report) -> None:
    """A split without one usable row is an error (training on nothing, AUC of nothing)."""
    if report.rows_kept == 0:
        from keras_rankmixer.data import DataError

        skipped = sum(report.skipped.values())
        raise DataError(
            f"--{split} {', '.join(files)}: no data rows to use ({report.rows_read} read"
            + (f", {skipped} skipped as bad" if skipped else "")
            + "); a header-only or empty split cannot be "
            + ("trained on." if split == "train" else "evaluated.")
        )


def _warn_few_steps(config: dict, rows: int | None) -> None:
    """Warn when the batch is so large that an epoch is a handful of steps."""
    if not rows:
        return
    steps = -(-rows // config["batch_size"])
    if steps < 10:
        suggest = max(16, 1 << max(4, (rows // 20).bit_length() - 1))
        print(
            f"[train] warning: --batch-size {config['batch_size']} gives {steps} step(s) per "
            f"epoch on {rows:,} training rows, too few to learn from; try --batch-size "
            f"{suggest}.",
            file=sys.stderr,
        )


def _config_changes(saved: dict, config: dict, ignore: tuple[str, ...]) -> list[str]:
    return sorted(k for k in DEFAULTS if k not in ignore and saved.get(k) != config[k])


def build_model(config: dict, specs: list):
    """The model named by `config["model"]` (RankMixer size from preset + explicit flags)."""
    from keras_rankmixer.models import get_preset
    from keras_rankmixer.models.baselines import VARIANTS, build_model, set_embedding_l2

    kwargs = dict(config["model_kwargs"])
    if config["model"] in VARIANTS:
        size = get_preset(config["preset"])
        size.update({k: config[k] for k in _RANKMIXER_SIZE if config[k] is not None})
        if any(config[k] is not None for k in ("token_dim", "hidden_ratio")):
            size.pop("hidden_dim", None)  # a preset's explicit width would override the flags
        kwargs = {**size, "dropout": config["dropout"], **kwargs}
    elif config["dropout"]:
        kwargs.setdefault("dropout", config["dropout"])
    if config["mixed_precision"]:
        kwargs["dtype"] = "mixed_bfloat16"
    model = build_model(config["model"], specs, tasks=config["labels"], **kwargs)
    return set_embedding_l2(model, config["embedding_l2"])


def build_and_train(config: dict, scope=None, extra_callbacks=()) -> dict:
    """Train per `config` into `config["run_dir"]`; returns the final metrics dict.

    Args:
        config: A dict with the keys of `DEFAULTS` (missing keys take the defaults).
        scope: Optional callable returning a context manager; model construction and
            compilation run inside it (e.g. `strategy.scope`).
        extra_callbacks: More Keras callbacks, run after the run-dir ones.
    """
    import warnings

    import keras

    # Streaming datasets have no known length; Keras warns at every epoch end otherwise.
    warnings.filterwarnings("ignore", message=".*ran out of data.*")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")

    from keras_rankmixer import runs
    from keras_rankmixer.features import feature_to_config
    from keras_rankmixer.flops import count_model
    from keras_rankmixer.moe_callbacks import MoEMonitor, find_moe_layers, plot_active_ratio

    config = check_config(config)
    run_dir = config["run_dir"]
    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    config_path = os.path.join(run_dir, runs.CONFIG_FILE)
    backup = os.path.join(run_dir, runs.BACKUP_DIR)
    if os.path.exists(metrics_path) and not config["overwrite"]:
        changed = []
        if os.path.exists(config_path):
            with open(config_path) as f:
                changed = _config_changes(json.load(f), config, ("verbose", "overwrite"))
        if changed:
            raise ValueError(
                f"{run_dir} holds a finished run with a different config ({changed}); "
                "use another --run-dir, or --overwrite to retrain."
            )
        print(
            f"[train] {run_dir} holds a finished run ({metrics_path}); pass --overwrite to retrain."
        )
        with open(metrics_path) as f:
            return json.load(f)
    resuming = os.path.isdir(backup) and not config["overwrite"]
    if os.path.exists(config_path) and resuming:
        with open(config_path) as f:
            saved = json.load(f)
        changed = _config_changes(saved, config, ("verbose", "overwrite", "epochs"))
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
    _warn_few_steps(config, data["rows"].get("train"))
    with scope() if scope is not None else contextlib.nullcontext():
        model = build_model(config, specs)
        optimizer = keras.optimizers.get(
            {
                "class_name": config["optimizer"],
                "config": {"learning_rate": config["learning_rate"]},
            }
        )
        model.compile(
            optimizer=optimizer,
            loss={t: "binary_crossentropy" for t in config["labels"]},
            metrics={t: [keras.metrics.AUC(name="auc")] for t in config["labels"]},
            jit_compile=config["jit_compile"],
        )
    if config["overwrite"]:
        import shutil

        for name in (runs.BACKUP_DIR, runs.HISTORY_FILE, runs.METRICS_FILE, runs.BEST_WEIGHTS_FILE):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)
    runs.write_json(config_path, config)
    runs.write_json(
        os.path.join(run_dir, runs.FEATURES_FILE), [feature_to_config(f) for f in specs]
    )
    stats = count_model(model)
    print(
        f"[train] {config['model']}: {stats['params']:,} params ({stats['dense_params']:,} "
        f"dense), {stats['flops_per_sample']:,} FLOPs/sample; run dir {run_dir}"
        + (" (resuming)" if resuming else "")
    )
    # SparseMoE models: active ratio and lambda per layer into the epoch logs (so into
    # history.json), placed before the run-dir callbacks that write the logs out.
    moe_layers = find_moe_layers(model)
    moe_monitor = MoEMonitor(every_n_batches=10) if moe_layers else None
    callbacks = (
        ([moe_monitor] if moe_monitor else [])
        + runs.training_callbacks(
            run_dir,
            data.get("valid"),
            patience=config["patience"] or None,
            reduce_lr_on_plateau=config["reduce_lr_on_plateau"],
        )
        + list(extra_callbacks)
    )
    verbose = config["verbose"]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    train = data["train"]
    fit_kwargs: dict[str, Any] = {}
    if isinstance(train, tuple):
        fit_kwargs = {
            "x": train[0],
            "y": train[1],
            "batch_size": config["batch_size"],
            "shuffle": True,
        }
    else:
        fit_kwargs = {"x": train}
    start = time.time()
    try:
        model.fit(epochs=config["epochs"], callbacks=callbacks, verbose=verbose, **fit_kwargs)
    except Exception as e:
        raise_data_error(e, data.get("train"), data.get("valid"))
        raise
    seconds = time.time() - start

    history = runs.load_history(os.path.join(run_dir, runs.HISTORY_FILE))
    model.save(os.path.join(run_dir, runs.MODEL_FILE))
    if moe_monitor is not None and moe_monitor.records:
        target = next(iter(moe_layers.values())).budget_ratio()
        plot_active_ratio(
            moe_monitor, os.path.join(run_dir, MOE_PLOT_FILE), target=target, title=config["model"]
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
    best = runs.best_epoch(history)
    if best is not None:
        metrics["best_epoch"] = best["epoch"] + 1
        metrics["valid_auc"] = best["val_auc_exact"]
        metrics["valid_logloss"] = best["val_logloss_exact"]
    for split in ("test",):
        if data.get(split) is not None:
            try:
                exact = runs.evaluate_exact(model, data[split])
            except Exception as e:
                raise_data_error(e, data[split])
                raise
            for k, v in exact.items():
                metrics[f"{split}_{k}"] = v
    if "oracle" in data:
        for split, part in data["oracle"].items():
            metrics[f"{split}_oracle_auc"] = runs.roc_auc(
                part.labels["click"], part.probabilities["click"]
            )
    for split in ("train", "valid", "test"):
        report = getattr(data.get(split), "report", None)
        if report is not None:
            metrics[f"{split}_data"] = report.to_dict()  # with the first 20 examples
    metrics["model_path"] = os.path.join(run_dir, runs.MODEL_FILE)
    runs.write_json(metrics_path, metrics)
    if history:
        runs.plot_history(history, os.path.join(run_dir, runs.PLOT_FILE))
    shown = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in metrics.items()
        if not k.endswith("_data")
    }
    print(f"[train] done: {json.dumps(shown)}")
    return metrics


def raise_data_error(error: BaseException, *datasets) -> None:
    """Re-raise the reader's `DataError` that tf.data wrapped into `error`, if there is one.

    A `make_dataset` generator that hits bad data raises inside tf.data's thread; Keras then
    sees an `InvalidArgumentError` ending in `[[{{node PyFunc}}]]`. The dataset keeps the
    original (`dataset.errors`): that is what the user needs to read.
    """
    for ds in datasets:
        errors = getattr(ds, "errors", None)
        if errors:
            raise errors[0] from None


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer.distribution import configure_training

    config, scope = configure_training(args, config_from_args(args))
    build_and_train(config, scope=scope)
    return 0

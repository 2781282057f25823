"""`rankmixer evaluate`: exact AUC and logloss of a run's model on files (with a progress bar).

Reads `<run_dir>/model.keras`, `<run_dir>/features.json` and the reader options of
`<run_dir>/config.json` (format, column names, hashed / ignored columns, labels), so the data
is parsed exactly as in training. Writes `<run_dir>/evaluation.json` (or `--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run's model on data files (exact AUC / logloss)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--run-dir", required=True, help="a run directory of `rankmixer train`")
    parser.add_argument(
        "--data", nargs="+", default=None, help="files to evaluate (default: the run's test files)"
    )
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--on-bad-rows", choices=["raise", "skip"], default=None)
    parser.add_argument(
        "--output", default=None, help="metrics JSON (default run_dir/evaluation.json)"
    )
    parser.set_defaults(func=run)


def evaluate_run(
    run_dir: str,
    data: list[str] | None = None,
    batch_size: int = 8192,
    on_bad_rows: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Evaluate `run_dir/model.keras` on `data` files; returns the metrics dict."""
    import keras
    import numpy as np
    from tqdm import tqdm

    from keras_rankmixer import runs
    from keras_rankmixer.commands.train import (
        _require_rows,
        check_config,
        load_specs,
        raise_data_error,
    )
    from keras_rankmixer.data import make_dataset
    from keras_rankmixer.data.readers import check_files
    from keras_rankmixer.features import feature_from_config

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got batch_size={batch_size!r}.")
    if not os.path.exists(os.path.join(run_dir, runs.MODEL_FILE)):
        raise FileNotFoundError(
            f"{run_dir} holds no trained model ({runs.MODEL_FILE}); train it first "
            "(`rankmixer train --run-dir ...`)."
        )
    with open(os.path.join(run_dir, runs.CONFIG_FILE)) as f:
        config = check_config(json.load(f))
    data = data or config["test"] or config["valid"]
    if not data:
        raise ValueError(
            f"{run_dir} was trained on synthetic data and has no test files; pass --data FILE."
        )
    with open(os.path.join(run_dir, runs.FEATURES_FILE)) as f:
        specs = [feature_from_config(c) for c in json.load(f)]
    hash_columns = set(config["hash_columns"])
    if config["features"] in ("frappe", "criteo"):
        hash_columns |= set(load_specs(config)[1])
    reader = dict(
        format=config["format"],
        column_names=config["column_names"],
        delimiter=config["delimiter"],
        hash_columns=sorted(hash_columns),
        ignore_columns=config["ignore_columns"],
        on_bad_rows=on_bad_rows or config["on_bad_rows"],
    )
    # Every row is checked before the model is loaded: a bad row fails fast with the
    # reader's DataError, and files without a usable row are refused.
    _require_rows("data", list(data), check_files(data, specs, config["labels"], **reader))
    dataset = make_dataset(data, specs, config["labels"], batch_size=batch_size, **reader)
    model = keras.models.load_model(os.path.join(run_dir, runs.MODEL_FILE))
    if progress is None:
        progress = sys.stderr.isatty()
    labels: dict[str, list] = {}
    preds: dict[str, list] = {}
    bar = tqdm(desc="evaluate", unit=" rows", disable=not progress)
    try:
        for x, y in dataset:
            p = model.predict_on_batch(x)
            for task in y:
                labels.setdefault(task, []).append(np.asarray(y[task]).reshape(-1))
                preds.setdefault(task, []).append(np.asarray(p[task]).reshape(-1))
            bar.update(int(next(iter(y.values())).shape[0]))
    except Exception as e:
        raise_data_error(e, dataset)
        raise
    finally:
        bar.close()
    metrics: dict = {"data": list(data), "rows": dataset.report.rows_kept}
    for task in labels:
        yl, yp = np.concatenate(labels[task]), np.concatenate(preds[task])
        prefix = "" if len(labels) == 1 else f"{task}_"
        metrics[f"{prefix}auc"] = runs.roc_auc(yl, yp)
        metrics[f"{prefix}logloss"] = runs.logloss(yl, yp)
    metrics["data_report"] = dataset.report.to_dict()
    return metrics


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer import runs

    metrics = evaluate_run(args.run_dir, args.data, args.batch_size, args.on_bad_rows)
    path = args.output or os.path.join(args.run_dir, "evaluation.json")
    runs.write_json(path, metrics)
    shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
    shown.pop("data_report")
    print(f"[evaluate] {json.dumps(shown)}")
    print(f"[evaluate] {metrics['data_report']['rows_read']:,} rows read; written to {path}")
    return 0

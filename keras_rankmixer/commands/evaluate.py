"""`rankmixer evaluate`: exact AUC and logloss of a run's model on files (with a progress bar).

Reads `<run_dir>/model.keras` (which holds the feature specs; an old run's plain
functional model takes them from `features.json`) and the reader options of
`<run_dir>/config.json` (format, column names, hashed / ignored columns, labels), so the data
is parsed exactly as in training. Writes `<run_dir>/evaluation.json` (or `--output`).
`--model FILE.keras --data FILES` evaluates a model file alone (default reader options).
`--reader` picks the reader (default: the run's, else `native`). The work is
`keras_rankmixer.training.runner.evaluate_run`.
"""

from __future__ import annotations

import argparse
import json
import os

from keras_rankmixer.commands import (
    add_import_argument,
    add_read_arguments,
    add_reader_argument,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run's model on data files (exact AUC / logloss)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--run-dir",
        "--model",
        dest="run_dir",
        required=True,
        help="a run directory of `rankmixer train`, or a .keras file alone (then --data is "
        "required; default reader options, the labels are the model's task names)",
    )
    add_import_argument(parser, note=" (a run directory's config.json lists its own)")
    parser.add_argument(
        "--data", nargs="+", default=None, help="files to evaluate (default: the run's test files)"
    )
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--on-bad-rows", choices=["raise", "skip"], default=None)
    add_read_arguments(parser)  # replace the run's (or the default) reader options
    add_reader_argument(parser, note=" (default: the run's config.json, else 'native')")
    parser.add_argument(
        "--output", default=None, help="metrics JSON (default run_dir/evaluation.json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer.training.run_dir import write_json
    from keras_rankmixer.training.runner import evaluate_run, import_modules

    import_modules(args.imports)
    overrides = {k: getattr(args, k) for k in ("sequence_delimiter", "compression", "chunk_rows")}
    metrics = evaluate_run(
        args.run_dir,
        args.data,
        args.batch_size,
        args.on_bad_rows,
        read_overrides=overrides,
        reader=args.reader,
    )
    folder = args.run_dir if os.path.isdir(args.run_dir) else os.path.dirname(args.run_dir)
    path = args.output or os.path.join(folder, "evaluation.json")
    write_json(path, metrics)
    shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
    shown.pop("data_report")
    print(f"[evaluate] {json.dumps(shown)}")
    print(f"[evaluate] {metrics['data_report']['rows_read']:,} rows read; written to {path}")
    return 0

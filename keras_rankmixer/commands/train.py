"""`rankmixer train`: train a model on files (or synthetic clicks) into a run directory.

This module is the command line only: `add_arguments(parser)` declares the flags,
`config_from_args(args)` merges a JSON config file (`--config`) with the flags given
explicitly (flags win) over `keras_rankmixer.training.runner.DEFAULTS`, and `run` applies
the distribution flags (`commands._distribution`) and calls
`keras_rankmixer.training.runner.build_and_train`, printing its messages as `[train] ...`.
The runner's docstring says what a run does (models by name, resume, checks, SparseMoE).
"""

from __future__ import annotations

import argparse
import sys

from keras_rankmixer.commands import (
    add_import_argument,
    add_read_arguments,
    add_reader_argument,
)


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
        help="feature specs: a JSON file (list of feature configs), 'frappe', 'criteo' or "
        "'census' (files from keras_rankmixer.data.prepare_census); default: the synthetic "
        "generator's specs",
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
    add_read_arguments(d, default=S)
    add_reader_argument(d, default=S)
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
        help="rankmixer, dnn, dcnv2, a RankMixer ablation (no_token_mixing, shared_ffn, "
        "no_residual, no_layer_norm) or any registered backbone (tokenmixer_large, yours "
        "with --import)",
    )
    m.add_argument(
        "--preset",
        default=S,
        help="preset of the model (rankmixer: rankmixer_base, tiny, small, ...; default: "
        "rankmixer_base, the validated T=8 D=64 L=1 k=4 with flatten pooling, towers (400, 400, "
        "400) + batch norm + dropout 0.2 and embedding L2 0.01; a backbone's smallest preset)",
    )
    m.add_argument(
        "--num-tokens",
        type=int,
        default=S,
        help="T (default: the preset's; tokenmixer_large_base: feature groups + 1)",
    )
    m.add_argument("--token-dim", type=int, default=S, help="D (default: the preset's)")
    m.add_argument("--num-layers", type=int, default=S, help="L (default: the preset's)")
    m.add_argument("--hidden-ratio", type=float, default=S, help="k (default: the preset's)")
    m.add_argument(
        "--dropout",
        type=float,
        default=S,
        help="dropout of the blocks (RankMixer) or of the MLP (dnn, dcnv2; default 0.2)",
    )
    m.add_argument(
        "--embedding-l2",
        type=float,
        default=S,
        help="L2 penalty on the embedding tables (default: 0.01 for rankmixer_base, "
        "tokenmixer_large_base, dnn and dcnv2; 0 otherwise)",
    )
    add_import_argument(m, default=S)
    t = p.add_argument_group("training")
    t.add_argument("--optimizer", default=S)
    t.add_argument("--learning-rate", type=float, default=S)
    t.add_argument("--batch-size", type=int, default=S)
    t.add_argument(
        "--epochs",
        type=int,
        default=S,
        help="maximum epochs (default 30 with a validation split, where early stopping on "
        "its AUC ends training first; 10 without one)",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=S,
        help="early stopping patience on validation AUC (default 2; 0: off)",
    )
    t.add_argument(
        "--reduce-lr-on-plateau",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="divide the learning rate by 10 when validation AUC stalls (default: on)",
    )
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
    # Scale-out (issue 9): handled by commands._distribution.configure_training.
    g = p.add_argument_group("distribution (see docs/distributed.md)")
    g.add_argument("--distribution", choices=["data", "model"], default=None)
    g.add_argument("--mesh", default=None, help="BxM device mesh (batch x model), e.g. 2x4")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-host)")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)


def merge_config(args: argparse.Namespace) -> tuple[dict, set[str]]:
    """DEFAULTS <- `--config` file <- flags given on the command line; also the set of keys
    given explicitly (in the file or as flags)."""
    from keras_rankmixer.training.run_dir import read_json
    from keras_rankmixer.training.runner import DEFAULTS

    config = dict(DEFAULTS)
    given: set[str] = set()
    if getattr(args, "config", None):
        from_file = read_json(args.config, "config")
        if not isinstance(from_file, dict):
            raise ValueError(f"{args.config}: a config file is a JSON object {{key: value}}.")
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{args.config}: unknown config key(s) {unknown}.")
        config.update(from_file)
        given |= set(from_file)
    for key, value in vars(args).items():
        if key in DEFAULTS:
            config[key] = value
            given.add(key)
    return config, given


def config_from_args(args: argparse.Namespace) -> dict:
    """DEFAULTS <- `--config` file <- flags given on the command line."""
    return merge_config(args)[0]


def printer(command: str):
    """`log(message, warning=False)` printing `[command] message` (warnings on stderr)."""

    def log(message: str, warning: bool = False) -> None:
        if warning:
            print(f"[{command}] warning: {message}", file=sys.stderr)
        else:
            print(f"[{command}] {message}")

    return log


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer.commands._distribution import configure_training
    from keras_rankmixer.training.runner import build_and_train, check_config

    config, given = merge_config(args)
    config = check_config(config)  # user modules imported and the preset resolved first
    config, scope = configure_training(args, config, jit_compile_given="jit_compile" in given)
    build_and_train(config, scope=scope, log=printer("train"))
    return 0

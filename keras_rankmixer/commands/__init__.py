"""Sub-commands of the `rankmixer` console script.

Every module in this package with a `register(subparsers)` function adds one or more
sub-commands; `keras_rankmixer.cli` discovers them, so a new command is a new module here.
Each `register` adds a parser and sets `func=<callable taking the parsed args>` on it; imports
of heavy modules (TensorFlow, Keras) belong inside the callable, so `rankmixer --help` is fast.
Modules whose name starts with `_` are helpers of the commands (`_distribution`: the
distribution flags), not commands.

Only argument parsing and printing live here: the work is done by the library
(`keras_rankmixer.training.runner` for train / evaluate, `keras_rankmixer.export`,
`keras_rankmixer.serving`), which never sees an `argparse.Namespace`.
"""

from typing import Any

#: What `--import` does, for every command that loads or builds models.
IMPORT_HELP = (
    "modules (dotted names or .py files) to import first, e.g. ones that register a backbone "
    "with @register_backbone"
)


def add_import_argument(parser: Any, default: Any = (), note: str = "") -> None:
    """The `--import MODULE ...` flag (`args.imports`; see `training.runner.import_modules`)."""
    parser.add_argument(
        "--import",
        dest="imports",
        nargs="+",
        default=default,
        metavar="MODULE",
        help=IMPORT_HELP + note,
    )


def add_read_arguments(parser: Any, default: Any = None) -> None:
    """The reader flags beyond the format and layout: `--sequence-delimiter`,
    `--compression`, `--chunk-rows` (`ReadOptions` fields of the same names)."""
    parser.add_argument(
        "--sequence-delimiter",
        default=default,
        help="separator of the ids inside a sequence cell of text files (default '|')",
    )
    parser.add_argument(
        "--compression",
        type=str.upper,
        choices=["GZIP", "ZLIB"],
        default=default,
        help="compression of TFRecord files (default none; text files ending in .gz are "
        "read as gzip by their name)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=default,
        help="rows the readers convert at a time (default 65536; less memory when smaller)",
    )


#: What `--reader` does, for the commands that read data files (train, evaluate).
READER_HELP = (
    "which reader checks and streams the data files: 'native' (the default) parses CSV/TSV and "
    "TFRecord with TensorFlow ops in a parallel tf.data map (keras_rankmixer.data.native, "
    "faster: docs/performance.md), 'python' converts chunks with NumPy/pandas in a Python generator "
    "(make_dataset, the reader before #20); same values, row counts and errors either way, and "
    "Parquet always goes through the Python reader"
)


def add_reader_argument(parser: Any, default: Any = None, note: str = "") -> None:
    """The `--reader {native,python}` flag (`args.reader`, the config key `reader`; see
    `training.runner.reader_functions`)."""
    parser.add_argument(
        "--reader", choices=["native", "python"], default=default, help=READER_HELP + note
    )

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

"""The `rankmixer` console script: thin, it discovers `keras_rankmixer.commands.*`.

Errors a user can cause (bad data, bad flags or config, missing files, bad requests) print
one line on stderr, `[<command>] error: <message>`, and exit with status 2; `--debug` shows
the traceback instead. Anything else is a bug: one line naming the exception type, status 1.

After an error the console script ends the process with `os._exit` (stdout and stderr
flushed first) rather than through interpreter shutdown: a `tf.data` pipeline whose Python
generator raised can leave a prefetch thread that interpreter shutdown waits on forever
(issue #19: a training job that hangs on bad data blocks its scheduler). Called as a
function, `main(argv)` returns the status and leaves the process alone.

Nothing heavy is imported here or in the commands' `register()`: TensorFlow and Keras are
imported by a command when it runs, so `--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback

import keras_rankmixer
from keras_rankmixer import commands

#: Exit status of an error the user can fix (argparse uses 2 for bad arguments too).
USER_ERROR = 2
#: Exit status of an unexpected error (a bug): the message names the exception type.
INTERNAL_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankmixer", description="Train, evaluate, export and serve RankMixer models."
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # helpers of the commands (e.g. `_distribution`)
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    for command in sub.choices.values():  # `rankmixer train ... --debug` works too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story: bad input, not a bug."""
    types: list[type[BaseException]] = [ValueError, OSError]  # DataError, FeatureError, ...
    serving = sys.modules.get("keras_rankmixer.serving")
    if serving is not None:
        types.append(serving.ServingError)
    return tuple(types)


def _one_line(error: BaseException) -> str:
    text = f"not valid JSON: {error}" if isinstance(error, json.JSONDecodeError) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status (errors reported on stderr)."""
    name = args.command
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"[{name}] interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if getattr(args, "debug", False):
            traceback.print_exc()
        user = isinstance(error, _user_error_types())
        message = _one_line(error)
        if not user:
            message = f"{type(error).__name__}: {message}"
        hint = "" if getattr(args, "debug", False) else " (--debug shows the traceback)"
        print(f"[{name}] error: {message}{hint if not user else ''}", file=sys.stderr)
        return USER_ERROR if user else INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """The console script (`argv=None`: `sys.argv`, process ends with `os._exit` after an
    error) or a call from Python (`argv` given: returns the exit status)."""
    args = build_parser().parse_args(argv)
    # The console script's process imports the package lazily (`--help` and argument errors
    # need no TensorFlow); a command that runs gets the whole API, every layer registered.
    keras_rankmixer.load_all()
    status = run_command(args)
    if argv is None and status != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())

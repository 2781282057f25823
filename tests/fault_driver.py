"""Run many `rankmixer` command lines in one process (TensorFlow is imported once).

Used by the fault suites (`tests/test_bad_input.py`, `tests/test_bad_requests.py`): a case
is `{"id", "argv", "limit_s"}`; for each case this records the exit status `cli.main(argv)`
returned (or argparse's `SystemExit` code), what the command printed on stdout and stderr
(Python-level writes), and the seconds it took. A case running past its `limit_s` is stopped
by SIGALRM and recorded with status "timeout" (the suite then fails it). The process leaves
with `os._exit`, so nothing can hang at interpreter shutdown either.

Usage: python tests/fault_driver.py CASES.json RESULTS.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time


class CaseTimeout(BaseException):
    """Not an `Exception`: the CLI's error handler must not turn it into an exit status."""


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(case: dict) -> dict:
    from keras_rankmixer import cli

    out, err = io.StringIO(), io.StringIO()
    start = time.time()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(case.get("limit_s", 60)))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(case["argv"])
            except SystemExit as e:  # argparse
                status = e.code if isinstance(e.code, int) else 2
    except CaseTimeout:
        status = "timeout"
    finally:
        signal.alarm(0)
    return {
        "id": case["id"],
        "status": status,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "seconds": round(time.time() - start, 2),
    }


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    with open(cases_path) as f:
        cases = json.load(f)
    results = []
    try:
        for case in cases:
            results.append(run_case(case))
            with open(results_path, "w") as f:  # written after every case: partial results
                json.dump(results, f, indent=1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()

"""Run many `rankmixer` command lines in one process (TensorFlow is imported once).

Used by the fault suites (`tests/test_bad_input.py`, `tests/test_bad_requests.py`): a case
is `{"id", "argv", "limit_s"}`; for each case this records the exit status `cli.main(argv)`
returned (or argparse's `SystemExit` code), what the command printed on stdout and stderr
(Python-level writes), and the seconds it took. A case running past its `limit_s` is stopped
by SIGALRM and recorded with status "timeout" (the suite then fails it). The process leaves
with `os._exit`, so nothing can hang at interpreter shutdown either.

Usage: python tests/fault_driver.py CASES.json RESULTS.json (or, from a test,
`run_in_subprocess(directory, table, env, slack_s)`)
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


def run_in_subprocess(directory: str, table: list[dict], env: dict, slack_s: int) -> dict:
    """Run the cases of `table` with this script in a fresh Python (cwd `directory`), within
    `slack_s` seconds more than the cases' limits; `{id: result}`."""
    import subprocess

    cases_path = os.path.join(directory, "cases.json")
    results_path = os.path.join(directory, "results.json")
    with open(cases_path, "w") as f:
        json.dump(table, f)
    subprocess.run(
        [sys.executable, os.path.abspath(__file__), cases_path, results_path],
        env=env,
        cwd=directory,
        timeout=slack_s + sum(c["limit_s"] for c in table),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    with open(results_path) as f:
        return {r["id"]: r for r in json.load(f)}


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

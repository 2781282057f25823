"""The bad-input fault suite of the data path (issue #19), as a table.

Every row is one command line a user could type, with bad data, flags or files, and what
must happen: the exit status, the one line on stderr (`[command] error: ...`; argparse's own
usage errors end in `rankmixer <command>: error: ...`), a time limit, and nothing written
that looks like a finished run (no `metrics.json`, no `model.keras`; for a data error, no run
directory at all). The table is run through the CLI in one subprocess
(`tests/fault_driver.py`: TensorFlow imported once, SIGALRM per case); the tests at the end
run real `rankmixer` processes: a data error late in a streamed file, under CPU load, must
exit 2 within its limit (it once hung at interpreter shutdown), and `--help` must not import
TensorFlow. The same table is in docs/your_data.md ("Bad input: what happens").
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from fault_driver import run_in_subprocess
from helpers import COLUMNS, FEATURES

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY = "--num-tokens 2 --token-dim 8 --num-layers 1 --hidden-ratio 2 --batch-size 16".split()
TINY += "--epochs 1 --patience 0 --no-jit --verbose 0".split()


def rows(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        hist = "|".join(map(str, rng.integers(0, 30, rng.integers(0, 7))))
        city = rng.choice(["a", "b", "c", ""])
        out.append(f"{rng.integers(0, 2)},{rng.integers(0, 20)},{city},{hist},{rng.normal():.3f}\n")
    return "".join(out)


def write_files(d: str) -> None:
    good = COLUMNS + "\n" + rows(200, 0)
    files = {
        "train.csv": good,
        "valid.csv": COLUMNS + "\n" + rows(60, 1),
        "header.csv": COLUMNS + "\n",
        "empty.csv": "",
        "short.csv": COLUMNS + "\n1,3,a,1|2,0.5\n0,4,b,3\n1,5,a,,1.0\n",
        "extra.csv": COLUMNS + "\n1,3,a,1|2,0.5\n0,4,b,3,0.1,9\n",
        "unknown.csv": COLUMNS + ",extra\n1,3,a,1|2,0.5,x\n",
        "nocol.csv": "label,user,city,hist\n1,3,a,1|2\n",
        "label2.csv": COLUMNS + "\n1,3,a,1|2,0.5\n2,4,b,3,0.1\n",
        "nanlabel.csv": COLUMNS + "\n1,3,a,1|2,0.5\nnan,4,b,3,0.1\n",
        "badid.csv": COLUMNS + "\n1,3,a,1|2,0.5\n0,abc,b,3,0.1\n",
        "fracid.csv": COLUMNS + "\n1,3.5,a,1|2,0.5\n",
        "allbad.csv": COLUMNS + "\n2,3,a,1|2,0.5\n5,4,b,3,0.1\n",
        # a bad row at the very end of a validation file: must fail before training
        "valid_late.csv": COLUMNS + "\n" + rows(59, 2) + "3,1,a,1,0.2\n",
        "features.json": json.dumps(FEATURES),
        "typo.json": json.dumps([dict(FEATURES[0], vocab_size=20)] + FEATURES[1:]),
        "kind.json": json.dumps([dict(FEATURES[0], kind="categorial")] + FEATURES[1:]),
        "broken.json": '[{"kind": "categorical", "name": "user",',
        "badkey_config.json": json.dumps({"epoch": 3}),
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    synthetic = os.path.join(d, "runs", "synthetic")  # what `rankmixer train` leaves, minus
    os.makedirs(synthetic)  # the training: a synthetic run has no files to evaluate on
    with open(os.path.join(synthetic, "config.json"), "w") as f:
        json.dump({"train": None, "run_dir": synthetic}, f)
    open(os.path.join(synthetic, "model.keras"), "w").close()
    # a run whose model.keras cannot be loaded: evaluate must report bad data before it
    # tries (the specs are in features.json, as `rankmixer train` writes them)
    unloadable = os.path.join(d, "runs", "unloadable")
    os.makedirs(unloadable)
    config = {"train": [os.path.join(d, "train.csv")], "run_dir": unloadable}
    with open(os.path.join(unloadable, "config.json"), "w") as f:
        json.dump({**config, "features": os.path.join(d, "features.json")}, f)
    with open(os.path.join(unloadable, "features.json"), "w") as f:
        json.dump(FEATURES, f)
    with open(os.path.join(unloadable, "model.keras"), "w") as f:
        f.write("not a Keras archive")


@dataclasses.dataclass(frozen=True)
class Case:
    """`argv` and `stderr` use `{d}` for the data directory, `{r}` for the case's run dir.

    `stderr` is the exact text on stderr (one line); ending in "..." it is a prefix.
    `finished`: the case runs against the finished run `runs/ok` (it must stay intact).
    """

    id: str
    argv: str
    status: int
    stderr: str
    limit_s: float = 30
    stdout: str = ""  # a substring expected on stdout
    finished: bool = False


def train(files: str, *more: str) -> str:
    return f"train {files} --features {{d}}/features.json --run-dir {{r}} {' '.join(TINY + list(more))}"


def bad_train_file(case: str, file: str, error: str) -> Case:
    """Training on `{d}/<file>` fails with exit 2 and `[train] error: {d}/<file><error>`."""
    return Case(case, train(f"--train {{d}}/{file}"), 2, f"[train] error: {{d}}/{file}{error}")


NO_ROWS = "no data rows to use"
MALFORMED = (
    "malformed row: expected 5 fields, saw {} (columns: ['label', 'user', 'city', 'hist', "
    "'price'])."
)
LABEL = "label must be 0 or 1 (value '{}')."
ID = "not an integer id (value '{}')."
CASES = [
    # ---- data errors: file, line, column; fail before anything is written
    Case("header_only_train", train("--train {d}/header.csv"), 2,
         f"[train] error: --train {{d}}/header.csv: {NO_ROWS} (0 read); a header-only or empty "
         "split cannot be trained on."),
    Case("header_only_valid", train("--train {d}/train.csv --valid {d}/header.csv"), 2,
         f"[train] error: --valid {{d}}/header.csv: {NO_ROWS} (0 read); a header-only or empty "
         "split cannot be evaluated."),
    Case("all_rows_skipped", train("--train {d}/allbad.csv --on-bad-rows skip"), 2,
         f"[train] error: --train {{d}}/allbad.csv: {NO_ROWS} (2 read, 2 skipped as bad); a "
         "header-only or empty split cannot be trained on."),
    bad_train_file("short_row", "short.csv", ", line 3: " + MALFORMED.format(4)),
    bad_train_file("extra_field", "extra.csv", ", line 3: " + MALFORMED.format(6)),
    bad_train_file("unknown_column", "unknown.csv",
                   ": unknown column(s) ['extra']; expected features ['user', 'city', 'hist', "
                   "'price'] and labels ['label'] (pass ignore_columns=[...] to drop extra "
                   "columns)."),
    bad_train_file("missing_column", "nocol.csv",
                   ": missing column(s) ['price']; the file has columns ['label', 'user', "
                   "'city', 'hist']."),
    bad_train_file("label_outside_01", "label2.csv", ", line 3, column 'label': " + LABEL.format(2)),
    bad_train_file("nan_label", "nanlabel.csv", ", line 3, column 'label': " + LABEL.format("nan")),
    bad_train_file("non_integer_id", "badid.csv", ", line 3, column 'user': " + ID.format("abc")),
    bad_train_file("fractional_id", "fracid.csv", ", line 2, column 'user': " + ID.format(3.5)),
    bad_train_file("empty_file", "empty.csv", ": empty file (expected a header line)."),
    Case("missing_path", train("--train {d}/nothere.csv"), 2,
         "[train] error: file not found: '{d}/nothere.csv'."),
    Case("bad_row_late_in_valid", train("--train {d}/train.csv --valid {d}/valid_late.csv"), 2,
         "[train] error: {d}/valid_late.csv, line 61, column 'label': label must be 0 or 1 "
         "(value '3')."),
    # ---- specs, flags and config
    Case("missing_features_flag", "train --train {d}/train.csv --run-dir {r}", 2,
         "[train] error: `features` is required with `train` files (a JSON spec file, 'frappe', "
         "'criteo' or 'census')."),
    Case("spec_key_typo",
         "train --train {d}/train.csv --features {d}/typo.json --run-dir {r} --no-jit", 2,
         "[train] error: feature 'user': unknown key(s) ['vocab_size'] for kind 'categorical'; "
         "valid keys: ['kind', 'name', 'vocabulary_size', 'vocabulary', 'num_hash_bins', "
         "'embedding_dim', 'group', 'dtype']."),
    Case("unknown_kind",
         "train --train {d}/train.csv --features {d}/kind.json --run-dir {r} --no-jit", 2,
         "[train] error: unknown feature kind 'categorial'; expected one of ['categorical', "
         "'numeric', 'sequence']."),
    Case("broken_spec_json",
         "train --train {d}/train.csv --features {d}/broken.json --run-dir {r}", 2,
         "[train] error: {d}/broken.json: not valid JSON (Expecting property name enclosed in "
         "double quotes at line 1, column 41)."),
    Case("unknown_config_key", "train --config {d}/badkey_config.json --run-dir {r}", 2,
         "[train] error: {d}/badkey_config.json: unknown config key(s) ['epoch']."),
    Case("unknown_model", train("--train {d}/train.csv", "--model dcnv3"), 2,
         "[train] error: unknown model name='dcnv3'; available: ..."),
    Case("unknown_preset", train("--train {d}/train.csv", "--preset huge"), 2,
         "[train] error: unknown preset 'huge'..."),
    Case("preset_of_another_model",
         train("--train {d}/train.csv", "--preset tokenmixer_large_small"), 2,
         "[train] error: preset 'tokenmixer_large_small' is a tokenmixer_large preset; --model "
         "rankmixer takes ['rankmixer_100m', 'rankmixer_1b', 'rankmixer_base', 'small', 'tiny']."),
    Case("missing_import", train("--train {d}/train.csv", "--import {d}/nothere.py"), 2,
         "[train] error: --import: no such module file: {d}/nothere.py"),
    Case("zero_batch_size", train("--train {d}/train.csv", "--batch-size 0"), 2,
         "[train] error: `batch_size` must be a positive int, got batch_size=0."),
    Case("negative_epochs", train("--train {d}/train.csv", "--epochs -1"), 2,
         "[train] error: `epochs` must be a positive int, got epochs=-1."),
    Case("non_int_flag", "train --batch-size many", 2,
         "...rankmixer train: error: argument --batch-size: invalid int value: 'many'"),
    # ---- a finished run: the same command is a no-op, a changed one is refused
    Case("finished_same", train("--train {d}/train.csv --valid {d}/valid.csv"), 0, "",
         stdout="holds a finished run", finished=True),
    Case("finished_changed_config",
         train("--train {d}/train.csv --valid {d}/valid.csv", "--learning-rate 0.5"), 2,
         "[train] error: {r} holds a finished run with a different config (['learning_rate']); "
         "use another --run-dir, or --overwrite to retrain.", finished=True),
    # ---- evaluate
    Case("evaluate_synthetic_without_data", "evaluate --run-dir {d}/runs/synthetic", 2,
         "[evaluate] error: {d}/runs/synthetic was trained on synthetic data and has no test "
         "files; pass --data FILE."),
    Case("evaluate_no_model", "evaluate --run-dir {d}/runs/nothing", 2,
         "[evaluate] error: {d}/runs/nothing holds no trained model (model.keras); train it "
         "first (`rankmixer train --run-dir ...`)."),
    Case("evaluate_bad_row", "evaluate --run-dir {r} --data {d}/valid_late.csv", 2,
         "[evaluate] error: {d}/valid_late.csv, line 61, column 'label': label must be 0 or 1 "
         "(value '3').", finished=True),
    Case("evaluate_header_only", "evaluate --run-dir {r} --data {d}/header.csv", 2,
         f"[evaluate] error: --data {{d}}/header.csv: {NO_ROWS} (0 read); a header-only or "
         "empty split cannot be evaluated.", finished=True),
    Case("evaluate_zero_batch_size", "evaluate --run-dir {r} --batch-size 0", 2,
         "[evaluate] error: `batch_size` must be a positive int, got batch_size=0.",
         finished=True),
    Case("evaluate_bad_row_before_model_load",
         "evaluate --run-dir {d}/runs/unloadable --data {d}/valid_late.csv", 2,
         "[evaluate] error: {d}/valid_late.csv, line 61, column 'label': label must be 0 or 1 "
         "(value '3').", limit_s=10),
    Case("evaluate_short_row", "evaluate --run-dir {r} --data {d}/short.csv", 2,
         "[evaluate] error: {d}/short.csv, line 3: malformed row: expected 5 fields, saw 4 "
         "(columns: ['label', 'user', 'city', 'hist', 'price']).", finished=True),
]  # fmt: skip
SETUP = Case(
    "setup_finished_run", train("--train {d}/train.csv --valid {d}/valid.csv"), 0, "", limit_s=150
)


def _fill(text: str, d: str, r: str) -> str:
    return text.replace("{d}", d).replace("{r}", r)


def _run_dir(d: str, case: Case) -> str:
    return os.path.join(d, "runs", "ok" if case.finished else case.id)


def _env() -> dict:
    return dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bad_input"))
    write_files(d)
    setup = dataclasses.replace(SETUP, finished=True)
    table = []
    for case in [setup, *CASES]:
        r = _run_dir(d, case)
        argv = _fill(case.argv, d, r).split()
        table.append({"id": case.id, "argv": argv, "limit_s": case.limit_s + 30})
    return d, run_in_subprocess(d, table, _env(), slack_s=60)


def test_setup_run_finished(results):
    d, got = results
    assert got[SETUP.id]["status"] == 0, {k: str(v)[-2000:] for k, v in got[SETUP.id].items()}
    assert os.path.exists(os.path.join(d, "runs", "ok", "metrics.json"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(results, case):
    d, got = results
    r = _run_dir(d, case)
    result = got[case.id]
    assert result["status"] == case.status, result
    assert result["seconds"] <= case.limit_s, result
    want = _fill(case.stderr, d, r)
    err = result["stderr"]
    assert "Traceback" not in err
    if want.startswith("..."):
        assert err.rstrip("\n").endswith(want[3:]), err
    elif want.endswith("..."):
        assert err.startswith(want[:-3]) and err.count("\n") == 1, err
    else:
        assert err == (want + "\n" if want else ""), err
    assert case.stdout in result["stdout"]
    if case.finished:  # the finished run is left as it was
        assert os.path.exists(os.path.join(r, "metrics.json"))
    elif case.argv.startswith("train"):
        # nothing that looks like a run, finished or not: the checks come first
        assert not os.path.exists(r), sorted(os.listdir(r))


def test_metrics_report_examples_and_lines_with_skip(tmp_path):
    """`--on-bad-rows skip`: the run trains on the good rows; metrics.json keeps up to 20
    examples with their exact lines (before #19: 5, without lines for malformed rows, and
    later lines one off per earlier malformed row)."""
    d = str(tmp_path)
    write_files(d)
    bad = COLUMNS + "\n" + "1,3,a,1,0.5\n0,4\n" * 7 + "2,4,b,3,0.1\n" + rows(60, 3)
    with open(os.path.join(d, "skip.csv"), "w") as f:
        f.write(bad)
    from keras_rankmixer import cli

    run = os.path.join(d, "run")
    argv = _fill(train("--train {d}/skip.csv --on-bad-rows skip"), d, run).split()
    assert cli.main(argv) == 0
    with open(os.path.join(run, "metrics.json")) as f:
        report = json.load(f)["train_data"]
    assert report["rows_read"] == 75 and report["rows_kept"] == 67
    lines = [e.split(": ", 1)[0] for e in report["examples"]]
    path = os.path.join(d, "skip.csv")
    want = (3, 5, 7, 9, 11, 13, 15, 16)  # more than the 5 metrics.json kept before #19
    assert lines == [f"{path}, line {n}" for n in want], report["examples"]


# ------------------------------------------------------------------ real processes


HANG_SCRIPT = textwrap.dedent(
    """
    import sys
    from keras_rankmixer import data

    # Skip the validation pass: the error must come out of the tf.data generator, during
    # fit, as before #19 (that path hung at interpreter shutdown on a loaded machine).
    # The runner looks `check_files` up in keras_rankmixer.data when it runs.
    def no_check(*args, **kwargs):
        return data.ReadReport(rows_read=1000, rows_kept=1000)

    data.check_files = no_check
    import tensorflow  # noqa: F401
    from keras_rankmixer import cli

    print("imported", flush=True)

    sys.argv = ["rankmixer", *sys.argv[1:]]
    sys.exit(cli.main())
    """
)


def _late_error_file(path: str) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("label,user,city,hist\n")
        for i in range(1000):
            label = 2 if i == 988 else int(rng.integers(0, 2))  # line 990
            hist = "|".join(map(str, rng.integers(0, 30, rng.integers(0, 6))))
            f.write(f"{label},{rng.integers(0, 20)},{rng.choice(['a', 'b'])},{hist}\n")


def test_streamed_data_error_exits_under_load(tmp_path):
    """Categorical/string/sequence features only (the streamed tf.data generator path), a bad
    label on line 990 of 1,000, batch 64, with two CPU burners running from the end of the
    imports to the exit: status 2, one line, within the limit (before #19 this could hang
    forever at interpreter shutdown)."""
    d = str(tmp_path)
    _late_error_file(os.path.join(d, "train.csv"))
    with open(os.path.join(d, "features.json"), "w") as f:
        json.dump(FEATURES[:3], f)
    argv = ["--train", f"{d}/train.csv", "--features", f"{d}/features.json"]
    argv += ["--epochs", "1", "--batch-size", "64", "--run-dir", f"{d}/run", "--verbose", "0"]
    argv += ["--reader", "python"]  # the generator path this test is about (native is default)
    proc = subprocess.Popen(
        [sys.executable, "-c", HANG_SCRIPT, "train", *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    burners = []
    try:
        assert proc.stdout.readline().strip() == "imported"  # TensorFlow is loaded
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in "12"]
        start = time.time()
        # a hang fails here (TimeoutExpired) instead of blocking the suite
        _, stderr = proc.communicate(timeout=120)
        seconds = time.time() - start
    finally:
        for p in [*burners, proc]:
            if p.poll() is None:
                p.kill()
                p.wait()
    ours = [line for line in stderr.splitlines() if line.startswith("[train]")]
    assert proc.returncode == 2, stderr[-3000:]
    assert ours == [
        f"[train] error: {d}/train.csv, line 990, column 'label': label must be 0 or 1 (value '2')."
    ]
    assert "Traceback" not in stderr and "PyFunc" not in stderr
    assert not os.path.exists(os.path.join(d, "run", "metrics.json"))
    assert not os.path.exists(os.path.join(d, "run", "model.keras"))
    assert seconds < 120


HELP_SCRIPT = textwrap.dedent(
    """
    import importlib.util, os, sys, time, types

    # The package __init__ is left out on purpose: this checks cli.py and every command's
    # register() (the parts `rankmixer --help` runs), whatever the package imports eagerly.
    spec = importlib.util.find_spec("keras_rankmixer")
    pkg = types.ModuleType("keras_rankmixer")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["keras_rankmixer"] = pkg
    start = time.time()
    from keras_rankmixer import cli

    for argv in (["--help"], ["train", "--help"], ["demo", "--help"], ["train", "--epochs", "x"]):
        try:
            cli.main(argv)
        except SystemExit:
            pass
    parse = cli.build_parser().parse_args
    debug = [parse(a).debug for a in (["train"], ["--debug", "train"], ["train", "--debug"])]
    print("DEBUG", debug, file=sys.stderr)
    heavy = sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules)
    print("HEAVY", heavy, round(time.time() - start, 2), file=sys.stderr)
    """
)


def test_cli_and_register_import_no_tensorflow():
    proc = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert "DEBUG [False, True, True]" in proc.stderr  # --debug before or after the command
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY []"), proc.stderr[-3000:]
    assert float(last.split()[-1]) < 5
    assert "show the full traceback" in proc.stdout  # --debug is on the top-level help
    assert "synthetic rows" in proc.stdout  # demo --help has descriptions


BLOCK_TF = textwrap.dedent(
    """
    import sys

    class NoTensorFlow:  # importing TensorFlow / Keras fails at once: help must not need them
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "jax"):
                raise ImportError(f"{name} is blocked: `rankmixer --help` must not import it")

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = ["rankmixer", "--help"]
    from keras_rankmixer.cli import main

    main()
    """
)


def test_console_help_needs_no_tensorflow():
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TF], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Train, evaluate, export and serve RankMixer models." in proc.stdout

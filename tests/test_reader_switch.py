"""The CLI's reader switch (#20): `config["reader"]` / `--reader {native,python}`.

`rankmixer train` / `evaluate` check and stream the files with the native reader
(`keras_rankmixer.data.native`: `check_native_files`, `make_native_dataset`) by default, and
with the Python reader (`check_files`, `make_dataset`) under `--reader python`. Checked here
with numbers: both readers give the same batches, the same report counts in a run's
metrics.json and the same exact test metrics of one saved model; bad data fails with the
reader's one-line `DataError` (file, line, column), header-only splits are refused, both
before anything is written; and the flag / config key reach the runner.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fault_driver import run_in_subprocess
from helpers import COLUMNS, FEATURES

from keras_rankmixer import cli
from keras_rankmixer.commands import train as train_cmd
from keras_rankmixer.data import native
from keras_rankmixer.features import feature_to_config
from keras_rankmixer.training import runner

# No numeric feature: no statistics pass (`read_arrays`), so every split, the training one
# included, is checked by the configured reader.
CATEGORICAL = FEATURES[:3]
TINY = dict(num_tokens=2, token_dim=8, num_layers=1, hidden_ratio=2, batch_size=32, epochs=2)
TINY.update(patience=0, learning_rate=0.01, jit_compile=False, verbose=0)
TINY_FLAGS = "--num-tokens 2 --token-dim 8 --num-layers 1 --hidden-ratio 2 --batch-size 16"
TINY_FLAGS += " --epochs 1 --patience 0 --no-jit --verbose 0"


def rows(n: int, seed: int) -> str:
    """Rows with every cell kind: ids, string ids (some out of vocabulary or missing),
    sequences longer than max_length (truncated) or empty, numbers with blanks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        user = int(rng.integers(0, 20))
        hist = "|".join(map(str, rng.integers(0, 30, rng.integers(0, 7))))
        city = rng.choice(["a", "b", "c", ""])
        price = "" if rng.random() < 0.1 else f"{rng.normal():.3f}"
        label = int((user % 3 == 0) ^ (rng.random() < 0.2))
        out.append(f"{label},{user},{city},{hist},{price}\n")
    return "".join(out)


def _cat_rows(n: int, seed: int) -> list[str]:
    """`rows` without the numeric column: the lines of a CATEGORICAL file."""
    return [",".join(r.split(",")[:4]) + "\n" for r in rows(n, seed).splitlines()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("reader_switch")
    (d / "train.csv").write_text(COLUMNS + "\n" + rows(300, 0))
    (d / "valid.csv").write_text(COLUMNS + "\n" + rows(120, 1))
    (d / "test.csv").write_text(COLUMNS + "\n" + rows(150, 2))
    (d / "features.json").write_text(json.dumps(FEATURES))
    (d / "categorical.json").write_text(json.dumps(CATEGORICAL))
    return d


def config_for(d, run_dir, reader, **more):
    config = dict(
        TINY,
        train=[str(d / "train.csv")],
        valid=[str(d / "valid.csv")],
        test=[str(d / "test.csv")],
        features=str(d / "features.json"),
        run_dir=str(run_dir),
        seed=3,
        reader=reader,
    )
    return {**config, **more}


def batches(ds, steps=None) -> list:
    """The batches of one pass (`steps` of them for a repeating dataset)."""
    ds = ds if steps is None else ds.take(steps)
    return [
        ({k: v.numpy() for k, v in x.items()}, {k: v.numpy() for k, v in y.items()}) for x, y in ds
    ]


def test_default_is_native_and_both_readers_stream_the_same_batches(data_dir, tmp_path):
    assert runner.DEFAULTS["reader"] == "native"
    assert runner.reader_functions("native") == (
        native.check_native_files,
        native.make_native_dataset,
    )
    loaded = {}
    for reader in ("native", "python"):
        config = runner.check_config(config_for(data_dir, tmp_path / reader, reader))
        loaded[reader] = runner.load_data(config)
    nat, py = loaded["native"], loaded["python"]
    for split in ("train", "valid", "test"):
        assert nat[split].engine == "native", split  # no silent fallback for CSV
        assert not hasattr(py[split], "engine"), split
    assert nat["rows"] == py["rows"] == {"train": 300, "valid": 120, "test": 150}
    # train and valid repeat, one pass per epoch through one iterator (`repeat_epochs`)
    assert nat["steps"] == py["steps"] == {"train": 10, "valid": 4}  # ceil(rows / 32)
    assert sorted(nat["reports"]) == sorted(py["reports"]) == ["train", "valid"]
    for split in ("train", "valid"):
        a, b = nat["reports"][split].to_dict(), py["reports"][split].to_dict()
        assert a == b and a["rows_read"] == nat["rows"][split], split  # the check passes
    # the statistics pass is the Python reader's either way: the same adapted specs
    assert [feature_to_config(s) for s in nat["specs"]] == [
        feature_to_config(s) for s in py["specs"]
    ]
    # valid / test are not shuffled: batch for batch the same arrays (dtypes included)
    for split in ("valid", "test"):
        steps = nat["steps"].get(split)
        a, b = batches(nat[split], steps), batches(py[split], steps)
        assert len(a) == len(b) == -(-{"valid": 120, "test": 150}[split] // 32)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xa.keys() == xb.keys() and ya.keys() == yb.keys()
            for k in xa:
                assert xa[k].dtype == xb[k].dtype, (split, k)
                np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{split} {k}")
            for k in ya:
                np.testing.assert_array_equal(ya[k], yb[k], err_msg=f"{split} {k}")
        if steps is None:  # a repeating dataset's report also counts what it read ahead
            assert nat[split].report.to_dict() == py[split].report.to_dict(), split
    # train is shuffled (by TF's RNG in the native reader, NumPy's in the Python one): the same
    # rows as a multiset, in another order
    a, b = batches(nat["train"], 10), batches(py["train"], 10)
    for k in ("user", "city", "hist"):
        va = np.concatenate([x[k] for x, _ in a]).reshape(300, -1).astype(str)
        vb = np.concatenate([x[k] for x, _ in b]).reshape(300, -1).astype(str)
        assert sorted(map(tuple, va)) == sorted(map(tuple, vb)), k
    ya = np.concatenate([y["label"] for _, y in a])
    yb = np.concatenate([y["label"] for _, y in b])
    assert ya.sum() == yb.sum() and len(ya) == len(yb) == 300


def test_runs_with_either_reader_count_the_same_rows_and_score_a_model_the_same(
    data_dir, tmp_path, monkeypatch
):
    """Training is not bit-identical across readers: the training rows are shuffled by
    NumPy's RNG in the Python reader and by TF's in the native one, so the two runs see
    the rows in different orders and their weights (and validation AUCs) differ. What is
    deterministic, and compared: the row counts of every split's report in metrics.json,
    and the exact test metrics of ONE saved model read through both readers (same rows,
    same values -> the same predictions, so equal to ~1e-6)."""
    metrics = {}
    for reader in ("native", "python"):
        metrics[reader] = runner.build_and_train(
            config_for(data_dir, tmp_path / reader, reader), log=lambda *a, **k: None
        )
    for split in ("train", "valid", "test"):
        a, b = metrics["native"][f"{split}_data"], metrics["python"][f"{split}_data"]
        assert a == b, split  # rows read / kept, missing and truncated cells, skipped
    assert metrics["native"]["train_data"]["rows_read"] == 300  # one pass: the check's report
    assert metrics["native"]["test_data"]["rows_kept"] == 150
    assert metrics["native"]["train_data"]["truncated"]["hist"] > 0  # the case is exercised
    with open(tmp_path / "native" / "config.json") as f:
        assert json.load(f)["reader"] == "native"
    # the reader does not change what a run computes: the finished run, asked again with the
    # other reader, is a no-op returning its metrics (not "a different config")
    again = config_for(data_dir, tmp_path / "native", "python")
    assert runner.build_and_train(again, log=lambda *a, **k: None) == metrics["native"]

    # One model, both readers: the evaluated metrics agree with each other and with the
    # test metrics its run computed during training.
    used = []
    real = runner.reader_functions

    def spy(reader):
        used.append(reader)
        return real(reader)

    monkeypatch.setattr(runner, "reader_functions", spy)
    run_dir = str(tmp_path / "python")
    scored = {
        reader: runner.evaluate_run(run_dir, reader=reader, progress=False)
        for reader in ("native", "python")
    }
    assert used == ["native"] * 2 + ["python"] * 2  # check + stream, each
    nat, py = scored["native"], scored["python"]
    assert nat["rows"] == py["rows"] == 150
    assert nat["data_report"] == py["data_report"]
    tasks = [k for k in nat if k.endswith("auc")]
    assert tasks, nat
    for key in tasks + [k.replace("auc", "logloss") for k in tasks]:
        assert 0 < nat[key] and nat[key] == pytest.approx(py[key], abs=1e-6), key
        assert nat[key] == pytest.approx(metrics["python"][f"test_{key}"], abs=1e-6), key
    used.clear()
    runner.evaluate_run(run_dir, progress=False)  # no reader given: the run's own
    assert used == ["python", "python"]


def test_bad_data_error_from_the_native_dataset_during_fit(data_dir, tmp_path, monkeypatch, capsys):
    """Without the validation pass (patched out), the bad row is met by the native dataset
    inside `model.fit`: still the reader's one-line DataError via `dataset.errors`, not
    TensorFlow's `InvalidArgumentError` from the py_function."""
    bad = tmp_path / "late.csv"
    lines = _cat_rows(200, 5)
    lines[150] = "2" + lines[150][1:]  # line 152 of the file (header = line 1)
    bad.write_text("label,user,city,hist\n" + "".join(lines))
    from keras_rankmixer.data import ReadReport

    monkeypatch.setattr(
        native, "check_native_files", lambda *a, **k: ReadReport(rows_read=200, rows_kept=200)
    )
    run_dir = tmp_path / "run"
    argv = ["train", "--train", str(bad), "--features", str(data_dir / "categorical.json")]
    argv += [*TINY_FLAGS.split(), "--run-dir", str(run_dir)]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"[train] error: {bad}, line 152, column 'label': label must be 0 or 1 (value '2').\n"
    )
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.keras").exists()


# ------------------------------------------------------------------ bad data through the CLI

BAD_CASES = {
    # id: (files written, argv after `train`, the one stderr line)
    "bad_label_train": (
        "--train {d}/bad_label.csv",
        "[train] error: {d}/bad_label.csv, line 41, column 'label': label must be 0 or 1 "
        "(value '3').",
    ),
    "bad_id_train": (
        "--train {d}/bad_id.csv",
        "[train] error: {d}/bad_id.csv, line 77, column 'user': not an integer id "
        "(value 'x7').",
    ),
    "short_row_train": (
        "--train {d}/short.csv",
        "[train] error: {d}/short.csv, line 12: malformed row: expected 4 fields, saw 3 "
        "(columns: ['label', 'user', 'city', 'hist']).",
    ),
    "bad_label_late_in_valid": (
        "--train {d}/good.csv --valid {d}/late.csv",
        "[train] error: {d}/late.csv, line 100, column 'label': label must be 0 or 1 "
        "(value '7').",
    ),
    "header_only_train": (
        "--train {d}/header.csv",
        "[train] error: --train {d}/header.csv: no data rows to use (0 read); a header-only "
        "or empty split cannot be trained on.",
    ),
    "header_only_valid": (
        "--train {d}/good.csv --valid {d}/header.csv",
        "[train] error: --valid {d}/header.csv: no data rows to use (0 read); a header-only "
        "or empty split cannot be evaluated.",
    ),
    "empty_train": (
        "--train {d}/empty.csv",
        "[train] error: {d}/empty.csv: empty file (expected a header line).",
    ),
}  # fmt: skip
READER_FLAGS = {"default": "", "python": " --reader python", "native": " --reader native"}


@pytest.fixture(scope="module")
def fault_results(tmp_path_factory):
    """Every case with the default reader, `--reader native` and `--reader python`, through
    `cli.main` in one subprocess (`fault_driver.py`: SIGALRM per case, so a hang is a
    "timeout" result rather than a stuck suite)."""
    d = str(tmp_path_factory.mktemp("reader_faults"))
    header = "label,user,city,hist\n"
    good = _cat_rows(120, 7)
    bad_label, bad_id, short, late = list(good), list(good), list(good), _cat_rows(99, 8)
    bad_label[39] = "3" + bad_label[39][1:]  # file line 41
    bad_id[75] = "1,x7," + bad_id[75].split(",", 2)[2]  # file line 77
    short[10] = "1,3,a\n"  # file line 12
    late[98] = "7" + late[98][1:]  # file line 100, the last one
    texts = {
        "good.csv": good,
        "bad_label.csv": bad_label,
        "bad_id.csv": bad_id,
        "short.csv": short,
        "late.csv": late,
        "header.csv": [],
    }
    for name, lines in texts.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(header + "".join(lines))
    open(os.path.join(d, "empty.csv"), "w").close()
    with open(os.path.join(d, "features.json"), "w") as f:
        json.dump(CATEGORICAL, f)
    table = []
    for case, (files, _) in BAD_CASES.items():
        for flag_id, flag in READER_FLAGS.items():
            run_dir = os.path.join(d, "runs", f"{case}-{flag_id}")
            argv = f"train {files} --features {{d}}/features.json --run-dir {run_dir} "
            argv = (argv + TINY_FLAGS + flag).replace("{d}", d)
            table.append({"id": f"{case}-{flag_id}", "argv": argv.split(), "limit_s": 60})
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return d, run_in_subprocess(d, table, env, slack_s=120)


@pytest.mark.parametrize("flag_id", list(READER_FLAGS))
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_data_fails_with_file_line_and_column_before_anything_is_written(
    fault_results, case, flag_id
):
    d, got = fault_results
    result = got[f"{case}-{flag_id}"]
    want = BAD_CASES[case][1].replace("{d}", d) + "\n"
    assert result["status"] == 2, result  # not "timeout": no hang
    assert result["stderr"] == want, result  # one line: no traceback, no TF op text
    assert result["seconds"] < 60, result
    assert not os.path.exists(os.path.join(d, "runs", f"{case}-{flag_id}"))  # nothing written


# ------------------------------------------------------------------ flag and config key


def test_reader_flag_and_config_key_reach_the_config(tmp_path, capsys):
    parser = cli.build_parser()

    def config(*argv):
        return runner.check_config(train_cmd.config_from_args(parser.parse_args(["train", *argv])))

    assert config()["reader"] == "native"
    assert config("--reader", "python")["reader"] == "python"
    assert config("--reader", "native")["reader"] == "native"
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"reader": "python", "epochs": 3}))
    assert config("--config", str(path))["reader"] == "python"  # from the file
    assert config("--config", str(path), "--reader", "native")["reader"] == "native"  # flag wins
    # the reader picks the functions load_data / evaluate_run call
    check, make = runner.reader_functions(config("--reader", "python")["reader"])
    from keras_rankmixer import data

    assert (check, make) == (data.check_files, data.make_dataset)
    # evaluate takes the flag too (None: the run's own reader)
    args = parser.parse_args(["evaluate", "--run-dir", "x", "--reader", "python"])
    assert args.reader == "python"
    assert parser.parse_args(["evaluate", "--run-dir", "x"]).reader is None
    # a bad value: argparse's usage error for the flag; one line naming the key for a file
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["train", "--reader", "arrow"])
    assert e.value.code == 2
    assert "argument --reader: invalid choice: 'arrow'" in capsys.readouterr().err
    path.write_text(json.dumps({"reader": "arrow"}))
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "[train] error: `reader` must be one of ['native', 'python'] ('native': TF ops, "
        "'python': the generator reader), got reader='arrow'.\n"
    )
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="got reader='arrow'"):
        runner.evaluate_run(str(tmp_path), data=["x.csv"], reader="arrow")


def test_runs_read_train_and_valid_through_one_iterator_each(data_dir, tmp_path, monkeypatch):
    """`fit` gets the repeating train dataset with `steps_per_epoch` = batches per pass, and
    the exact validation AUC of a repeating valid dataset read `validation_steps` batches at a
    time equals the AUC of a new iterator each epoch."""
    import keras

    from keras_rankmixer.data import repeat_epochs
    from keras_rankmixer.training.callbacks import ExactAUC

    seen = {}
    fit = keras.Model.fit

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    config = config_for(data_dir, tmp_path / "run", "native")
    runner.build_and_train(config, log=lambda *a, **k: None)
    assert seen["steps_per_epoch"] == 10 and seen["x"].engine == "native"  # ceil(300 / 32)
    config = runner.check_config(config)
    data = runner.load_data(config)
    model = keras.saving.load_model(os.path.join(tmp_path, "run", "model.keras"))
    plain = native.make_native_dataset(
        [str(data_dir / "valid.csv")], data["specs"], ["label"], batch_size=32
    )
    repeated, steps = repeat_epochs(plain, 120, 32)
    with pytest.raises(ValueError, match="validation_steps"):
        ExactAUC(repeated, validation_steps=0)
    callbacks = [ExactAUC(plain), ExactAUC(repeated, validation_steps=steps)]
    logs = [{}, {}]
    for cb, log in zip(callbacks, logs, strict=True):
        cb.set_model(model)
        for epoch in range(2):
            cb.on_epoch_end(epoch, log)
            assert 0 < log["val_auc_exact"] < 1
            log[epoch] = (log["val_auc_exact"], log["val_logloss_exact"])
    assert logs[0][0] == logs[1][0] == logs[1][1]

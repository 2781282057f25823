"""The `rankmixer` CLI: config merging, train -> run directory, resume after an interruption,
evaluate, and clear errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_rankmixer import cli
from keras_rankmixer.commands import train as train_cmd
from keras_rankmixer.features import CategoricalFeature, NumericFeature, feature_to_config
from keras_rankmixer.layers import gelu_tanh
from keras_rankmixer.training import run_dir as files
from keras_rankmixer.training import runner
from keras_rankmixer.training.metrics import logloss, roc_auc

SPECS = [
    CategoricalFeature("user", vocabulary_size=20, embedding_dim=4, group="user"),
    CategoricalFeature("item", vocabulary_size=10, embedding_dim=4, group="item"),
    NumericFeature("price", embedding_dim=4, group="item"),
]


def write_split(path, n, seed):
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 20, n), rng.integers(0, 10, n)
    label = ((user + item) % 3 == 0).astype(int)
    price = np.round(rng.normal(size=n), 3)
    with open(path, "w") as f:
        f.write("label,user,item,price\n")
        for row in zip(label, user, item, price, strict=True):
            f.write(",".join(map(str, row)) + "\n")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clicks")
    write_split(d / "train.csv", 256, 0)
    write_split(d / "valid.csv", 96, 1)
    with open(d / "features.json", "w") as f:
        json.dump([feature_to_config(s) for s in SPECS], f)
    return d


def config_for(data_dir, run_dir, **overrides):
    config = dict(
        train=[str(data_dir / "train.csv")],
        valid=[str(data_dir / "valid.csv")],
        test=[str(data_dir / "valid.csv")],
        features=str(data_dir / "features.json"),
        num_tokens=2,
        token_dim=8,
        num_layers=1,
        hidden_ratio=2,
        batch_size=64,
        epochs=3,
        patience=0,
        learning_rate=0.01,
        jit_compile=False,
        run_dir=str(run_dir),
        verbose=0,
    )
    config.update(overrides)
    return config


class Interrupt(keras.callbacks.Callback):
    """Raise at the end of epoch `at` (after `BackupAndRestore` has saved it)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("simulated interruption")


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_exact_auc_and_logloss_match_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    p = np.clip(s, 0.05, 0.95)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert logloss(y, p) == pytest.approx(want, rel=1e-12)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_parser_and_config_merging(tmp_path):
    parser = cli.build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert {"train", "evaluate", "demo"} <= names
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 7, "model": "dcnv2", "batch_size": 128}))
    args = parser.parse_args(["train", "--config", str(path), "--epochs", "2", "--no-jit"])
    config = train_cmd.config_from_args(args)
    assert config["epochs"] == 2  # the flag wins over the file
    assert config["model"] == "dcnv2" and config["batch_size"] == 128  # from the file
    assert config["jit_compile"] is False and config["learning_rate"] == 1e-3  # flag, default
    path.write_text(json.dumps({"epoch": 7}))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['epoch'\]"):
        train_cmd.config_from_args(parser.parse_args(["train", "--config", str(path)]))
    with pytest.raises(ValueError, match="`features` is required"):
        runner.check_config({"train": ["x.csv"]})
    with pytest.raises(ValueError, match="batch_size=0"):
        runner.check_config({"batch_size": 0})


def test_train_interrupt_resume_and_evaluate(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = config_for(data_dir, run_dir)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        runner.build_and_train(dict(config), extra_callbacks=[Interrupt(at=1)])
    history = files.load_history(str(run_dir / files.HISTORY_FILE))
    assert [h["epoch"] for h in history] == [0, 1]
    assert os.path.isdir(run_dir / files.BACKUP_DIR)
    assert not os.path.exists(run_dir / files.METRICS_FILE)

    # The same command again: resumes at epoch index 2, keeps the first two epochs' history.
    seen = EpochsSeen()
    metrics = runner.build_and_train(dict(config), extra_callbacks=[seen])
    assert seen.epochs == [2]
    history = files.load_history(str(run_dir / files.HISTORY_FILE))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[2]["loss"] < history[0]["loss"]  # training went on from the restored state
    assert not os.path.exists(run_dir / files.BACKUP_DIR)  # Keras removes it when done

    for name in ("config.json", "features.json", "history.json", "metrics.json", "model.keras"):
        assert os.path.exists(run_dir / name), name
    with open(run_dir / files.PLOT_FILE, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(run_dir / files.FEATURES_FILE) as f:
        assert json.load(f)[0]["name"] == "user"
    assert metrics["epochs_run"] == 3
    best = max(history, key=lambda h: h["val_auc_exact"])
    assert metrics["best_epoch"] == best["epoch"] + 1
    assert metrics["valid_auc"] == pytest.approx(best["val_auc_exact"])
    assert metrics["train_data"]["rows_read"] == 256
    # KeepBest restored the best epoch's weights: test == valid here, so the AUCs agree.
    assert metrics["test_auc"] == pytest.approx(metrics["valid_auc"], abs=1e-6)

    # evaluate: reads model.keras + features.json + config; same numbers as an exact recompute.
    assert cli.main(["evaluate", "--run-dir", str(run_dir)]) == 0
    with open(run_dir / "evaluation.json") as f:
        evaluation = json.load(f)
    assert evaluation["rows"] == 96
    assert evaluation["auc"] == pytest.approx(metrics["test_auc"], abs=1e-6)
    assert evaluation["logloss"] == pytest.approx(metrics["test_logloss"], rel=1e-5)

    # A finished run is not retrained; a different config does not resume into it.
    again = EpochsSeen()
    assert runner.build_and_train(dict(config), extra_callbacks=[again])["epochs_run"] == 3
    assert again.epochs == []


def test_killed_process_resumes_from_its_last_backed_up_epoch(data_dir, tmp_path):
    """SIGKILL a real `rankmixer train` process mid-run; the same command again resumes."""
    big = tmp_path / "big"
    big.mkdir()
    write_split(big / "train.csv", 6_000, 3)  # ~95 steps of 64: an epoch takes a while
    (big / "valid.csv").write_text((data_dir / "valid.csv").read_text())
    (big / "features.json").write_text((data_dir / "features.json").read_text())
    run_dir = tmp_path / "run"
    config = config_for(big, run_dir, epochs=4)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    metadata = run_dir / files.BACKUP_DIR / "training_metadata.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_rankmixer.cli", "train", "--config", str(config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if metadata.exists():
                try:
                    if json.loads(metadata.read_text())["epoch"] >= 2:
                        break  # epochs 0 and 1 are backed up: kill it during epoch 2
                except (ValueError, KeyError):
                    pass  # caught mid-write; look again
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / files.METRICS_FILE).exists()
    resume_at = json.loads(metadata.read_text())["epoch"]
    assert 2 <= resume_at < 4

    seen = EpochsSeen()
    metrics = runner.build_and_train(dict(config), extra_callbacks=[seen])
    assert seen.epochs == list(range(resume_at, 4))  # nothing before the backup is redone
    history = files.load_history(str(run_dir / files.HISTORY_FILE))
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert metrics["epochs_run"] == 4
    assert history[-1]["loss"] < history[0]["loss"]


def test_interrupted_run_with_other_config_is_refused(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = config_for(data_dir, run_dir, epochs=2)
    with pytest.raises(RuntimeError):
        runner.build_and_train(dict(config), extra_callbacks=[Interrupt(at=0)])
    with pytest.raises(ValueError, match=r"different config \(\['learning_rate'\]\)"):
        runner.build_and_train(dict(config, learning_rate=0.5))


def test_train_baseline_from_cli_flags_and_bad_data(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "dnn"
    argv = ["train", "--train", str(data_dir / "train.csv"), "--valid", str(data_dir / "valid.csv")]
    argv += ["--features", str(data_dir / "features.json"), "--model", "dcnv2", "--epochs", "1"]
    argv += ["--no-jit", "--batch-size", "128", "--run-dir", str(run_dir), "--verbose", "0"]
    assert cli.main(argv) == 0
    with open(run_dir / "metrics.json") as f:
        assert json.load(f)["model"] == "dcnv2"
    model = keras.models.load_model(run_dir / "model.keras")
    assert any(layer.name.startswith("cross_0") for layer in model.backbone.layers)

    bad = tmp_path / "bad.csv"
    bad.write_text("label,user,item,price\n1,3,4,0.5\n3,1,1,0.1\n")
    capsys.readouterr()
    argv = ["train", "--train", str(bad), "--features", str(data_dir / "features.json")]
    argv += ["--no-jit", "--epochs", "1", "--run-dir", str(tmp_path / "bad_run")]
    assert cli.main(argv) == 2  # the reader's DataError: one line on stderr, no traceback
    err = capsys.readouterr().err
    assert err == (
        f"[train] error: {bad}, line 3, column 'label': label must be 0 or 1 (value '3').\n"
    )
    assert not (tmp_path / "bad_run").exists()  # checked before anything is written
    assert cli.main(["--debug", *argv]) == 2  # --debug: the traceback too
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert re.search(r"keras_rankmixer\.data\.\w+\.DataError: ", err), err[-2000:]


def test_config_file_model_kwargs_reach_build_rankmixer(data_dir, tmp_path):
    """`model_kwargs` in a `--config` file passes any other `build_rankmixer` keyword."""
    run_dir = tmp_path / "kw"
    config = config_for(data_dir, run_dir, epochs=1)
    config["model_kwargs"] = {"activation": "gelu_tanh", "pooling": "flatten"}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    assert cli.main(["train", "--config", str(path)]) == 0
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.get_layer("flatten_tokens") is not None
    assert model.get_layer("block_0").ffn.activation is gelu_tanh
    # no SparseMoE: no moe/ logs and no active-ratio plot
    with open(run_dir / "history.json") as f:
        assert not any(k.startswith("moe/") for k in json.load(f)[0])
    assert not (run_dir / files.MOE_PLOT_FILE).exists()


def test_sparse_moe_run_logs_active_ratio_and_plots_fig4(data_dir, tmp_path):
    run_dir = tmp_path / "moe"
    config = config_for(data_dir, run_dir, epochs=2, batch_size=32)
    config["model_kwargs"] = {
        "moe": {"num_experts": 4, "hidden_ratio": 0.5, "target_active_ratio": 0.5}
    }
    runner.build_and_train(config)
    with open(run_dir / "history.json") as f:
        history = json.load(f)
    assert len(history) == 2
    for entry in history:
        ratio = entry["moe/block_0/moe/active_ratio"]
        assert 0.0 < ratio <= 1.0 and entry["moe/block_0/moe/l1_lambda"] > 0
    assert (run_dir / files.MOE_PLOT_FILE).stat().st_size > 1000

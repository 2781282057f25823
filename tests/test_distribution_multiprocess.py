"""Two processes on 127.0.0.1 (JAX, gloo collectives): `rankmixer train --distribution data`.

The test writes 4 Parquet files and launches the real command line twice,

    rankmixer train --train 'part-*.parquet' ... --distribution data
        --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I

one per process (one CPU device each). Checks: both processes exit 0 inside `TIMEOUT_S`
(otherwise both are killed by pid and the test fails); each read only its own files
(`sorted(files)[i::2]`, from its run report); both end with identical weights after the
expected number of global steps; the checkpoint of the distributed run loads in this
single-device process (TensorFlow backend) and exports to a SavedModel whose outputs equal
the loaded model's. Equality with single-device training is checked on 4 virtual devices in
`test_distribution_jax.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FILES, ROWS_PER_FILE, GLOBAL_BATCH = 4, 64, 32
# Generous because machines are shared: measured here ~146 s for the whole module at a load
# average of ~17 on 2 cores, and > 300 s at ~30. Past it, both processes are killed by pid.
TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import pandas as pd

    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.features import feature_to_config

    out = tmp_path_factory.mktemp("dist_mp")
    data = make_click_data(
        NUM_FILES * ROWS_PER_FILE, seed=7, num_categorical=3, num_numeric=1, max_vocab=300
    )
    specs = [s for s in data.specs if s.kind != "sequence"]
    with open(out / "features.json", "w") as f:
        json.dump([feature_to_config(s) for s in specs], f)
    frame = pd.DataFrame(
        {**{s.name: data.features[s.name] for s in specs}, "click": data.labels["click"]}
    )
    for i in range(NUM_FILES):
        frame.iloc[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE].to_parquet(
            out / f"part-{i:05d}.parquet"
        )
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = xla_flags()  # one CPU device per process
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    port = _free_port()
    common = [
        sys.executable, "-m", "keras_rankmixer.cli", "train",
        "--train", str(out / "part-*.parquet"), "--features", str(out / "features.json"),
        "--labels", "click", "--preset", "tiny", "--batch-size", str(GLOBAL_BATCH),
        "--epochs", "1", "--learning-rate", "0.01", "--run-dir", str(out / "run"),
        "--verbose", "0", "--distribution", "data",
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*common, "--process-id", str(i)],
            env=env,
            cwd=REPO,
            stdout=open(out / f"log_{i}.txt", "w"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        timed_out = [p.pid for p in procs if p.poll() is None]
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [(out / f"log_{i}.txt").read_text()[-4000:] for i in range(2)]
    if timed_out:
        pytest.fail(
            f"workers {timed_out} ran past {TIMEOUT_S}s and were killed:\n" + "\n".join(logs)
        )
    for i, p in enumerate(procs):
        if p.returncode != 0:
            pytest.fail(f"process {i} failed (rc={p.returncode}):\n{logs[i]}")
    run_dirs = [out / "run", out / "run" / "process_1"]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in run_dirs]
    return {"procs": procs, "run_dirs": run_dirs, "metrics": metrics, "out": out}


def test_processes_exited(run):
    assert [p.poll() for p in run["procs"]] == [0, 0]


def test_each_process_read_only_its_own_shard(run):
    files = [[os.path.basename(f) for f in m["train_data"]["files"]] for m in run["metrics"]]
    assert files[0] == ["part-00000.parquet", "part-00002.parquet"]
    assert files[1] == ["part-00001.parquet", "part-00003.parquet"]


def test_both_processes_end_with_identical_weights_and_reload_on_one_device(run):
    import keras

    models = [keras.saving.load_model(d / "model.keras") for d in run["run_dirs"]]
    # 2 processes x 2 files x 64 rows / global batch 32 = 8 synchronous steps on each.
    steps = NUM_FILES * ROWS_PER_FILE // GLOBAL_BATCH
    assert [int(keras.ops.convert_to_numpy(m.optimizer.iterations)) for m in models] == [steps] * 2
    w0, w1 = models[0].get_weights(), models[1].get_weights()
    assert len(w0) == len(w1) > 20
    for a, b, v in zip(w0, w1, models[0].weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=v.path)


def test_checkpoint_of_distributed_run_exports_as_usual(run):
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(run["run_dirs"][0] / "model.keras")
    path = str(run["out"] / "export")
    model.export(path, format="tf_saved_model", verbose=False)
    import pandas as pd

    frame = pd.read_parquet(run["out"] / "part-00003.parquet")
    names = [t.name for t in model.inputs]
    batch = {name: frame[name].to_numpy() for name in names if name in frame}
    assert len(batch) == len(model.inputs)
    loaded = tf.saved_model.load(path)  # keep a reference: its variables must stay alive
    served = loaded.serve({k: tf.constant(v) for k, v in batch.items()})
    expected = model.predict(batch, verbose=0)["click"]
    assert np.ptp(expected) > 1e-4
    np.testing.assert_allclose(np.asarray(served["click"]), expected, atol=1e-5)

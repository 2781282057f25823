"""The MFU harness (benchmarks/mfu.py, benchmarks/_common.py): its arithmetic, and that the
timed step really trains on fresh device-side ids (a benchmark of a no-op would be a defect)."""

import json
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402
from benchmarks import mfu  # noqa: E402
from keras_rankmixer.flops import count_model  # noqa: E402
from keras_rankmixer.models.presets import get_preset  # noqa: E402


def _tiny_model():
    features = C.synthetic_features(num_fields=4, vocabulary_size=50, embedding_dim=8)
    return features, C.build_benchmark_model(get_preset("tiny"), features, "float32")


def test_mfu_json_line_is_consistent(capsys):
    args = mfu.parse_args(
        "--preset tiny --batch-size 32 --mode both --repeats 1 --seconds 0.01 "
        "--peak-size 128 --fields 4 --vocab 50 --embedding-dim 8 --ffn-activation gelu_tanh".split()
    )
    mfu.run(args)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    payload = json.loads(last)
    assert payload["ffn_activation"] == payload["config"]["activation"] == "gelu_tanh"
    assert payload["donate"] is True and payload["device_peak_bytes"] is None  # TF: not reported
    for key in ("params", "flops_per_sample", "samples_per_s", "flops_per_s", "mfu"):
        assert key in payload
    _, model = _tiny_model()
    forward = count_model(model)["flops_per_sample"]
    assert payload["forward_flops_per_sample"] == forward
    assert payload["flops_per_sample"] == 3 * forward  # training: forward + backward
    assert payload["params"] == count_model(model)["params"]
    np.testing.assert_allclose(
        payload["flops_per_s"], payload["samples_per_s"] * payload["flops_per_sample"], rtol=1e-9
    )
    np.testing.assert_allclose(
        payload["mfu"], payload["flops_per_s"] / payload["peak_flops_per_s"], rtol=1e-9
    )
    np.testing.assert_allclose(payload["samples_per_s"], 32 / (payload["step_ms"] / 1e3), rtol=1e-9)
    assert payload["infer"]["flops_per_s"] == pytest.approx(
        payload["infer"]["samples_per_s"] * forward
    )
    assert len(payload["loadavg"]) == 3


def test_train_step_updates_weights_on_fresh_ids():
    features, model = _tiny_model()
    steps = C.make_steps(model, features, 16, C.make_optimizer("sgd", 0.1), jit=False)
    if C.BACKEND == "tensorflow":
        first, _ = steps._inputs()
        second, _ = steps._inputs()
        ids = np.stack([np.asarray(first[f.name]) for f in features])
        assert ids.min() >= 0 and ids.max() < 50
        assert not np.array_equal(ids, np.stack([np.asarray(second[f.name]) for f in features]))
    before = [np.array(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights]
    for _ in range(2):
        loss = steps.train()
    assert np.isfinite(float(np.asarray(loss)))
    if C.BACKEND == "jax":  # the JAX route carries the state outside the model
        after = [np.asarray(v) for v in steps.tv]
    else:
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed[-4:])  # the block and tower weights moved
    assert sum(changed) > len(changed) // 2


def test_ffn_matmul_flops_counts_forward_and_backward():
    assert C.ffn_matmul_flops(2, 4, 8, 16, 32, "infer") == 2 * 2 * (2 * 32 * 4 * 8 * 16)
    assert C.ffn_matmul_flops(2, 4, 8, 16, 32, "train") == 3 * C.ffn_matmul_flops(
        2, 4, 8, 16, 32, "infer"
    )


def test_gpu_suite_script_parses_and_its_mfu_flags_exist():
    """benchmarks/gpu_suite.sh (run on a lent GPU only): bash accepts it, the scripts it calls
    exist, and every flag it passes to mfu.py is one mfu.py accepts."""
    import re
    import subprocess

    path = os.path.join(os.path.dirname(mfu.__file__), "gpu_suite.sh")
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text = open(path).read()
    for script in set(re.findall(r"benchmarks/\w+\.py", text)):
        assert os.path.exists(os.path.join(os.path.dirname(os.path.dirname(path)), script))
    known = set(vars(mfu.parse_args([])))
    mfu_lines = [line for line in text.splitlines() if "$MFU" in line or "mfu.py" in line]
    flags = {f[2:].replace("-", "_") for line in mfu_lines for f in re.findall(r"--[a-z-]+", line)}
    assert flags and flags <= known, flags - known

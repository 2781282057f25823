"""Scale-out on the TensorFlow backend: MirroredStrategy on 2 logical CPU devices.

One subprocess (`KERAS_BACKEND=tensorflow`; the logical devices must be configured before
TensorFlow initialises) trains the tiny preset for a few steps on one device and under
`MirroredStrategy` from the same initial weights and global batch, and checks that
`jit_compile=True` is refused with a clear error under the strategy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_distribution_jax import run_subprocess  # noqa: E402

STEPS, GLOBAL_BATCH = 4, 64


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_tf")
    run_subprocess([os.path.abspath(__file__), str(out)], {"KERAS_BACKEND": "tensorflow"})
    with open(out / "report.json") as f:
        rep = json.load(f)
    rep["arrays"] = dict(np.load(out / "arrays.npz"))
    return rep


def test_mirrored_strategy_has_two_replicas(report):
    assert report["num_replicas"] == 2
    assert report["jit_compile_used"] is False


def test_mirrored_fit_without_jit_matches_single_device(report):
    arrays = report["arrays"]
    keys = [k[4:] for k in arrays if k.startswith("ref/")]
    assert len(keys) > 20
    moved = max(float(np.max(np.abs(arrays["ref/" + k] - arrays["init/" + k]))) for k in keys)
    assert moved > 1e-2  # training moved the weights, so equality below is informative
    for k in keys:
        np.testing.assert_allclose(
            arrays["mirrored/" + k], arrays["ref/" + k], atol=1e-4, err_msg=k
        )
    np.testing.assert_allclose(report["mirrored_losses"], report["ref_losses"], rtol=1e-5)
    assert len(report["ref_losses"]) == STEPS


def test_jit_compile_true_under_mirrored_strategy_is_refused(report):
    assert "jit_compile=True is not supported under MirroredStrategy" in report["jit_error"]
    assert report["auto_resolves_to"] is False
    assert report["outside_strategy"] is True  # no strategy: the value passes through


def _worker(out_dir: str) -> None:  # pragma: no cover - runs in the subprocess
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras

    from keras_rankmixer import distribution as dist_lib
    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.models import build_from_preset
    from keras_rankmixer.training import compile_for_ranking

    assert keras.backend.backend() == "tensorflow"
    report: dict = {}
    arrays: dict = {}
    data = make_click_data(
        STEPS * GLOBAL_BATCH, seed=5, num_categorical=4, num_numeric=1, max_vocab=500
    )

    class LossRecorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    def train(model):
        rec = LossRecorder()
        model.fit(
            data.features,
            data.labels,
            batch_size=GLOBAL_BATCH,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[rec],
        )
        return rec.losses

    keras.utils.set_random_seed(0)
    ref = build_from_preset("tiny", data.specs)
    compile_for_ranking(ref, learning_rate=1e-2, jit_compile=False)
    init = ref.get_weights()
    report["ref_losses"] = train(ref)
    for v, w in zip(ref.weights, init, strict=True):
        arrays[f"init/{v.path}"] = w
        arrays[f"ref/{v.path}"] = keras.ops.convert_to_numpy(v.value)

    strategy = dist_lib.mirrored_strategy(["/cpu:0", "/cpu:1"])
    report["num_replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_from_preset("tiny", data.specs)
        model.set_weights(init)
        jit = dist_lib.resolve_jit_compile("auto")
        compile_for_ranking(model, learning_rate=1e-2, jit_compile=jit)
        report["jit_compile_used"] = model.jit_compile
        report["auto_resolves_to"] = jit
        try:
            dist_lib.resolve_jit_compile(True)
            report["jit_error"] = "NO ERROR"
        except dist_lib.DistributionSetupError as e:
            report["jit_error"] = str(e)
    report["outside_strategy"] = dist_lib.resolve_jit_compile(True)
    report["mirrored_losses"] = train(model)
    for v in model.weights:
        arrays[f"mirrored/{v.path}"] = keras.ops.convert_to_numpy(v.value)

    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f)
    np.savez(os.path.join(out_dir, "arrays.npz"), **arrays)


if __name__ == "__main__":
    _worker(sys.argv[1])

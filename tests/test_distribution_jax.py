"""Scale-out on the JAX backend: DataParallel and token-parallel ModelParallel on 4 virtual CPUs.

Every check runs in ONE subprocess (`KERAS_BACKEND=jax`,
`XLA_FLAGS=--xla_force_host_platform_device_count=4`): JAX fixes its device count when it
starts, and one process keeps the XLA compiles to three (reference, data parallel, model
parallel). The worker (this file run as a script) trains, measures and writes a JSON report;
the tests below assert on the numbers in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, GLOBAL_BATCH = 4, 64


def run_subprocess(args, env_extra, timeout=300):
    """Run `python args...` from the repo root with extra env; fail the test with its output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(
            f"worker failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from helpers import xla_flags  # here, not at the top: the worker (this file) needs no keras

    out = tmp_path_factory.mktemp("dist_jax")
    run_subprocess(
        [os.path.abspath(__file__), str(out)],
        {
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"),
        },
    )
    with open(out / "report.json") as f:
        rep = json.load(f)
    rep["arrays"] = dict(np.load(out / "arrays.npz"))
    return rep


def _max_weight_diff(arrays, prefix):
    ref = sorted(k for k in arrays if k.startswith("ref/"))
    assert ref, "no reference weights recorded"
    return max(float(np.max(np.abs(arrays[k] - arrays[prefix + k[3:]]))) for k in ref)


def test_worker_saw_four_devices(report):
    assert report["devices"] == ["cpu:0", "cpu:1", "cpu:2", "cpu:3"]


def test_data_parallel_matches_single_device(report):
    arrays = report["arrays"]
    # Training must have moved the weights, or equality would prove nothing.
    moved = max(
        float(np.max(np.abs(arrays[k] - arrays["init" + k[3:]]))) for k in arrays if k[:4] == "ref/"
    )
    assert moved > 1e-2
    assert report["dp_mesh"] == {"shape": [4], "axis_names": ["batch"]}
    assert _max_weight_diff(arrays, "dp") < 1e-4
    np.testing.assert_allclose(report["dp_losses"], report["ref_losses"], rtol=1e-5, atol=1e-6)
    assert len(report["ref_losses"]) == STEPS


def test_model_parallel_shards_per_token_weights_on_model_axis(report):
    specs, decisions = report["mp_specs"], report["mp_decisions"]
    per_token = [p for p in specs if "/ffn/" in p or p.startswith("tokenizer/")]
    assert len(per_token) == 2 * 4 + 2  # 2 blocks x 4 FFN weights + tokenizer kernel/bias
    for path in per_token:
        assert specs[path][:1] == ["model"], (path, specs[path])
        assert all(a is None for a in specs[path][1:]), (path, specs[path])
        assert decisions[path] == "sharded"
    # Each device holds T/2 = 2 of the 4 tokens of every per-token weight.
    assert report["mp_local_shapes"]["block_0/ffn/kernel_1"] == [2, 32, 64]
    # LayerNorms and towers are replicated.
    for path in ("block_0/norm_1/gamma", "click/kernel", "click_tower_0/kernel"):
        assert all(a is None for a in specs[path]), (path, specs[path])
    # Embedding tables: sharded on the vocabulary axis when the rows divide by 2, else replicated.
    tables = {p: r for p, r in report["table_rows"].items()}
    assert any(r % 2 == 0 for r in tables.values()) and any(r % 2 for r in tables.values())
    for path, rows in tables.items():
        if rows % 2 == 0:
            assert specs[path][:1] == ["model"] and decisions[path] == "sharded", path
        else:
            assert all(a is None for a in specs[path]) and decisions[path].startswith("replicated")
    # Adam's slots follow their variable's layout.
    slots = {p: s for p, s in report["mp_optimizer_specs"].items() if "ffn_kernel_1" in p}
    assert len(slots) == 4, slots  # Adam's momentum and velocity for 2 blocks
    for path, spec in slots.items():
        assert spec[:1] == ["model"] and all(a is None for a in spec[1:]), (path, spec)


def test_model_parallel_loss_curve_and_weights_match_single_device(report):
    np.testing.assert_allclose(report["mp_losses"], report["ref_losses"], rtol=1e-5, atol=1e-6)
    assert _max_weight_diff(report["arrays"], "mp") < 1e-4


def test_model_parallel_export_and_checkpoint_match_single_device(report):
    arrays = report["arrays"]
    assert arrays["export_ref"].shape == (GLOBAL_BATCH, 1)
    assert np.ptp(arrays["export_ref"]) > 1e-3  # outputs depend on the input
    np.testing.assert_allclose(arrays["export_mp"], arrays["export_ref"], atol=1e-5)
    # A checkpoint saved from the distributed run loads, unsharded, in a single-device run.
    assert report["reloaded_single_device"] is True
    mp_keys = [k for k in arrays if k.startswith("mp/")]
    assert len(mp_keys) > 20
    for key in mp_keys:
        np.testing.assert_array_equal(arrays["reloaded" + key[2:]], arrays[key])


def test_sparse_moe_weights_follow_the_layout_contract(report):
    specs, trainable = report["moe_specs"], report["moe_trainable"]
    expected = [
        "expert_kernel_1",
        "expert_bias_1",
        "expert_kernel_2",
        "expert_bias_2",
        "train_router/router_kernel",
        "train_router/router_bias",
        "infer_router/router_kernel",
        "infer_router/router_bias",
    ]
    for name in expected:
        path = f"block_0/moe/{name}"
        assert specs[path][:1] == ["model"], (path, specs[path])
        assert all(a is None for a in specs[path][1:]), (path, specs[path])
    assert report["moe_local_shapes"]["block_0/moe/expert_kernel_1"][:2] == [2, 3]
    # Non-trainable state (l1_lambda, active ratios, counters) is replicated.
    state = [p for p, t in trainable.items() if not t]
    assert "block_0/moe/l1_lambda" in state and len(state) >= 2
    for path in state:
        assert all(a is None for a in specs[path]), (path, specs[path])


def test_bad_setups_raise_clear_errors(report):
    errors = report["errors"]
    assert "needs 8 devices but only 4" in errors["mesh_too_large"]
    assert "num_tokens=6" in errors["t_not_divisible_arg"]
    assert "'model' axis size" in errors["t_not_divisible_arg"]
    assert "T=6" in errors["t_not_divisible_build"]
    assert "not divisible by the 'model' axis size 4" in errors["t_not_divisible_build"]
    assert "'BxM'" in errors["bad_mesh_string"]
    assert "process_id" in errors["bad_process_id"]
    assert "HOST:PORT" in errors["bad_coordinator"]
    assert "Bx1" in errors["data_with_model_axis"]


def test_train_command_flags_set_the_global_distribution(report):
    assert report["cli_model"] == {
        "type": "TokenParallel",
        "mesh": [2, 2],
        "num_tokens": 4,  # from the tiny preset
        "scope": None,  # keras.distribution is set globally: build, fit and save all see it
        "batch_size": 64,  # one process: the global batch is unchanged
    }
    assert report["cli_data"] == {"type": "DataParallel", "mesh": [4]}


# --------------------------------------------------------------------------- the worker


def _worker(out_dir: str) -> None:  # pragma: no cover - runs in the subprocess
    import keras
    from keras import ops

    from keras_rankmixer import distribution as dist_lib
    from keras_rankmixer.commands import _distribution as cli_dist
    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.models import build_from_preset

    assert keras.backend.backend() == "jax"
    report: dict = {"devices": keras.distribution.list_devices()}
    arrays: dict = {}
    # Vocabularies 21, 97, 452, 2000: tables of 22, 98, 453, 2001 rows (both parities).
    data = make_click_data(
        STEPS * GLOBAL_BATCH, seed=3, num_categorical=4, num_numeric=1, min_vocab=21, max_vocab=2000
    )

    class LossRecorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    def build():
        # Loss only (no AUC metric): the metric adds compile time and nothing to the check.
        model = build_from_preset("tiny", data.specs)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", jit_compile=True
        )
        return model

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

    import time

    t0 = time.time()

    def tick(what):
        print(f"[worker] {what}: {time.time() - t0:.1f}s", flush=True)

    keras.utils.set_random_seed(0)
    ref = build()
    init = ref.get_weights()
    for v, w in zip(ref.weights, init, strict=True):
        arrays[f"init/{v.path}"] = w
    report["ref_losses"] = train(ref)
    tick("ref fit")
    for v in ref.weights:
        arrays[f"ref/{v.path}"] = ops.convert_to_numpy(v.value)

    # Data parallel on 4 devices, same global batch, same initial weights.
    dp = dist_lib.data_parallel()
    report["dp_mesh"] = {
        "shape": list(dp.device_mesh.shape),
        "axis_names": list(dp.device_mesh.axis_names),
    }
    with dp.scope():
        model = build()
        model.set_weights(init)
        report["dp_losses"] = train(model)
        tick("dp fit")
    for v in model.weights:
        arrays[f"dp/{v.path}"] = ops.convert_to_numpy(v.value)

    # Token-parallel model parallel on a 2x2 mesh; small tables sharded too (min rows 0).
    mp = dist_lib.model_parallel("2x2", num_tokens=4, embedding_shard_min_rows=0)
    with mp.scope():
        model = build()
        model.set_weights(init)
        report["mp_losses"] = train(model)
        tick("mp fit")
    for v in model.weights:
        arrays[f"mp/{v.path}"] = ops.convert_to_numpy(v.value)
    report["mp_specs"] = {p: list(s) for p, s in dist_lib.sharding_specs(model).items()}
    report["mp_decisions"] = dict(mp.decisions)
    report["mp_local_shapes"] = {
        v.path: list(v.value.addressable_shards[0].data.shape) for v in model.weights
    }
    report["table_rows"] = {
        v.path: int(v.shape[0]) for v in model.weights if v.path.endswith("/embeddings")
    }
    report["mp_optimizer_specs"] = {
        v.path: list(getattr(v.value.sharding, "spec", ())) for v in model.optimizer.variables
    }

    # Export both and compare the SavedModels' outputs; checkpoint round trip to one device.
    import tensorflow as tf

    batch = {k: v[:GLOBAL_BATCH] for k, v in data.features.items()}
    ref.export(os.path.join(out_dir, "ref_export"), format="tf_saved_model", verbose=False)
    model.export(os.path.join(out_dir, "mp_export"), format="tf_saved_model", verbose=False)
    tick("exports")
    for name in ("ref", "mp"):
        loaded = tf.saved_model.load(os.path.join(out_dir, f"{name}_export"))
        outputs = loaded.serve({k: tf.constant(v) for k, v in batch.items()})
        arrays[f"export_{name}"] = np.asarray(outputs["click"])
    ckpt = os.path.join(out_dir, "mp.keras")
    model.save(ckpt)
    keras.distribution.set_distribution(None)
    reloaded = keras.saving.load_model(ckpt)
    tick("reload")
    kernel = reloaded.get_layer("block_0").ffn.kernel_1.value
    report["reloaded_single_device"] = len(kernel.sharding.device_set) == 1
    for v in reloaded.weights:
        arrays[f"reloaded/{v.path}"] = ops.convert_to_numpy(v.value)

    # SparseMoE (DTSI: train and infer routers) weights: built under a 1x2 mesh, not trained.
    with dist_lib.model_parallel((1, 2), num_tokens=4).scope():
        moe_model = build_from_preset(
            "tiny", data.specs, moe={"num_experts": 3, "routing": "dtsi"}, token_dim=8
        )
    tick("moe")
    block_0 = [v for v in moe_model.weights if v.path.startswith("block_0/moe/")]
    report["moe_specs"] = {v.path: list(getattr(v.value.sharding, "spec", ())) for v in block_0}
    report["moe_trainable"] = {v.path: bool(v.trainable) for v in block_0}
    report["moe_local_shapes"] = {
        v.path: list(v.value.addressable_shards[0].data.shape) for v in block_0
    }

    # Bad set-ups.
    errors = {}

    def catch(key, fn):
        try:
            fn()
        except dist_lib.DistributionSetupError as e:
            errors[key] = str(e)
        else:
            errors[key] = "NO ERROR"

    catch("mesh_too_large", lambda: dist_lib.model_parallel("2x4"))
    catch("t_not_divisible_arg", lambda: dist_lib.model_parallel("1x4", num_tokens=6))

    def build_t6():
        with dist_lib.model_parallel("1x4").scope():
            build_from_preset("tiny", data.specs, num_tokens=6, token_dim=36)

    catch("t_not_divisible_build", build_t6)
    catch("bad_mesh_string", lambda: dist_lib.model_parallel("2by2"))
    catch("bad_process_id", lambda: dist_lib.initialize_multi_host("127.0.0.1:1234", 2, 2))
    catch("bad_coordinator", lambda: dist_lib.initialize_multi_host("localhost", 2, 0))
    catch("data_with_model_axis", lambda: cli_dist.distribution_from_flags("data", "2x2"))
    report["errors"] = errors
    tick("errors")

    # The `rankmixer train` seam: flags -> a global distribution (no training here).
    import argparse

    flags = dict(coordinator=None, num_processes=None, process_id=None)
    config, scope = cli_dist.configure_training(
        argparse.Namespace(distribution="model", mesh="2x2", **flags),
        {"preset": "tiny", "model": "rankmixer", "batch_size": 64},
    )
    active = keras.distribution.distribution()
    report["cli_model"] = {
        "type": type(active).__name__,
        "mesh": list(active.device_mesh.shape),
        "num_tokens": active.num_tokens,
        "scope": scope,
        "batch_size": config["batch_size"],
    }
    cli_dist.configure_training(
        argparse.Namespace(distribution="data", mesh=None, **flags), {"batch_size": 64}
    )
    active = keras.distribution.distribution()
    report["cli_data"] = {"type": type(active).__name__, "mesh": list(active.device_mesh.shape)}
    keras.distribution.set_distribution(None)

    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f)
    np.savez(os.path.join(out_dir, "arrays.npz"), **arrays)


if __name__ == "__main__":
    _worker(sys.argv[1])

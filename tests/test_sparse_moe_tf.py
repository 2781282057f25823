"""SparseMoE, TensorFlow-only checks: sparse inference inside an exported SavedModel
(dynamic batch, no XLA), and `build_rankmixer(moe=...)` end to end."""

from __future__ import annotations

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow-only (SavedModel export)", allow_module_level=True)

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

from keras_rankmixer import CategoricalFeature, build_rankmixer  # noqa: E402
from keras_rankmixer.layers import SparseMoE  # noqa: E402
from keras_rankmixer.training.moe_monitor import find_moe_layers  # noqa: E402

T, D, E = 4, 8, 4


def _moe_model(mode, capacity_factor):
    inputs = keras.Input((T, D), name="tokens")
    moe = SparseMoE(
        E,
        hidden_ratio=0.5,
        target_active_ratio=0.25,
        routing="dtsi",
        inference_mode=mode,
        capacity_factor=capacity_factor,
        name="moe",
    )
    return keras.Model(inputs, moe(inputs))


def test_sparse_inference_in_exported_savedmodel(tmp_path):
    keras.utils.set_random_seed(0)
    dense = _moe_model("dense", 1.0)
    sparse = _moe_model("sparse", 4.0)  # 4 * 0.25 >= 1: no overflow possible
    sparse.set_weights(dense.get_weights())
    path = str(tmp_path / "moe")
    sparse.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    for batch in (1, 5, 33):  # the batch axis stays dynamic in the SavedModel
        x = np.random.default_rng(batch).normal(size=(batch, T, D)).astype("float32")
        out = served.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(out, dense(x).numpy(), rtol=1e-5, atol=1e-5)
    # the served graph really is the sparse one: top_k over the batch, scatter back
    proto = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    graph_ops = {node.op for node in graph.node}
    for function in graph.library.function:
        graph_ops |= {node.op for node in function.node_def}
    assert {"TopKV2", "ScatterNd"} <= graph_ops


def test_build_rankmixer_with_moe():
    keras.utils.set_random_seed(1)
    features = [
        CategoricalFeature("user", vocabulary_size=20, embedding_dim=8, group="user"),
        CategoricalFeature("item", vocabulary_size=30, embedding_dim=8, group="item"),
    ]
    moe = {"num_experts": 4, "hidden_ratio": 0.5, "routing": "dtsi", "capacity_factor": 4.0}
    model = build_rankmixer(features, num_tokens=2, token_dim=8, num_layers=2, moe=moe)
    layers = find_moe_layers(model)
    assert sorted(layers) == ["block_0/moe", "block_1/moe"]
    assert all(layer.routing == "dtsi" for layer in layers.values())
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, 20, 64), "item": rng.integers(0, 30, 64)}
    # training call: one L1 term per block reaches the model's losses, lambdas update
    model(x, training=True)
    assert len(model.losses) == 2
    assert all(float(layer.l1_lambda.numpy()) != 1e-8 for layer in layers.values())
    sparse = model(x, training=False)["click"].numpy()
    for layer in layers.values():
        layer.inference_mode = "dense"
    dense = model(x, training=False)["click"].numpy()
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ffn_factory"):
        build_rankmixer(features, 2, 8, 1, moe=moe, ffn_factory=lambda i: keras.layers.Identity())


_MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json, keras, numpy as np
from keras_rankmixer.layers import SparseMoE
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    inputs = keras.Input((3, 8))
    moe = SparseMoE(4, hidden_ratio=0.5, target_active_ratio=0.25, name="moe")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(moe(inputs))))
    model.compile("sgd", "mse", jit_compile=False)
x = np.random.default_rng(0).random((32, 3, 8)).astype("float32")
model.fit(x, np.ones((32, 1)), batch_size=8, epochs=1, verbose=0)
model.predict(x[:16], batch_size=16, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "lambda": float(moe.l1_lambda.numpy()),
                  "active": float(moe.active_ratio.numpy()),
                  "gates": moe.inference_stats()["gates"]}))
"""


def test_lambda_update_under_mirrored_strategy(tmp_path):
    """Two CPU replicas: the in-call lambda update runs in replica context (fit, no XLA)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # 4 steps (32 rows / global batch 8): one x1.2 or /1.2 update per step, never per replica
    steps = np.log(result["lambda"] / 1e-8) / np.log(1.2)
    assert abs(steps - round(steps)) < 1e-3 and abs(round(steps)) <= 4 and round(steps) % 2 == 0
    assert 0.0 <= result["active"] <= 1.0
    assert result["gates"] == 16 * 3 * 4  # inference counters summed over replicas exactly once


@pytest.mark.parametrize(
    "name",
    [
        "keras_rankmixer.layers.sparse_moe",
        "keras_rankmixer.layers.per_token_router",
        "keras_rankmixer.training.moe_monitor",
    ],
)
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

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
from keras_rankmixer.moe_callbacks import find_moe_layers  # noqa: E402

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

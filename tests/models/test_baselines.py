"""Baselines on the shared front-end: NumPy forward references, variants, L2, round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import keras_file_round_trip

from keras_rankmixer.features import CategoricalFeature, NumericFeature
from keras_rankmixer.models.baselines import (
    MODEL_NAMES,
    VARIANTS,
    build_dcnv2,
    build_dnn,
    build_model,
    set_embedding_l2,
)

FEATURES = [
    CategoricalFeature("user", vocabulary_size=7, embedding_dim=3, group="user"),
    CategoricalFeature("item", vocabulary_size=5, embedding_dim=3, group="item"),
    NumericFeature("price", embedding_dim=2, group="item"),
]
BATCH = {
    "user": np.array([0, 6, -1, 3]),
    "item": np.array([4, 2, 1, 9]),
    "price": np.array([1.5, np.nan, -0.5, 0.0], "float32"),
}


def embeddings(model):
    """The concatenated front-end output, in group order (user | item, price)."""
    front = keras.Model(model.inputs, model.get_layer("embeddings").output)
    return np.asarray(front.predict(BATCH, verbose=0))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def weights(model, name):
    return [np.asarray(w) for w in model.get_layer(name).get_weights()]


def test_embedding_front_end_matches_tables():
    model = build_dnn(FEATURES, hidden_units=(4,))
    e = embeddings(model)
    table = weights(model, "embed_user")[0]
    rows = np.array([1, 7, 0, 4])  # id + 1; -1 -> reserved row 0
    np.testing.assert_allclose(e[:, :3], table[rows], rtol=1e-6)
    assert e.shape == (4, 8)


def test_dnn_matches_numpy_reference():
    model = build_dnn(FEATURES, hidden_units=(6, 5))
    h = embeddings(model)
    for i in range(2):
        k, b = weights(model, f"mlp_dense_{i}")
        h = np.maximum(h @ k + b, 0)
    k, b = weights(model, "click")
    want = sigmoid(h @ k + b)
    got = model.predict(BATCH, verbose=0)["click"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
def test_dcnv2_matches_numpy_reference(structure):
    model = build_dcnv2(
        FEATURES, num_cross_layers=2, hidden_units=(4,), structure=structure, projection_dim=None
    )
    # Non-trivial biases so that every term of the cross formula is checked.
    rng = np.random.default_rng(0)
    crosses = [
        layer
        for layer in model.backbone.layers
        if layer.name.startswith("cross_") and layer.name != "cross_and_deep"
    ]
    assert [layer.name for layer in crosses] == ["cross_0", "cross_1"]
    for layer in crosses:
        layer.set_weights([rng.normal(size=w.shape) * 0.3 for w in layer.get_weights()])
    x0 = embeddings(model)
    x = x0
    for i in range(2):
        k, b = weights(model, f"cross_{i}")
        x = x0 * (x @ k + b) + x  # DCN-V2: x_{l+1} = x0 * (W x_l + b) + x_l
    k1, b1 = weights(model, "mlp_dense_0")
    if structure == "parallel":
        out = np.concatenate([x, np.maximum(x0 @ k1 + b1, 0)], axis=-1)
    else:
        out = np.maximum(x @ k1 + b1, 0)
    k, b = weights(model, "click")
    np.testing.assert_allclose(
        model.predict(BATCH, verbose=0)["click"], sigmoid(out @ k + b), rtol=1e-4, atol=1e-5
    )


def test_variants_set_block_switches_and_names():
    kwargs = dict(num_tokens=2, token_dim=4, num_layers=1, hidden_ratio=2)
    assert set(MODEL_NAMES) == {"dnn", "dcnv2", *VARIANTS}
    for name, overrides in VARIANTS.items():
        block = build_model(name, FEATURES, **kwargs).get_layer("block_0")
        for key in ("use_token_mixing", "use_residual", "use_layer_norm", "shared_ffn"):
            default = key != "shared_ffn"
            assert getattr(block, key) == overrides.get(key, default), (name, key)
    with pytest.raises(ValueError, match="unknown model name='mlp'"):
        build_model("mlp", FEATURES)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="hidden_units"):
        build_dnn(FEATURES, hidden_units=(0,))
    with pytest.raises(ValueError, match="dropout=1.5"):
        build_dnn(FEATURES, dropout=1.5)
    with pytest.raises(ValueError, match="num_cross_layers=0"):
        build_dcnv2(FEATURES, num_cross_layers=0)
    with pytest.raises(ValueError, match="structure"):
        build_dcnv2(FEATURES, structure="side")
    with pytest.raises(ValueError, match="l2=-1"):
        set_embedding_l2(build_dnn(FEATURES, hidden_units=(2,)), -1)


def test_embedding_l2_value_and_round_trip(tmp_path):
    model = set_embedding_l2(build_dcnv2(FEATURES, num_cross_layers=1, hidden_units=(3,)), 0.01)
    tables = [np.asarray(model.get_layer(n).get_weights()[0]) for n in ("embed_user", "embed_item")]
    want = sum(0.01 * np.sum(t**2) for t in tables)
    assert len(model.losses) == 2
    np.testing.assert_allclose(sum(float(v) for v in model.losses), want, rtol=1e-5)
    loaded = keras_file_round_trip(model, tmp_path)
    np.testing.assert_allclose(sum(float(v) for v in loaded.losses), want, rtol=1e-5)
    np.testing.assert_allclose(
        loaded.predict(BATCH, verbose=0)["click"], model.predict(BATCH, verbose=0)["click"]
    )
    assert not set_embedding_l2(model, 0).losses


def test_dnn_trains_multi_task_with_batch_norm_and_dropout():
    model = build_dnn(
        FEATURES, tasks=("click", "like"), hidden_units=(8,), batch_norm=True, dropout=0.1
    )
    rng = np.random.default_rng(0)
    n = 256
    x = {
        "user": rng.integers(0, 7, n),
        "item": rng.integers(0, 5, n),
        "price": rng.normal(size=n).astype("float32"),
    }
    y = {"click": (x["user"] % 2).astype("float32"), "like": (x["item"] > 2).astype("float32")}
    # jit_compile "auto" (the default): XLA on JAX, none on a TF CPU
    model.compile(keras.optimizers.Adam(0.03), loss="binary_crossentropy")
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=64, epochs=15, verbose=0)
    last = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert last < 0.5 * first
    assert sorted(model.output_names) == ["click", "like"]

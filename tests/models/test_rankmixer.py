import math

import keras
import numpy as np
import pytest
from helpers import (
    assert_all_close,
    assert_gradients_reach_all,
    keras_file_round_trip,
    model_batch,
    model_specs,
    to_numpy,
)

import keras_rankmixer as kr
from keras_rankmixer.data import make_click_data
from keras_rankmixer.training import compile_for_ranking

_x = keras.Input((1,))
Functional = type(keras.Model(_x, keras.layers.Identity()(_x)))  # keras' functional class

SPECS = model_specs()
batch = model_batch


def tiny(tasks=("click",), **kw):
    return kr.build_rankmixer(SPECS, 4, 16, 2, 2, tasks=tasks, **kw)


def test_functional_model_with_named_inputs_and_task_outputs():
    model = tiny(tasks=("finish", "skip", "like"))
    # a functional model (the graph of a Ranker on a RankMixerBackbone)
    assert isinstance(model, kr.Ranker) and isinstance(model.backbone, kr.RankMixerBackbone)
    assert isinstance(model, Functional) and isinstance(model.backbone, Functional)
    assert sorted(model.input.keys()) == ["history", "item", "price", "user"]
    out = model.predict(batch(), verbose=0)
    assert sorted(out) == ["finish", "like", "skip"]
    for p in out.values():
        assert p.shape == (6, 1) and p.dtype == np.float32
        assert ((p > 0) & (p < 1)).all()


def test_gradients_reach_every_weight():
    model = tiny()
    x = batch()
    x["price"][0] = np.nan  # so the learned "missing" vector is used too
    assert_gradients_reach_all(model, {k: keras.ops.convert_to_tensor(v) for k, v in x.items()})


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = tiny(tasks=("a", "b"))
    x = batch()
    loaded = keras_file_round_trip(model, tmp_path)
    for task in ("a", "b"):
        np.testing.assert_array_equal(
            model.predict(x, verbose=0)[task], loaded.predict(x, verbose=0)[task]
        )


def test_get_config_round_trip():
    model = tiny()
    clone = type(model).from_config(model.get_config())
    assert isinstance(clone, kr.Ranker) and clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = batch()
    assert_all_close(clone.predict(x, verbose=0)["click"], model.predict(x, verbose=0)["click"])


def test_jit_fit_learns_a_synthetic_click_task():
    keras.utils.set_random_seed(0)
    data = make_click_data(6000, seed=3, num_categorical=6, max_vocab=200, num_numeric=2)
    train, valid = data.split(0.75)
    model = kr.build_from_preset("tiny", data.specs)
    compile_for_ranking(model, learning_rate=3e-3, jit_compile=True)
    before = model.evaluate(valid.features, valid.labels, verbose=0, return_dict=True)
    hist = model.fit(train.features, train.labels, batch_size=256, epochs=3, verbose=0)
    after = model.evaluate(valid.features, valid.labels, verbose=0, return_dict=True)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert after["loss"] < before["loss"]
    oracle = keras.metrics.AUC()
    oracle.update_state(valid.labels["click"], valid.probabilities["click"])
    # Clearly better than chance: at least 60% of the way from 0.5 to the Bayes-optimal AUC.
    assert after["auc"] > 0.5 + 0.6 * (float(oracle.result()) - 0.5), (after, oracle.result())
    assert after["auc"] > before["auc"] + 0.1


def test_mixed_bfloat16_fit_with_several_tasks():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny(tasks=("click", "like"))
    assert model.get_layer("block_0").ffn.compute_dtype == "bfloat16"
    compile_for_ranking(model, jit_compile=True)
    x = batch(64)
    y = {"click": np.random.default_rng(0).integers(0, 2, 64), "like": np.zeros(64, "int64")}
    hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    out = model.predict(x, verbose=0)
    assert out["click"].dtype == np.float32 and out["like"].dtype == np.float32


def test_ablation_flags_reach_the_blocks():
    model = tiny(use_token_mixing=False, shared_ffn=True, use_residual=False, use_layer_norm=False)
    block = model.get_layer("block_1")
    assert not block.use_token_mixing and block.shared_ffn
    assert not block.use_residual and not block.use_layer_norm


def test_activation_reaches_every_block_and_survives_saving(tmp_path):
    model = tiny(activation="gelu_tanh", tower_activation="gelu_tanh")
    for i in range(2):
        assert model.get_layer(f"block_{i}").ffn.activation is kr.layers.gelu_tanh
    assert model.get_layer("click_tower_0").activation is kr.layers.gelu_tanh
    loaded = keras_file_round_trip(model, tmp_path)
    assert loaded.get_layer("block_1").ffn.activation is kr.layers.gelu_tanh
    assert loaded.get_layer("click_tower_0").activation is kr.layers.gelu_tanh
    x = batch()
    np.testing.assert_array_equal(
        model.predict(x, verbose=0)["click"], loaded.predict(x, verbose=0)["click"]
    )
    exact = tiny()  # same weights, exact GELU: the activation is really used
    exact.set_weights(model.get_weights())
    assert not np.allclose(
        exact.predict(x, verbose=0)["click"], model.predict(x, verbose=0)["click"], atol=1e-7
    )


def test_ffn_factory_seam():
    model = tiny(ffn_factory=lambda i: kr.layers.PerTokenFFN(hidden_dim=3 + i, name=f"f{i}"))
    assert model.get_layer("block_1").ffn.ffn_dim == 4


def test_out_of_vocabulary_and_missing_inputs_are_safe():
    model = tiny()
    x = batch(4)
    x["user"] = np.array([-1, 10_000, 3, -5])
    x["item"] = np.array([1, 2, 3, 4])
    x["price"] = np.array([np.nan, np.inf, 1.0, -np.inf], "float32")
    x["history"] = np.full((4, 3), -1)
    out = model.predict(x, verbose=0)["click"]
    assert np.isfinite(out).all()
    # OOV and missing ids share the reserved row: same output for -1 and 10_000.
    y = to_numpy(model.get_layer("embed_user")(np.array([-1, 10_000])))
    np.testing.assert_array_equal(y[0], y[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_layers": -1}, "num_layers"),
        ({"num_layers": 1.0}, "num_layers"),
        ({"num_layers": 0, "moe": {"num_experts": 2}}, "num_layers >= 1"),
        ({"tower_activation": "bogus"}, "`tower_activation` must be"),
        ({"tasks": []}, "tasks"),
        ({"tasks": ["a", "a"]}, "tasks"),
        ({"num_tokens": 0}, "num_tokens"),
        ({"hidden_ratio": -2}, "hidden_ratio"),
        ({"pooling": "max"}, "pooling"),
        ({"tower_dropout": 1.0}, "tower_dropout"),
        ({"tower_dropout": -0.1}, "tower_dropout"),
        ({"tower_dropout": "0.2"}, "tower_dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_tokens": 4, "token_dim": 16, "num_layers": 1, "hidden_ratio": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kr.build_rankmixer(SPECS, **args)


def head_after(model, layer_name):
    """The part of `model` after the backbone layer `layer_name`: its output -> task outputs."""
    backbone = model.backbone
    rest_of_backbone = keras.Model(backbone.get_layer(layer_name).output, backbone.output)
    representation = model.get_layer(f"{model.tasks[0]}_tower_0").input  # in the ranker graph
    towers = keras.Model(representation, model.outputs)
    return lambda x, **kw: towers(rest_of_backbone(x, **kw), **kw)


def test_flatten_pooling_feeds_every_token_to_the_tower():
    model = tiny(pooling="flatten")
    assert tuple(model.get_layer("flatten_tokens").output.shape) == (None, 4 * 16)
    # the tower sees token order: swapping two output tokens changes the prediction,
    # whereas mean pooling (the default) is blind to it
    head = head_after(model, "block_1")
    mean = tiny()
    mean_head = head_after(mean, "block_1")
    tokens = np.random.default_rng(0).normal(size=(2, 4, 16)).astype("float32")
    swapped = tokens[:, [1, 0, 2, 3]]
    assert not np.allclose(to_numpy(head(tokens)[0]), to_numpy(head(swapped)[0]))
    np.testing.assert_allclose(
        to_numpy(mean_head(tokens)[0]), to_numpy(mean_head(swapped)[0]), rtol=1e-5
    )


def _exact_gelu(h):
    return 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))


def test_tower_batch_norm_and_dropout_match_a_numpy_reference():
    model = tiny(tower_units=(8,), tower_batch_norm=True, tower_dropout=0.5)
    bn = model.get_layer("click_tower_0_bn")
    rng = np.random.default_rng(1)
    gamma, beta, mean, var = (rng.normal(size=8).astype("float32") for _ in range(4))
    var = np.abs(var) + 0.5
    bn.set_weights([gamma, beta, mean, var])
    head = head_after(model, "block_1")
    tokens = rng.normal(size=(3, 4, 16)).astype("float32")
    w0, b0 = model.get_layer("click_tower_0").get_weights()
    w1, b1 = model.get_layer("click").get_weights()
    h = tokens.mean(axis=1) @ w0 + b0
    h = gamma * (h - mean) / np.sqrt(var + bn.epsilon) + beta
    h = _exact_gelu(h)
    expected = 1 / (1 + np.exp(-(h @ w1 + b1)))
    # inference: moving statistics, no dropout
    assert_all_close(to_numpy(head(tokens, training=False)), expected, atol=1e-5)
    # training: dropout is active (and batch statistics are used), so the output differs
    assert not np.allclose(to_numpy(head(tokens, training=True)), expected, atol=1e-3)
    assert model.get_layer("click_tower_0_dropout").rate == 0.5


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_zero_layers_feeds_the_tokens_straight_to_the_towers(activation):
    model = kr.build_rankmixer(
        SPECS, 4, 16, 0, 2, tower_units=(8,), pooling="flatten", tower_activation=activation
    )
    assert not [layer for layer in model.backbone.layers if layer.name.startswith("block_")]
    assert model.backbone.get_layer("flatten_tokens").input is model.get_layer("tokenizer").output
    x = batch(3)
    tokens = to_numpy(keras.Model(model.inputs, model.get_layer("tokenizer").output)(x))
    assert tokens.shape == (3, 4, 16)
    w0, b0 = model.get_layer("click_tower_0").get_weights()
    w1, b1 = model.get_layer("click").get_weights()
    h = tokens.reshape(3, -1) @ w0 + b0
    h = _exact_gelu(h) if activation == "gelu" else np.maximum(h, 0)
    expected = 1 / (1 + np.exp(-(h @ w1 + b1)))
    assert_all_close(model.predict(x, verbose=0)["click"], expected, atol=1e-5)


def test_presets():
    assert set(kr.PRESETS) >= {"tiny", "small", "rankmixer_100m", "rankmixer_1b"}
    with pytest.raises(ValueError, match="unknown preset"):
        kr.get_preset("huge")

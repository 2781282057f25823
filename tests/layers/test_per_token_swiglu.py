"""PerTokenSwiGLU against a NumPy loop over tokens; small init, shared, round trips, jit fit.

Tiny shapes, mostly the same (2, 3, 4) input, so eager JAX reuses its compiled ops."""

import keras
import numpy as np
import pytest
from helpers import (
    assert_all_close,
    assert_gradients_reach_all,
    config_round_trip,
    keras_file_round_trip,
    random_tokens,
    to_numpy,
)
from tokenmixer_reference import jit_fit_changes_weights, randomize, swiglu_layer

from keras_rankmixer.layers import PerTokenSwiGLU
from keras_rankmixer.layers.initializers import per_token_glorot_uniform


def test_matches_numpy_loop_over_tokens():
    x = random_tokens(2, 3, 4)
    layer = PerTokenSwiGLU(hidden_ratio=2)
    layer.build(x.shape)
    randomize(layer)
    assert tuple(layer.gate_up_kernel.shape) == (3, 4, 16)
    assert tuple(layer.gate_up_bias.shape) == (3, 16)
    assert tuple(layer.down_kernel.shape) == (3, 8, 4)
    assert tuple(layer.down_bias.shape) == (3, 4)
    y = layer(x)
    assert_all_close(y, swiglu_layer(layer, x), atol=1e-5)  # gate = first half of the kernel


def test_tokens_are_independent():
    x = random_tokens(2, 3, 4)
    layer = PerTokenSwiGLU(hidden_ratio=2)
    y1 = to_numpy(layer(x))
    x2 = x.copy()
    x2[:, 2] += 1.0
    y2 = to_numpy(layer(x2))
    assert not np.allclose(y1[:, 2], y2[:, 2])
    np.testing.assert_allclose(np.delete(y1, 2, 1), np.delete(y2, 2, 1), atol=1e-6)


def test_shared_is_one_swiglu_for_every_token():
    x = random_tokens(2, 3, 4)
    layer = PerTokenSwiGLU(hidden_ratio=2, shared=True)
    layer.build(x.shape)
    randomize(layer, seed=3)
    assert tuple(layer.gate_up_kernel.shape) == (4, 16) and tuple(layer.down_bias.shape) == (4,)
    assert_all_close(layer(x), swiglu_layer(layer, x), atol=1e-5)


def test_hidden_dim_overrides_ratio_and_no_bias():
    layer = PerTokenSwiGLU(hidden_ratio=4, hidden_dim=5, use_bias=False)
    x = random_tokens(2, 3, 6)
    y = layer(x)
    assert tuple(layer.gate_up_kernel.shape) == (3, 6, 10) and len(layer.weights) == 2
    assert layer.gate_up_bias is None
    assert_all_close(y, swiglu_layer(layer, x), atol=1e-5)


@pytest.mark.parametrize("scale", [0.01, 0.5])
def test_down_init_scale_multiplies_the_plain_initializer(scale):
    plain = PerTokenSwiGLU(hidden_ratio=2, kernel_initializer=per_token_glorot_uniform(seed=7))
    small = PerTokenSwiGLU(
        hidden_ratio=2, kernel_initializer=per_token_glorot_uniform(seed=7), down_init_scale=scale
    )
    plain.build((None, 3, 4))
    small.build((None, 3, 4))
    assert_all_close(small.gate_up_kernel, to_numpy(plain.gate_up_kernel), atol=0, rtol=0)
    assert_all_close(small.down_kernel, scale * to_numpy(plain.down_kernel), atol=1e-8, rtol=1e-6)
    assert np.abs(to_numpy(plain.down_kernel)).max() > 0.1  # the plain draw is not tiny


def test_small_init_output_is_small():
    x = random_tokens(2, 3, 4)
    small = PerTokenSwiGLU(hidden_ratio=2, down_init_scale=0.01)
    plain = PerTokenSwiGLU(hidden_ratio=2)
    ratio = np.abs(to_numpy(small(x))).mean() / np.abs(to_numpy(plain(x))).mean()
    assert ratio < 0.05, ratio


def test_gradients_reach_every_weight():
    layer = PerTokenSwiGLU(hidden_ratio=2, down_init_scale=0.01, bias_initializer="ones")
    assert_gradients_reach_all(layer, random_tokens(2, 3, 4))


def test_flops_per_sample():
    layer = PerTokenSwiGLU(hidden_ratio=2)
    layer.build((None, 3, 4))
    assert layer.flops_per_sample() == 2 * 3 * (4 * 16) + 2 * 3 * (8 * 4)


def test_config_and_keras_file_round_trip(tmp_path):
    x = random_tokens(2, 3, 4)
    layer = PerTokenSwiGLU(hidden_dim=6, down_init_scale=0.05, shared=False, name="swiglu")
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, layer(inputs))
    randomize(layer)
    clone = config_round_trip(layer)
    assert clone.get_config() == layer.get_config()
    assert clone.down_init_scale == 0.05 and clone.hidden_dim == 6
    loaded = keras_file_round_trip(model, tmp_path)
    assert_all_close(loaded(x), to_numpy(model(x)), atol=1e-6)


def test_mixed_bfloat16():
    layer = PerTokenSwiGLU(hidden_ratio=2, dtype="mixed_bfloat16")
    y = layer(random_tokens(2, 3, 4))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert layer.gate_up_kernel.dtype == "float32"
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(y, "float32"))))


def test_jit_compiled_fit_step():
    inputs = keras.Input((3, 4))
    h = PerTokenSwiGLU(hidden_ratio=2, down_init_scale=0.01)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(h)))
    jit_fit_changes_weights(model, random_tokens(4, 3, 4), np.ones((4, 1), "float32"))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"hidden_ratio": 0}, "hidden_ratio"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"down_init_scale": 0}, "down_init_scale"),
        ({"down_init_scale": -0.01}, "down_init_scale"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PerTokenSwiGLU(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="PerTokenSwiGLU"):
        PerTokenSwiGLU()(np.ones((2, 4), "float32"))

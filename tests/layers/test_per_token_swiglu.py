"""PerTokenSwiGLU against a NumPy loop over tokens; small init, shared, round trips, jit fit.

Tiny shapes, mostly the same (2, 3, 4) input, so eager JAX reuses its compiled ops."""

import keras
import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import assert_round_trips, assert_tokens_independent, jit_fit_layer, randomize
from tokenmixer_reference import swiglu_layer

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


@pytest.mark.parametrize("use_bias", [True, False])
def test_serving_spelling_with_split_gate_up_equals_the_reference(use_bias):
    """`cpu_serving_graph("swiglu")` (gate and up as two matmuls on the kernel's halves) gives
    the NumPy reference's output, eagerly and traced with a dynamic batch; a no-op off TF."""
    from keras_rankmixer.layers.per_token_ffn import cpu_serving_graph

    x = random_tokens(5, 3, 4)
    layer = PerTokenSwiGLU(hidden_ratio=2, use_bias=use_bias)
    layer.build(x.shape)
    randomize(layer, seed=5)
    expected = swiglu_layer(layer, x)
    with cpu_serving_graph("swiglu"):
        assert_all_close(layer(x), expected, atol=1e-5)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            fn = tf.function(layer, input_signature=[tf.TensorSpec((None, 3, 4), tf.float32)])
            ops = fn.get_concrete_function().graph.get_operations()
            sliced = [op.inputs[0].shape for op in ops if op.type == "StridedSlice"]
            assert sliced and all(shape.is_fully_defined() for shape in sliced)  # weights only
            assert_all_close(fn(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_tokens_are_independent():
    assert_tokens_independent(PerTokenSwiGLU(hidden_ratio=2), random_tokens(2, 3, 4), token=2)


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
    layer = PerTokenSwiGLU(hidden_dim=6, down_init_scale=0.05, shared=False, name="swiglu")
    clone = assert_round_trips(layer, random_tokens(2, 3, 4), tmp_path, atol=1e-6)
    assert clone.down_init_scale == 0.05 and clone.hidden_dim == 6


def test_mixed_bfloat16():
    layer = PerTokenSwiGLU(hidden_ratio=2, dtype="mixed_bfloat16")
    y = layer(random_tokens(2, 3, 4))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert layer.gate_up_kernel.dtype == "float32"
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(y, "float32"))))


def test_jit_compiled_fit_step():
    jit_fit_layer(PerTokenSwiGLU(hidden_ratio=2, down_init_scale=0.01), random_tokens(4, 3, 4))


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

import math

import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import assert_tokens_independent, clone_with_weights

from keras_rankmixer.layers import PerTokenFFN


def gelu(x):
    """Exact (erf) GELU, Keras' default."""
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def gelu_tanh(x):
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016)."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def numpy_ffn(x, k1, b1, k2, b2, act=gelu):
    """Eqs. 6-7 as a loop over tokens: v_t = W2_t GELU(W1_t s_t + b1_t) + b2_t."""
    out = np.zeros_like(x)
    for t in range(x.shape[1]):
        h = act(x[:, t] @ k1[t] + b1[t])
        out[:, t] = h @ k2[t] + b2[t]
    return out


def test_matches_numpy_loop_over_tokens():
    x = random_tokens(3, 4, 8)
    ffn = PerTokenFFN(hidden_ratio=2, bias_initializer="random_normal")
    y = ffn(x)
    assert tuple(ffn.kernel_1.shape) == (4, 8, 16)
    assert tuple(ffn.bias_1.shape) == (4, 16)
    assert tuple(ffn.kernel_2.shape) == (4, 16, 8)
    assert tuple(ffn.bias_2.shape) == (4, 8)
    weights = [to_numpy(w) for w in (ffn.kernel_1, ffn.bias_1, ffn.kernel_2, ffn.bias_2)]
    assert_all_close(y, numpy_ffn(x, *weights), atol=1e-5)


def test_gelu_tanh_matches_numpy_and_survives_the_config_round_trip():
    x = 3 * random_tokens(3, 4, 8)  # wide enough that erf and tanh GELU differ
    ffn = PerTokenFFN(hidden_ratio=2, activation="gelu_tanh", bias_initializer="random_normal")
    y = ffn(x)
    weights = [to_numpy(w) for w in (ffn.kernel_1, ffn.bias_1, ffn.kernel_2, ffn.bias_2)]
    assert_all_close(y, numpy_ffn(x, *weights, act=gelu_tanh), atol=1e-4)
    assert np.max(np.abs(to_numpy(y) - numpy_ffn(x, *weights))) > 1e-4  # not the erf form
    assert_all_close(clone_with_weights(ffn, x)(x), y)


def test_tokens_are_independent():
    """Changing token 0's input changes only token 0's output (no mixing inside the FFN)."""
    assert_tokens_independent(PerTokenFFN(hidden_ratio=1), random_tokens(2, 4, 8), token=0)


def test_hidden_dim_overrides_ratio_and_no_bias():
    ffn = PerTokenFFN(hidden_ratio=4, hidden_dim=5, use_bias=False)
    ffn(random_tokens(1, 3, 6))
    assert tuple(ffn.kernel_1.shape) == (3, 6, 5)
    assert ffn.bias_1 is None and len(ffn.weights) == 2


def test_shared_ffn_applies_one_mlp_to_every_token():
    x = random_tokens(2, 3, 4)
    x[:, 1] = x[:, 0]
    ffn = PerTokenFFN(hidden_ratio=2, shared=True)
    y = to_numpy(ffn(x))
    assert tuple(ffn.kernel_1.shape) == (4, 8)
    np.testing.assert_allclose(y[:, 0], y[:, 1], atol=1e-6)


def test_per_token_initialisation_scale():
    """Each token's matrix gets Glorot limits from its own fans, not fans multiplied by T."""
    ffn = PerTokenFFN(hidden_ratio=4)
    ffn.build((None, 64, 32))
    k1 = to_numpy(ffn.kernel_1)
    limit = math.sqrt(6 / (32 + 128))
    assert k1.max() <= limit and k1.max() > 0.9 * limit


def test_gradients_reach_every_weight():
    assert_gradients_reach_all(PerTokenFFN(hidden_ratio=2), random_tokens(2, 3, 4))


def test_flops_per_sample():
    ffn = PerTokenFFN(hidden_ratio=2)
    ffn.build((None, 3, 4))
    assert ffn.flops_per_sample() == 2 * 2 * 3 * 4 * 8


def test_config_round_trip_keeps_outputs():
    x = random_tokens(2, 3, 4)
    ffn = PerTokenFFN(hidden_ratio=1.5, activation="relu", use_bias=False, name="f")
    y = ffn(x)
    clone = clone_with_weights(ffn, x)
    assert clone.get_config() == ffn.get_config()
    assert_all_close(clone(x), y)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_ratio": 0}, "hidden_ratio"),
        ({"hidden_ratio": -1.0}, "hidden_ratio"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"activation": "bogus"}, "`activation` must be"),
        ({"activation": 3}, "`activation` must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerTokenFFN(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="num_tokens"):
        PerTokenFFN()(np.ones((2, 8), "float32"))


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_tanh"])
def test_serving_spelling_matches_numpy_and_keeps_weights(activation):
    """`cpu_serving_graph("ffn")` (per-token 2-D matmuls, TF only; a no-op elsewhere) computes
    Eqs. 6-7 with the same weights, inside a traced function and with a residual."""
    import keras

    from keras_rankmixer.layers.per_token_ffn import cpu_serving_graph

    x = random_tokens(5, 4, 8)
    r = random_tokens(5, 4, 8, seed=3)
    ffn = PerTokenFFN(hidden_ratio=2, activation=activation, bias_initializer="random_normal")
    plain = to_numpy(ffn(x))
    names = sorted(w.path for w in ffn.weights)
    act = {"gelu": gelu, "relu": lambda v: np.maximum(v, 0), "gelu_tanh": gelu_tanh}[activation]
    k1, b1, k2, b2 = (to_numpy(w) for w in (ffn.kernel_1, ffn.bias_1, ffn.kernel_2, ffn.bias_2))
    expected = numpy_ffn(x, k1, b1, k2, b2, act)
    with cpu_serving_graph("ffn"):
        served = to_numpy(ffn(x))
        served_residual = to_numpy(ffn(x, residual=r))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            traced = tf.function(lambda v: ffn(v, residual=v))(tf.constant(x)).numpy()
            assert_all_close(traced, expected + x, atol=1e-5)
    assert_all_close(plain, expected, atol=1e-5)
    assert_all_close(served, expected, atol=1e-5)
    assert_all_close(served_residual, expected + r, atol=1e-5)
    assert sorted(w.path for w in ffn.weights) == names  # no new or renamed weights

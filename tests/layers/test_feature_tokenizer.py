import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, config_round_trip, to_numpy

from keras_rankmixer.layers import FeatureTokenizer


def numpy_tokenize(groups, kernel, bias, num_tokens):
    """Eq. 2: concat, zero-pad to a multiple of T, cut into T slices, project slice i with W_i."""
    e = np.concatenate(groups, axis=-1)
    width = -(-e.shape[1] // num_tokens)
    e = np.pad(e, [(0, 0), (0, width * num_tokens - e.shape[1])])
    out = []
    for i in range(num_tokens):
        s = e[:, i * width : (i + 1) * width]
        w = kernel if kernel.ndim == 2 else kernel[i]
        b = bias if bias.ndim == 1 else bias[i]
        out.append(s @ w + b)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("widths,tokens", [([6, 5], 4), ([8], 4), ([3, 3, 3], 2), ([1], 3)])
def test_slicing_padding_projection_match_numpy(widths, tokens):
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=(3, w)).astype("float32") for w in widths]
    tok = FeatureTokenizer(tokens, 5, bias_initializer="random_normal")
    y = tok(groups)
    total = sum(widths)
    assert tok.slice_dim == -(-total // tokens)
    assert tok.padding == tok.slice_dim * tokens - total
    assert tuple(y.shape) == (3, tokens, 5)
    expected = numpy_tokenize(groups, to_numpy(tok.kernel), to_numpy(tok.bias), tokens)
    assert_all_close(y, expected, atol=1e-5)


def test_list_and_concatenated_inputs_agree():
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")]
    tok = FeatureTokenizer(3, 4)
    assert_all_close(tok(groups), tok(np.concatenate(groups, -1)))


def test_slices_use_their_own_projection():
    tok = FeatureTokenizer(2, 3)
    x = np.zeros((1, 4), "float32")
    x[0, 0] = 1.0  # only slice 0 is non-zero
    y = to_numpy(tok(x))
    np.testing.assert_allclose(
        y[0, 0], to_numpy(tok.kernel)[0, 0] + to_numpy(tok.bias)[0], atol=1e-6
    )
    np.testing.assert_allclose(y[0, 1], to_numpy(tok.bias)[1], atol=1e-6)


def test_shared_projection():
    rng = np.random.default_rng(2)
    groups = [rng.normal(size=(2, 6)).astype("float32")]
    tok = FeatureTokenizer(3, 4, shared_projection=True)
    y = tok(groups)
    assert tuple(tok.kernel.shape) == (2, 4)
    assert_all_close(y, numpy_tokenize(groups, to_numpy(tok.kernel), to_numpy(tok.bias), 3))


def test_gradients_and_config():
    tok = FeatureTokenizer(2, 4, name="t")
    assert_gradients_reach_all(tok, np.ones((2, 5), "float32"))
    clone = config_round_trip(tok)
    assert clone.get_config() == tok.get_config()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_tokens": 0, "token_dim": 4}, "num_tokens"),
        ({"num_tokens": 2, "token_dim": 1.5}, "token_dim"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureTokenizer(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="width"):
        FeatureTokenizer(2, 4)(np.ones((2, 3, 4), "float32"))

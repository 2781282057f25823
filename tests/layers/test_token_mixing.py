import numpy as np
import pytest
from helpers import assert_all_close, config_round_trip, random_tokens

from keras_rankmixer.layers import TokenMixing


def numpy_token_mixing(x: np.ndarray, heads: int) -> np.ndarray:
    """Eqs. 3-5 literally: split each token into H heads; output token h = concat_t x_t^h."""
    batch, tokens, dim = x.shape
    width = dim // heads
    out = np.zeros((batch, heads, tokens * width), x.dtype)
    for b in range(batch):
        for h in range(heads):
            out[b, h] = np.concatenate(
                [x[b, t, h * width : (h + 1) * width] for t in range(tokens)]
            )
    return out


@pytest.mark.parametrize("tokens,dim,heads", [(4, 8, None), (4, 8, 2), (3, 12, 6), (6, 6, 1)])
def test_matches_numpy_reference(tokens, dim, heads):
    x = random_tokens(2, tokens, dim)
    y = TokenMixing(num_heads=heads)(x)
    expected = numpy_token_mixing(x, heads or tokens)
    assert tuple(y.shape) == expected.shape
    assert_all_close(y, expected, atol=0, rtol=0)


def test_default_heads_is_an_involution():
    x = random_tokens(3, 5, 10)
    layer = TokenMixing()
    assert_all_close(layer(layer(x)), x, atol=0, rtol=0)
    assert not np.allclose(np.asarray(layer(x)), x)


def test_output_shape_when_heads_differ_from_tokens():
    assert TokenMixing(num_heads=2).compute_output_shape((None, 4, 8)) == (None, 2, 16)


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        TokenMixing(num_heads=3)(random_tokens(1, 4, 8))
    with pytest.raises(ValueError, match="rank 3"):
        TokenMixing()(np.ones((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_heads"):
        TokenMixing(num_heads=0)
    with pytest.raises(ValueError, match="num_heads"):
        TokenMixing(num_heads=2.5)


def test_config_round_trip():
    layer = config_round_trip(TokenMixing(num_heads=2, name="tm"))
    assert layer.num_heads == 2 and layer.name == "tm"

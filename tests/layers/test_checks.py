"""The shared argument and token-shape checks (`keras_rankmixer.layers._checks`)."""

import keras
import pytest

from keras_rankmixer.layers import _checks
from keras_rankmixer.layers.initializers import per_token_glorot_uniform


@pytest.mark.parametrize("value", [0, -1, "2", True, None])
def test_check_positive_rejects_and_names_argument(value):
    with pytest.raises(ValueError, match=r"`width` must be a positive number, got width="):
        _checks.check_positive("width", value)


def test_check_positive_integer_and_none():
    _checks.check_positive("n", None, allow_none=True)
    _checks.check_positive("n", 3, integer=True)
    with pytest.raises(ValueError, match="positive int"):
        _checks.check_positive("n", 2.5, integer=True)


def test_check_rate_bounds():
    _checks.check_rate("dropout", 0.0)
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValueError, match=r"`dropout` must be a number in \[0, 1\)"):
            _checks.check_rate("dropout", bad)


def test_check_tokens_shape():
    assert _checks.check_tokens_shape("L", (None, 3, 5)) == (3, 5)
    for bad in [(None, 5), (None, None, 5), (None, 3, None), (None, 2, 3, 4)]:
        with pytest.raises(ValueError, match=r"^L expects input of shape \(batch, num_tokens"):
            _checks.check_tokens_shape("L", bad)


def test_per_token_initializer_default_and_passthrough():
    default = _checks.per_token_initializer(None)
    assert isinstance(default, type(per_token_glorot_uniform()))
    assert default.get_config()["input_axes"] == [-2]
    assert isinstance(_checks.per_token_initializer("zeros"), keras.initializers.Zeros)

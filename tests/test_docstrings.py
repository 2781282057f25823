"""The docstring examples of the core modules run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "keras_rankmixer.layers.token_mixing",
    "keras_rankmixer.layers.per_token_ffn",
    "keras_rankmixer.layers.feature_tokenizer",
    "keras_rankmixer.layers.rankmixer_block",
    "keras_rankmixer.layers.categorical_embedding",
    "keras_rankmixer.layers.numeric_embedding",
    "keras_rankmixer.layers.initializers",
    "keras_rankmixer.layers.activations",
    "keras_rankmixer.features",
    "keras_rankmixer.flops",
    "keras_rankmixer.models.rankmixer",
    "keras_rankmixer.training",
    "keras_rankmixer.data.synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0

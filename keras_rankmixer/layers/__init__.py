"""RankMixer layers, one per file."""

from keras_rankmixer.layers.activations import gelu_tanh
from keras_rankmixer.layers.categorical_embedding import CategoricalEmbedding
from keras_rankmixer.layers.feature_tokenizer import FeatureTokenizer
from keras_rankmixer.layers.group_tokenizer import GroupTokenizer, SharedMLPTokenizer
from keras_rankmixer.layers.numeric_embedding import NumericEmbedding
from keras_rankmixer.layers.per_token_ffn import PerTokenFFN
from keras_rankmixer.layers.per_token_router import PerTokenRouter
from keras_rankmixer.layers.per_token_swiglu import PerTokenSwiGLU
from keras_rankmixer.layers.rankmixer_block import RankMixerBlock
from keras_rankmixer.layers.sparse_moe import SparseMoE
from keras_rankmixer.layers.token_mixing import TokenMixing
from keras_rankmixer.layers.token_readout import TokenReadout
from keras_rankmixer.layers.tokenmixer_large_block import TokenMixerLargeBlock
from keras_rankmixer.layers.tokenmixer_moe import TokenMixerMoE

__all__ = [
    "CategoricalEmbedding",
    "FeatureTokenizer",
    "GroupTokenizer",
    "NumericEmbedding",
    "PerTokenFFN",
    "PerTokenRouter",
    "PerTokenSwiGLU",
    "RankMixerBlock",
    "SharedMLPTokenizer",
    "SparseMoE",
    "TokenMixerLargeBlock",
    "TokenMixerMoE",
    "TokenMixing",
    "TokenReadout",
    "gelu_tanh",
]

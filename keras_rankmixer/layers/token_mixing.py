"""Parameter-free multi-head token mixing (RankMixer, Eqs. 3-5)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class TokenMixing(keras.layers.Layer):
    """Multi-head token mixing: exchange information between tokens without parameters.

    Every token `x_t` (width D) is split into H heads of width D/H,
    `x_t = [x_t^1 | ... | x_t^H]`, and output token h is the concatenation over all T tokens
    of their h-th head, `s^h = [x_1^h | x_2^h | ... | x_T^h]` (Eqs. 3-5). The output has H
    tokens of width `T * D / H`. With `H = T` (the default, and the paper's setting) the
    output has the input's shape and the operation is its own inverse.

    In tensor form: reshape `(B, T, H, D/H)`, swap axes 1 and 2, reshape `(B, H, T*D/H)`.

    **Revert** (TokenMixer-Large). For any H, the inverse of `TokenMixing(num_heads=H)` on a
    `(B, T, D)` input is `TokenMixing(num_heads=T)` applied to its `(B, H, T*D/H)` output: it
    cuts each of the H tokens into T pieces of width D/H and gathers piece t of every head
    back into token t, giving `(B, T, D)` again. `TokenMixerLargeBlock` uses this pair.

    Args:
        num_heads: Number of heads H. `None` (default) means H = T, the number of input tokens.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, T, D)`. Output shape: `(batch, H, T * D / H)`.

    Example:

    >>> import numpy as np
    >>> x = np.random.rand(2, 4, 8).astype("float32")
    >>> y = TokenMixing()(x)
    >>> tuple(y.shape)
    (2, 4, 8)
    >>> np.allclose(TokenMixing()(y), x)
    True
    >>> mixed = TokenMixing(num_heads=2)(x)  # H = 2 tokens of width T * D / H = 16
    >>> tuple(mixed.shape), bool(np.allclose(TokenMixing(num_heads=4)(mixed), x))  # revert
    ((2, 2, 16), True)

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.3, Eqs. 3-5.
    """

    def __init__(self, num_heads: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_heads is not None and (
            isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1
        ):
            raise ValueError(
                f"`num_heads` must be a positive int or None (H = T), got num_heads={num_heads!r}."
            )
        self.num_heads = num_heads
        self.supports_masking = False

    def _heads(self, input_shape) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise ValueError(
                "TokenMixing expects input of rank 3 (batch, num_tokens, token_dim), "
                f"got shape {tuple(input_shape)}."
            )
        num_tokens, dim = input_shape[1], input_shape[2]
        if num_tokens is None or dim is None:
            raise ValueError(
                f"TokenMixing needs static num_tokens and token_dim, got shape {tuple(input_shape)}."
            )
        heads = self.num_heads or num_tokens
        if dim % heads != 0:
            raise ValueError(
                f"TokenMixing: token_dim D={dim} must be divisible by num_heads H={heads} "
                f"(input shape {tuple(input_shape)})."
            )
        return num_tokens, dim, heads

    def build(self, input_shape) -> None:
        self._heads(input_shape)
        self.built = True

    def call(self, inputs):
        num_tokens, dim, heads = self._heads(inputs.shape)
        head_dim = dim // heads
        x = ops.reshape(inputs, (-1, num_tokens, heads, head_dim))
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, (-1, heads, num_tokens * head_dim))

    def compute_output_shape(self, input_shape):
        num_tokens, dim, heads = self._heads(input_shape)
        return (input_shape[0], heads, num_tokens * dim // heads)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config

"""Per-token feed-forward network (RankMixer, Eqs. 6-7)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_positive, check_tokens_shape, per_token_initializer
from keras_rankmixer.layers.activations import get_activation


def resolve_hidden_dim(dim: int, hidden_ratio: float, hidden_dim: int | None) -> int:
    """Hidden width of a (per-token) FFN: `hidden_dim`, else `round(hidden_ratio * dim)`."""
    return int(hidden_dim) if hidden_dim is not None else max(1, int(round(hidden_ratio * dim)))


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class PerTokenFFN(keras.layers.Layer):
    """Per-token FFN: every token has its own two-layer MLP.

    For token t: `v_t = W2_t act(W1_t s_t + b1_t) + b2_t` with `W1_t` of shape `(D, H_ffn)`
    and `W2_t` of shape `(H_ffn, D)` (Eqs. 6-7). All T MLPs run as two batched matmuls
    (`btd,tdh->bth` and `bth,thd->btd`), so T separate MLPs cost exactly as much as one MLP
    applied T times, while each token's feature subspace gets its own parameters.

    Weights: `kernel_1` `(T, D, H_ffn)`, `bias_1` `(T, H_ffn)`, `kernel_2` `(T, H_ffn, D)`,
    `bias_2` `(T, D)`, with `H_ffn = hidden_dim` or `round(hidden_ratio * D)`.
    With `shared=True` (the paper's Table 2 ablation "shared FFN") one MLP serves every
    token and the weights lose their leading T axis.

    Args:
        hidden_ratio: Hidden width as a multiple k of the token width D. Defaults to 4.
        hidden_dim: Explicit hidden width; overrides `hidden_ratio` when set.
        activation: Activation between the two matmuls: a Keras activation name or callable,
            or `"gelu_tanh"` (the tanh-approximated GELU, faster on GPUs). Defaults to
            `"gelu"` (exact).
        use_bias: Whether to add `bias_1` and `bias_2`.
        kernel_initializer: Initializer for both kernels. The default,
            `per_token_glorot_uniform()`, takes the fans of each token's own matrix.
        bias_initializer: Initializer for both biases.
        kernel_regularizer: Optional regularizer for both kernels.
        bias_regularizer: Optional regularizer for both biases.
        shared: Share one MLP across tokens (ablation). Defaults to False.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> ffn = PerTokenFFN(hidden_ratio=2)
    >>> y = ffn(np.ones((3, 4, 8), "float32"))
    >>> tuple(y.shape), tuple(ffn.kernel_1.shape), tuple(ffn.kernel_2.shape)
    ((3, 4, 8), (4, 8, 16), (4, 16, 8))

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.4, Eqs. 6-7.
    """

    def __init__(
        self,
        hidden_ratio: float = 4,
        hidden_dim: int | None = None,
        activation: str | Any = "gelu",
        use_bias: bool = True,
        kernel_initializer: str | Any = None,
        bias_initializer: str | Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        shared: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("hidden_ratio", hidden_ratio)
        check_positive("hidden_dim", hidden_dim, allow_none=True, integer=True)
        self.hidden_ratio = hidden_ratio
        self.hidden_dim = hidden_dim
        self.activation = get_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = per_token_initializer(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.shared = bool(shared)

    def build(self, input_shape) -> None:
        num_tokens, dim = check_tokens_shape("PerTokenFFN", input_shape)
        hidden = resolve_hidden_dim(dim, self.hidden_ratio, self.hidden_dim)
        self.num_tokens, self.token_dim, self.ffn_dim = num_tokens, dim, hidden
        lead = () if self.shared else (num_tokens,)
        self.kernel_1 = self.add_weight(
            name="kernel_1",
            shape=lead + (dim, hidden),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.kernel_2 = self.add_weight(
            name="kernel_2",
            shape=lead + (hidden, dim),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias_1 = self.add_weight(
                name="bias_1",
                shape=lead + (hidden,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
            self.bias_2 = self.add_weight(
                name="bias_2",
                shape=lead + (dim,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias_1 = self.bias_2 = None
        self.built = True

    def call(self, inputs):
        if self.shared:
            hidden = ops.matmul(inputs, self.kernel_1)
            if self.bias_1 is not None:
                hidden = hidden + self.bias_1
            out = ops.matmul(self.activation(hidden), self.kernel_2)
            return out + self.bias_2 if self.bias_2 is not None else out
        # Token-major layout: one transpose of the (B, T, D) input in and one of the output
        # out; both batched matmuls ((T, B, D) @ (T, D, H), then (T, B, H) @ (T, H, D)) and the
        # bias + activation epilogue run on (T, B, .) with T as the leading batch axis, so the
        # k-times larger hidden activation is never transposed (the einsum form
        # `btd,tdh->bth` transposes it on the way in and out of each matmul). Same math and
        # weights; measured in docs/performance.md.
        x = ops.transpose(inputs, (1, 0, 2))
        hidden = ops.matmul(x, self.kernel_1)
        if self.bias_1 is not None:
            hidden = hidden + ops.expand_dims(self.bias_1, 1)
        hidden = self.activation(hidden)
        out = ops.matmul(hidden, self.kernel_2)
        if self.bias_2 is not None:
            out = out + ops.expand_dims(self.bias_2, 1)
        return ops.transpose(out, (1, 0, 2))

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs per sample (2 per multiply-add): `4 * T * D * H_ffn`."""
        return 4 * self.num_tokens * self.token_dim * self.ffn_dim

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "hidden_ratio": self.hidden_ratio,
                "hidden_dim": self.hidden_dim,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "shared": self.shared,
            }
        )
        return config

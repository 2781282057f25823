"""MLP tokenizers of TokenMixer-Large: one MLP per feature group (+ a global token), or one
shared MLP over all embeddings cut into T tokens (RankElastor)."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import (
    check_group_widths,
    check_positive,
    check_rate,
    clone_initializer,
)
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.types import ActivationLike, InitializerLike


class _MLP(keras.layers.Layer):
    """`Dense(hidden) -> activation -> Dropout -> Dense(out)`; the tokenizers' MLP."""

    def __init__(self, hidden, out, activation, dropout, use_bias, kinit, binit, **kwargs):
        super().__init__(**kwargs)

        def dense(units, name):
            return keras.layers.Dense(
                units,
                use_bias=use_bias,
                kernel_initializer=clone_initializer(kinit),
                bias_initializer=clone_initializer(binit),
                dtype=self.dtype_policy,
                name=name,
            )

        self.dense_1 = dense(hidden, "dense_1")
        self.activation = activation
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.dense_2 = dense(out, "dense_2")

    def build(self, input_shape) -> None:
        self.dense_1.build(input_shape)
        self.dense_2.build(tuple(input_shape[:-1]) + (self.dense_1.units,))
        self.built = True

    def call(self, inputs, training=None):
        h = self.dropout(self.activation(self.dense_1(inputs)), training=training)
        return self.dense_2(h)


class _MLPTokenizerBase(keras.layers.Layer):
    """Argument handling shared by the two MLP tokenizers."""

    def __init__(
        self,
        token_dim: int,
        hidden_dim: int | None = None,
        activation: ActivationLike = "gelu",
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer: InitializerLike = "glorot_uniform",
        bias_initializer: InitializerLike = "zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("token_dim", token_dim, integer=True)
        check_positive("hidden_dim", hidden_dim, allow_none=True, integer=True)
        check_rate("dropout", dropout)
        self.token_dim = token_dim
        self.hidden_dim = hidden_dim
        self.activation = get_activation(activation)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _mlp(self, in_width: int, out_width: int, name: str) -> _MLP:
        hidden = self.hidden_dim or max(in_width, self.token_dim)
        mlp = _MLP(
            hidden,
            out_width,
            self.activation,
            self.dropout,
            self.use_bias,
            self.kernel_initializer,
            self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )
        mlp.build((None, in_width))
        return mlp

    @staticmethod
    def _concat(inputs, dtype):
        if isinstance(inputs, list | tuple):
            inputs = [ops.cast(x, dtype) for x in inputs]
            return inputs, (ops.concatenate(inputs, axis=-1) if len(inputs) > 1 else inputs[0])
        inputs = ops.cast(inputs, dtype)
        return [inputs], inputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "token_dim": self.token_dim,
                "hidden_dim": self.hidden_dim,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class GroupTokenizer(_MLPTokenizerBase):
    """One token per semantic feature group, each from its own MLP, plus a global token.

    The model's group embeddings arrive as a list of G tensors `(batch, d_i)` (the
    concatenated embeddings `e_j` of the features j in group `G_i`, as `embed_groups` gives
    them). Token i is `x_i = MLP_i(concat(e_j, j in G_i))` of width D; with `global_token`
    the token `x_G = MLP_G(concat of all groups)` is put first. Output: T = G (+ 1) tokens.
    Every MLP is `Dense(hidden) -> activation -> Dropout -> Dense(D)`, hidden width
    `hidden_dim` or `max(input width, D)`.

    Unlike `FeatureTokenizer` (one fixed slicing of the concatenated embeddings), a token
    here never straddles two groups, and wide groups are compressed by their own MLP.

    Args:
        token_dim: Token width D.
        global_token: Add the global token `x_G` as token 0. Defaults to True.
        hidden_dim: Hidden width of every MLP; None means `max(input width, D)`.
        activation: MLP activation (Keras name or callable, or `"gelu_tanh"`). Defaults to
            `"gelu"`.
        dropout: Dropout after the MLP activation. Defaults to 0.
        use_bias: Whether the MLPs' Dense layers have biases.
        kernel_initializer: Dense kernel initializer.
        bias_initializer: Dense bias initializer.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input: a list of G `(batch, d_i)` tensors (or one `(batch, E)` tensor: one group).
    Output shape: `(batch, G + global_token, D)`.

    Example:

    >>> import numpy as np
    >>> tok = GroupTokenizer(token_dim=8)
    >>> x = tok([np.ones((2, 6), "float32"), np.ones((2, 5), "float32")])
    >>> tuple(x.shape), tok.num_tokens  # global token + 2 group tokens
    ((2, 3, 8), 3)

    References:
        "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial Recommenders"
        (ByteDance), arXiv:2602.06563 (per-group MLP tokenization, global token).
    """

    def __init__(self, token_dim: int, global_token: bool = True, **kwargs) -> None:
        super().__init__(token_dim, **kwargs)
        self.global_token = bool(global_token)

    def build(self, input_shape) -> None:
        widths = check_group_widths("GroupTokenizer", input_shape)
        self.group_widths = widths
        self.group_mlps = [
            self._mlp(w, self.token_dim, f"group_mlp_{i}") for i, w in enumerate(widths)
        ]
        self.global_mlp = (
            self._mlp(sum(widths), self.token_dim, "global_mlp") if self.global_token else None
        )
        self.num_tokens = len(widths) + int(self.global_token)
        self.built = True

    def call(self, inputs, training=None):
        groups, concat = self._concat(inputs, self.compute_dtype)
        tokens = [mlp(g, training=training) for mlp, g in zip(self.group_mlps, groups, strict=True)]
        if self.global_mlp is not None:
            tokens.insert(0, self.global_mlp(concat, training=training))
        return ops.stack(tokens, axis=1)

    def compute_output_shape(self, input_shape):
        widths = check_group_widths("GroupTokenizer", input_shape)
        batch = input_shape[0][0] if isinstance(input_shape[0], list | tuple) else input_shape[0]
        return (batch, len(widths) + int(self.global_token), self.token_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config["global_token"] = self.global_token
        return config


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class SharedMLPTokenizer(_MLPTokenizerBase):
    """All embeddings through one shared MLP, its output cut into T tokens of width D.

    `e = concat(group embeddings)` (width E), `z = MLP(e)` of width `T * D`, token i is
    `z[D(i-1) : D i]`. The MLP is `Dense(hidden) -> activation -> Dropout -> Dense(T*D)`,
    hidden width `hidden_dim` or `max(E, D)`. Every token sees every feature, so T can be
    chosen freely, independently of the number of fields or groups (RankElastor reports this
    helps small public datasets, where the fields are few).

    Args:
        num_tokens: Number of tokens T.
        token_dim: Token width D.
        hidden_dim: MLP hidden width; None means `max(E, D)`.
        activation, dropout, use_bias, kernel_initializer, bias_initializer: As in
            `GroupTokenizer`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input: a list of `(batch, d_i)` tensors, or one `(batch, E)` tensor.
    Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> tok = SharedMLPTokenizer(num_tokens=4, token_dim=8, hidden_dim=16)
    >>> tuple(tok([np.ones((2, 6), "float32"), np.ones((2, 5), "float32")]).shape)
    (2, 4, 8)

    References:
        RankElastor, arXiv:2605.23191 (a shared MLP before cutting into tokens).
    """

    def __init__(self, num_tokens: int, token_dim: int, **kwargs) -> None:
        super().__init__(token_dim, **kwargs)
        check_positive("num_tokens", num_tokens, integer=True)
        self.num_tokens = num_tokens

    def build(self, input_shape) -> None:
        self.input_width = sum(check_group_widths("SharedMLPTokenizer", input_shape))
        self.mlp = self._mlp(self.input_width, self.num_tokens * self.token_dim, "mlp")
        self.built = True

    def call(self, inputs, training=None):
        _, concat = self._concat(inputs, self.compute_dtype)
        z = self.mlp(concat, training=training)
        return ops.reshape(z, (-1, self.num_tokens, self.token_dim))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0] if isinstance(input_shape[0], list | tuple) else input_shape[0]
        return (batch, self.num_tokens, self.token_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config["num_tokens"] = self.num_tokens
        return config

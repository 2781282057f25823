"""Semantic feature tokenization (RankMixer, Eq. 2)."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import (
    check_group_widths,
    check_positive,
    per_token_initializer,
)
from keras_rankmixer.layers.per_token_ffn import serving_lever
from keras_rankmixer.types import InitializerLike


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class FeatureTokenizer(keras.layers.Layer):
    """Turn the concatenated feature-group embeddings into T tokens of width D.

    The group embeddings arrive in a fixed group order, as a list of `(batch, d_i)` tensors or
    one concatenated `(batch, E)` tensor. They are concatenated into `e` (width `E = sum d_i`),
    zero-padded on the right to a multiple of T, cut into T equal slices of width
    `d = ceil(E / T)`, and slice i is projected to width D: `x_i = Proj_i(e[d(i-1) : d i])`
    (Eq. 2).

    Design choice: by default each slice has **its own** projection `(d, D)` (a kernel of shape
    `(T, d, D)`). The paper leaves this open; a per-slice projection costs exactly the FLOPs of
    a shared one (it is one batched matmul), and since each slice holds different features
    (user ids in one, item statistics in another) a shared projection would force unrelated
    feature subspaces through the same map. `shared_projection=True` gives the shared variant.
    Zero padding adds no information and, with `use_bias`, the bias still gives padded slices
    a learnable offset.

    Args:
        num_tokens: Number of tokens T.
        token_dim: Token width D.
        shared_projection: One projection for all slices instead of one per slice.
        use_bias: Whether the projection has a bias.
        kernel_initializer: Projection kernel initializer (default: Glorot-uniform with the
            fans of one slice's matrix).
        bias_initializer: Bias initializer.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input: a list of `(batch, d_i)` tensors, or one `(batch, E)` tensor.
    Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> tok = FeatureTokenizer(num_tokens=4, token_dim=8)
    >>> x = tok([np.ones((2, 6), "float32"), np.ones((2, 5), "float32")])
    >>> tuple(x.shape), tok.slice_dim, tok.padding
    ((2, 4, 8), 3, 1)

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.2, Eq. 2.
    """

    def __init__(
        self,
        num_tokens: int,
        token_dim: int,
        shared_projection: bool = False,
        use_bias: bool = True,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("num_tokens", num_tokens, integer=True)
        check_positive("token_dim", token_dim, integer=True)
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.shared_projection = bool(shared_projection)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = per_token_initializer(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape) -> None:
        self.input_width = sum(check_group_widths("FeatureTokenizer", input_shape))
        self.slice_dim = -(-self.input_width // self.num_tokens)
        self.padding = self.slice_dim * self.num_tokens - self.input_width
        lead = () if self.shared_projection else (self.num_tokens,)
        self.kernel = self.add_weight(
            name="kernel",
            shape=lead + (self.slice_dim, self.token_dim),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=lead + (self.token_dim,), initializer=self.bias_initializer
            )
            if self.use_bias
            else None
        )
        self.built = True

    def call(self, inputs):
        if isinstance(inputs, list | tuple):
            inputs = ops.concatenate([ops.cast(x, self.compute_dtype) for x in inputs], axis=-1)
        if self.padding:
            inputs = ops.pad(inputs, [[0, 0], [0, self.padding]])
        if not self.shared_projection and serving_lever("tokenizer"):
            return self._call_per_slice_2d(inputs)
        slices = ops.reshape(inputs, (-1, self.num_tokens, self.slice_dim))
        if self.shared_projection:
            tokens = ops.matmul(slices, self.kernel)
        else:
            tokens = ops.einsum("btd,tdk->btk", slices, self.kernel)
        if self.bias is not None:
            tokens = tokens + self.bias
        return tokens

    def _call_per_slice_2d(self, inputs):
        """Serving spelling (`cpu_serving_graph("tokenizer")`): one 2-D `MatMul` + `BiasAdd`
        per slice, fused by TF's remapper, instead of an `Einsum` (same math and weights)."""
        import tensorflow as tf

        dtype = self.compute_dtype
        kernels = tf.unstack(ops.cast(self.kernel, dtype), axis=0)
        biases = tf.unstack(ops.cast(self.bias, dtype), axis=0) if self.bias is not None else None
        tokens = []
        for t, piece in enumerate(tf.split(inputs, self.num_tokens, axis=-1)):
            token = tf.matmul(piece, kernels[t])
            tokens.append(tf.nn.bias_add(token, biases[t]) if biases is not None else token)
        return tf.stack(tokens, axis=1)

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs per sample: `2 * T * d * D`."""
        return 2 * self.num_tokens * self.slice_dim * self.token_dim

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], list | tuple) else [input_shape]
        return (shapes[0][0], self.num_tokens, self.token_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_tokens": self.num_tokens,
                "token_dim": self.token_dim,
                "shared_projection": self.shared_projection,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

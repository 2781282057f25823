"""The RankMixer block: token mixing and per-token FFN, post-LayerNorm (Eq. 1)."""

from __future__ import annotations

import keras

from keras_rankmixer.layers._checks import check_positive, check_rate, check_tokens_shape
from keras_rankmixer.layers.per_token_ffn import PerTokenFFN, serving_lever
from keras_rankmixer.layers.token_mixing import TokenMixing
from keras_rankmixer.types import ActivationLike, InitializerLike


def fusable_layer_norm(x, gamma, beta, epsilon: float):
    """LayerNorm over the last axis in the spelling TF's remapper fuses (TensorFlow only).

    `Reshape (1, N, D, 1)` -> `FusedBatchNormV3(is_training=True, NCHW)` with unit scale and
    zero offset -> `Reshape` back -> `beta + y * gamma`: Keras 2's `LayerNormalization`, which
    grappler rewrites into one oneDNN `_MklLayerNorm` when N is not a constant (a SavedModel
    signature's batch dimension is dynamic). Same math as `keras.layers.LayerNormalization`
    (biased variance, `epsilon` inside the square root); used by `cpu_serving_graph`.
    """
    import tensorflow as tf

    shape = tf.shape(x)
    rows = tf.reduce_prod(shape[:-1])
    flat = tf.reshape(x, tf.stack([1, rows, x.shape[-1], 1]))
    ones = tf.fill(tf.stack([rows]), tf.constant(1.0, tf.float32))
    zeros = tf.fill(tf.stack([rows]), tf.constant(0.0, tf.float32))
    empty = tf.constant([], tf.float32)
    # The raw op: tf.nn.fused_batch_norm would raise epsilon to cuDNN's 1.001e-5.
    y = tf.raw_ops.FusedBatchNormV3(
        x=flat,
        scale=ones,
        offset=zeros,
        mean=empty,
        variance=empty,
        epsilon=float(epsilon),
        data_format="NCHW",
        is_training=True,
    )[0]
    y = tf.reshape(y, shape)
    return tf.cast(beta, y.dtype) + y * tf.cast(gamma, y.dtype)


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class RankMixerBlock(keras.layers.Layer):
    """One RankMixer block, post-LayerNorm (Eq. 1).

    `S = LN(TokenMixing(X) + X)`, then `X' = LN(FFN(S) + S)`, where FFN is a
    `PerTokenFFN` by default. Dropout (if any) is applied to the FFN output before the residual.

    **The FFN seam.** `ffn` accepts any layer that maps `(batch, T, D)` to `(batch, T, D)`
    and takes a `training` argument, e.g. `keras_rankmixer.layers.SparseMoE`. When it is given,
    `hidden_ratio`, `hidden_dim`, `activation` and `shared_ffn` are not used. The layer is
    serialized inside the block's config, so `.keras` files round-trip.

    **Ablations (paper Table 2).** `use_token_mixing=False` replaces the token-mixing
    output by its input, so the first sub-layer computes `S = LN(X + X)`;
    `use_residual=False` drops both skip connections; `use_layer_norm=False` drops both
    LayerNorms; `shared_ffn=True` uses one FFN for all tokens instead of one per token.

    Args:
        hidden_ratio: FFN hidden width as a multiple k of D. Defaults to 4.
        num_heads: Token-mixing heads H. Must equal T (the default, `None`) so the residual
            shapes match, as in the paper.
        dropout: Dropout rate on the FFN output. Defaults to 0.
        hidden_dim: Explicit FFN hidden width (overrides `hidden_ratio`).
        activation: FFN activation (a Keras name or callable, or `"gelu_tanh"`). Defaults to `"gelu"`.
        use_token_mixing: Ablation switch; False skips token mixing.
        use_residual: Ablation switch; False drops both residual connections.
        use_layer_norm: Ablation switch; False drops both LayerNorms.
        shared_ffn: Ablation switch; True shares one FFN across tokens.
        ffn: Optional layer replacing the per-token FFN (e.g. a `SparseMoE`).
        layer_norm_epsilon: LayerNorm epsilon.
        kernel_initializer: FFN kernel initializer (default: per-token Glorot-uniform).
        bias_initializer: FFN bias initializer.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> block = RankMixerBlock(hidden_ratio=2)
    >>> tuple(block(np.random.rand(2, 4, 8).astype("float32")).shape)
    (2, 4, 8)

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.1, Eq. 1; ablations in Table 2.
    """

    def __init__(
        self,
        hidden_ratio: float = 4,
        num_heads: int | None = None,
        dropout: float = 0.0,
        hidden_dim: int | None = None,
        activation: ActivationLike = "gelu",
        use_token_mixing: bool = True,
        use_residual: bool = True,
        use_layer_norm: bool = True,
        shared_ffn: bool = False,
        ffn: keras.layers.Layer | dict | None = None,
        layer_norm_epsilon: float = 1e-5,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("hidden_ratio", hidden_ratio)
        check_positive("layer_norm_epsilon", layer_norm_epsilon)
        check_rate("dropout", dropout)
        if isinstance(ffn, dict):
            ffn = keras.saving.deserialize_keras_object(ffn)
        if ffn is not None and not isinstance(ffn, keras.layers.Layer):
            raise ValueError(
                "`ffn` must be a keras Layer mapping (batch, T, D) to (batch, T, D) "
                f"(e.g. SparseMoE), got ffn={ffn!r}."
            )
        self.hidden_ratio = hidden_ratio
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.use_token_mixing = bool(use_token_mixing)
        self.use_residual = bool(use_residual)
        self.use_layer_norm = bool(use_layer_norm)
        self.shared_ffn = bool(shared_ffn)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._custom_ffn = ffn is not None

        self.token_mixing = TokenMixing(num_heads, dtype=self.dtype_policy, name="token_mixing")
        self.ffn = ffn or PerTokenFFN(
            hidden_ratio=hidden_ratio,
            hidden_dim=hidden_dim,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            shared=shared_ffn,
            dtype=self.dtype_policy,
            name="ffn",
        )
        self.norm_1 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm_1"
        )
        self.norm_2 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm_2"
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape) -> None:
        num_tokens, _ = check_tokens_shape("RankMixerBlock", input_shape)
        if self.num_heads not in (None, num_tokens):
            raise ValueError(
                f"RankMixerBlock needs num_heads == num_tokens (T={num_tokens}) so that "
                f"TokenMixing(X) + X is defined; got num_heads={self.num_heads}."
            )
        for layer in (self.token_mixing, self.ffn, self.norm_1, self.norm_2):
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def _sublayer(self, x, y, norm):
        if self.use_residual:
            y = y + x
        return self._norm(norm, y) if self.use_layer_norm else y

    @staticmethod
    def _norm(norm, x):
        if (
            not serving_lever("layer_norm")
            or norm.gamma is None
            or norm.beta is None
            or norm.rms_scaling
            or keras.backend.standardize_dtype(x.dtype) != "float32"
        ):
            return norm(x)
        return fusable_layer_norm(x, norm.gamma, norm.beta, norm.epsilon)

    def call(self, inputs, training=None):
        mixed = self.token_mixing(inputs) if self.use_token_mixing else inputs
        s = self._sublayer(inputs, mixed, self.norm_1)
        if (
            serving_lever("residual")
            and not training
            and self.use_residual
            and isinstance(self.ffn, PerTokenFFN)
        ):
            # Serving graph (`cpu_serving_graph`): the skip connection goes into the FFN's
            # second matmul epilogue (dropout is the identity at inference). Same math.
            y = self.ffn(s, residual=s)
            return self._norm(self.norm_2, y) if self.use_layer_norm else y
        v = self.dropout_layer(self.ffn(s, training=training), training=training)
        return self._sublayer(s, v, self.norm_2)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "hidden_ratio": self.hidden_ratio,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "hidden_dim": self.hidden_dim,
                "activation": self.activation
                if isinstance(self.activation, str)
                else keras.activations.serialize(keras.activations.get(self.activation)),
                "use_token_mixing": self.use_token_mixing,
                "use_residual": self.use_residual,
                "use_layer_norm": self.use_layer_norm,
                "shared_ffn": self.shared_ffn,
                "ffn": keras.saving.serialize_keras_object(self.ffn) if self._custom_ffn else None,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    keras.initializers.get(self.kernel_initializer)
                )
                if self.kernel_initializer is not None
                else None,
                "bias_initializer": self.bias_initializer
                if isinstance(self.bias_initializer, str)
                else keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

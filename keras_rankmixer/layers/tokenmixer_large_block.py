"""The TokenMixer-Large block: mix, per-token SwiGLU, revert, per-token SwiGLU (pre-RMSNorm)."""

from __future__ import annotations

import keras

from keras_rankmixer.layers._checks import check_positive, check_rate, check_tokens_shape
from keras_rankmixer.layers.per_token_ffn import PerTokenFFN
from keras_rankmixer.layers.per_token_swiglu import PerTokenSwiGLU
from keras_rankmixer.layers.token_mixing import TokenMixing
from keras_rankmixer.layers.tokenmixer_moe import TokenMixerMoE
from keras_rankmixer.types import InitializerLike

FFNS = ("swiglu", "gelu", "moe")
NORMS = ("pre_rms", "post_layer_norm")


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class TokenMixerLargeBlock(keras.layers.Layer):
    """One TokenMixer-Large block: every residual stays inside one token layout.

    With `Mix` the parameter-free multi-head token mixing with H heads (`TokenMixing`, H not
    tied to T) and `Revert` its inverse (`TokenMixing(num_heads=T)` on the mixed tokens):

        H      = Mix(X)                          # (H, T*D/H)
        H'     = H + F_mix(Norm_1(H))            # per-token FFN bank over the H mixed tokens
        X_rev  = Revert(H')                      # (T, D)
        X_next = X + F_rev(Norm_2(X_rev))        # per-token FFN bank over the T tokens

    `F` is a `PerTokenSwiGLU` (hidden width `hidden_ratio` times its token width, down
    projection initialised `down_init_scale` times smaller), `Norm` is RMSNorm (no mean, no
    bias). Dropout (if any) is applied to each branch `F(.)` before its residual.

    **Ablation switches** (each is one change to the block above):

    - `use_revert=False`: RankMixer's residual across layouts. `Revert` is replaced by the
      identity, so the last line becomes `X_next = X + F_rev(Norm_2(H'))`: X (token layout)
      plus a function of the mixed tokens. Needs H = T.
    - `shared_ffn=True`: each bank is one FFN shared by all its tokens.
    - `ffn="gelu"`: `PerTokenFFN` (GELU, hidden ratio `hidden_ratio`) instead of pSwiGLU;
      with `small_init` its second kernel is scaled by `down_init_scale` after it is built.
      `ffn="moe"`: a `TokenMixerMoE` (per-token sparse MoE of pSwiGLU experts, arguments in
      `moe`) in each bank.
    - `norm="post_layer_norm"`: RankMixer's post-LayerNorm, `H' = LN(H + F_mix(H))` and
      `X_next = LN(X + F_rev(X_rev))`, instead of the default `"pre_rms"`.
    - `small_init=False`: down projections get the plain initializer.

    Args:
        num_heads: Mixing heads H; None (default) means H = T. D must be divisible by H.
        hidden_ratio: FFN hidden width as a multiple n of each bank's token width (T*D/H for
            the mixing bank, D for the revert bank). Defaults to 4.
        dropout: Dropout rate on each branch output. Defaults to 0.
        use_revert: Ablation switch; False gives RankMixer's cross-layout residual.
        shared_ffn: Ablation switch; True shares one FFN per bank across tokens.
        ffn: `"swiglu"` (default), `"gelu"` or `"moe"`.
        moe: `TokenMixerMoE` keyword arguments for `ffn="moe"` (e.g.
            `{"num_experts": 8, "top_k": 2}`); its `hidden_ratio` defaults to the block's.
        norm: `"pre_rms"` (default) or `"post_layer_norm"`.
        small_init: Scale the initial down projections by `down_init_scale`. Defaults to True.
        down_init_scale: The small-init factor (> 0). Defaults to 0.01.
        norm_epsilon: Epsilon of the RMSNorm / LayerNorm.
        kernel_initializer: FFN kernel initializer (default: per-token Glorot-uniform).
        bias_initializer: FFN bias initializer.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> block = TokenMixerLargeBlock(num_heads=2, hidden_ratio=2)
    >>> x = np.random.rand(3, 4, 8).astype("float32")
    >>> tuple(block(x).shape), tuple(block.mix_ffn.gate_up_kernel.shape)
    ((3, 4, 8), (2, 16, 64))
    >>> float(np.abs(np.asarray(block(x)) - x).max()) < 0.1  # small init: close to identity
    True

    References:
        "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial Recommenders"
        (ByteDance), arXiv:2602.06563 (mixing and reverting, pSwiGLU, pre-RMSNorm, small init).
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551 (token mixing, Eqs. 3-5; the post-LN block, Eq. 1).
    """

    def __init__(
        self,
        num_heads: int | None = None,
        hidden_ratio: float = 4,
        dropout: float = 0.0,
        use_revert: bool = True,
        shared_ffn: bool = False,
        ffn: str = "swiglu",
        moe: dict | None = None,
        norm: str = "pre_rms",
        small_init: bool = True,
        down_init_scale: float = 0.01,
        norm_epsilon: float = 1e-6,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("num_heads", num_heads, allow_none=True, integer=True)
        check_positive("hidden_ratio", hidden_ratio)
        check_rate("dropout", dropout)
        if ffn not in FFNS:
            raise ValueError(f"`ffn` must be one of {FFNS}, got ffn={ffn!r}.")
        if moe is not None and not isinstance(moe, dict):
            raise ValueError(f"`moe` must be a dict of TokenMixerMoE arguments, got moe={moe!r}.")
        if moe is not None and ffn != "moe":
            raise ValueError(f'`moe` is only used with ffn="moe", got ffn={ffn!r}.')
        if ffn == "moe" and "num_experts" not in (moe or {}):
            raise ValueError(f'ffn="moe" needs `moe` with "num_experts", got moe={moe!r}.')
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got norm={norm!r}.")
        check_positive("down_init_scale", down_init_scale)
        check_positive("norm_epsilon", norm_epsilon)
        self.num_heads = num_heads
        self.hidden_ratio = hidden_ratio
        self.dropout = float(dropout)
        self.use_revert = bool(use_revert)
        self.shared_ffn = bool(shared_ffn)
        self.ffn = ffn
        self.moe = dict(moe) if moe is not None else None
        self.norm = norm
        self.small_init = bool(small_init)
        self.down_init_scale = float(down_init_scale)
        self.norm_epsilon = float(norm_epsilon)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

        self.mix = TokenMixing(num_heads, dtype=self.dtype_policy, name="mix")
        self.mix_ffn = self._make_ffn("mix_ffn")
        self.revert_ffn = self._make_ffn("revert_ffn")
        norm_class = (
            keras.layers.RMSNormalization if norm == "pre_rms" else keras.layers.LayerNormalization
        )
        self.norm_1 = norm_class(epsilon=norm_epsilon, dtype=self.dtype_policy, name="norm_1")
        self.norm_2 = norm_class(epsilon=norm_epsilon, dtype=self.dtype_policy, name="norm_2")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _make_ffn(self, name: str) -> keras.layers.Layer:
        scale = self.down_init_scale if self.small_init else None
        common = {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype_policy,
            "name": name,
        }
        if self.ffn == "swiglu":
            return PerTokenSwiGLU(
                hidden_ratio=self.hidden_ratio,
                down_init_scale=scale,
                shared=self.shared_ffn,
                **common,
            )
        if self.ffn == "gelu":
            return PerTokenFFN(hidden_ratio=self.hidden_ratio, shared=self.shared_ffn, **common)
        if self.shared_ffn:
            raise ValueError('`shared_ffn=True` is not defined for ffn="moe".')
        args = {"hidden_ratio": self.hidden_ratio, "down_init_scale": scale, **(self.moe or {})}
        args.setdefault("kernel_initializer", self.kernel_initializer)
        args.setdefault("bias_initializer", self.bias_initializer)
        try:
            return TokenMixerMoE(**args, dtype=self.dtype_policy, name=name)
        except (TypeError, ValueError) as error:  # a bad value or an unknown key in `moe`
            raise ValueError(f"`moe` (TokenMixerMoE arguments): {error}") from error

    def build(self, input_shape) -> None:
        num_tokens, dim = check_tokens_shape("TokenMixerLargeBlock", input_shape)
        heads = self.num_heads or num_tokens
        if not self.use_revert and heads != num_tokens:
            raise ValueError(
                "TokenMixerLargeBlock with use_revert=False adds X to the mixed tokens, so it "
                f"needs num_heads == num_tokens (T={num_tokens}); got num_heads={self.num_heads}."
            )
        self.num_tokens, self.token_dim = num_tokens, dim
        self.revert = TokenMixing(num_tokens, dtype=self.dtype_policy, name="revert")
        mixed_shape = self.mix.compute_output_shape(tuple(input_shape))
        self.mix.build(input_shape)
        self.revert.build(mixed_shape)
        self.mix_ffn.build(mixed_shape)
        self.norm_1.build(mixed_shape)
        self.revert_ffn.build(input_shape)
        self.norm_2.build(input_shape)
        if self.ffn == "gelu" and self.small_init:  # small init of the GELU FFN's "down" kernel
            for layer in (self.mix_ffn, self.revert_ffn):
                layer.kernel_2.assign(layer.kernel_2 * self.down_init_scale)
        self.built = True

    def _branch(self, residual, x, ffn, norm, training):
        if self.norm == "pre_rms":
            y = self.dropout_layer(ffn(norm(x), training=training), training=training)
            return residual + y
        y = self.dropout_layer(ffn(x, training=training), training=training)
        return norm(residual + y)

    def call(self, inputs, training=None):
        h = self.mix(inputs)
        h = self._branch(h, h, self.mix_ffn, self.norm_1, training)
        x_rev = self.revert(h) if self.use_revert else h
        return self._branch(inputs, x_rev, self.revert_ffn, self.norm_2, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_ratio": self.hidden_ratio,
                "dropout": self.dropout,
                "use_revert": self.use_revert,
                "shared_ffn": self.shared_ffn,
                "ffn": self.ffn,
                "moe": self.moe,
                "norm": self.norm,
                "small_init": self.small_init,
                "down_init_scale": self.down_init_scale,
                "norm_epsilon": self.norm_epsilon,
                "kernel_initializer": None
                if self.kernel_initializer is None
                else keras.initializers.serialize(keras.initializers.get(self.kernel_initializer)),
                "bias_initializer": keras.initializers.serialize(
                    keras.initializers.get(self.bias_initializer)
                ),
            }
        )
        return config

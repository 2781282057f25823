"""Per-token SwiGLU feed-forward network (TokenMixer-Large's pSwiGLU)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_positive, set_weight_settings
from keras_rankmixer.layers.per_token_ffn import _PerTokenMLP, serving_lever
from keras_rankmixer.types import InitializerLike, RegularizerLike


def scaled_initializer(initializer: Any, scale: float | None):
    """`initializer` with its values multiplied by `scale` (None or 1.0: `initializer` itself).

    Used for TokenMixer-Large's small init of down projections: the branch `F(x)` of a
    residual `x + F(x)` starts near zero, so every block starts near the identity.

    Example:

    >>> import numpy as np
    >>> init = scaled_initializer(keras.initializers.Ones(), 0.01)
    >>> round(float(np.asarray(init((2, 2))).max()), 6)
    0.01
    """
    initializer = keras.initializers.get(initializer)
    if scale is None or scale == 1.0:
        return initializer

    def init(shape, dtype=None):
        return ops.multiply(initializer(shape, dtype=dtype), ops.cast(scale, dtype or "float32"))

    return init


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class PerTokenSwiGLU(_PerTokenMLP):
    """Per-token SwiGLU: every token has its own gated MLP.

    For token t with input `x_t` (width D) and hidden width `H_ffn = n D`:

        g_t, u_t = split(x_t W_gu_t + b_gu_t)          # one fused matmul of width 2 H_ffn
        v_t      = W_down_t (Swish(g_t) * u_t) + b_down_t

    `Swish(z) = z * sigmoid(z)` (SiLU). The gate and up projections are one per-token kernel
    `W_gu_t` of shape `(D, 2 H_ffn)`: columns `[:H_ffn]` are the gate, `[H_ffn:]` the up
    projection, so the block does two batched matmuls (`(T, B, D) @ (T, D, 2H)` then
    `(T, B, H) @ (T, H, D)`) in the token-major layout of `PerTokenFFN`.

    Weights: `gate_up_kernel` `(T, D, 2 H_ffn)`, `gate_up_bias` `(T, 2 H_ffn)`,
    `down_kernel` `(T, H_ffn, D)`, `down_bias` `(T, D)`. With `shared=True` one SwiGLU serves
    every token and the weights lose their leading T axis.

    **Small init.** With `down_init_scale=s`, `down_kernel` is drawn from `kernel_initializer`
    and multiplied by s (TokenMixer-Large uses about 0.01), so a residual branch
    `x + pSwiGLU(x)` starts close to the identity. None or 1.0 is the plain initializer.

    Args:
        hidden_ratio: Hidden width as a multiple n of the token width D. Defaults to 4.
        hidden_dim: Explicit hidden width; overrides `hidden_ratio` when set.
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer:
            As in `PerTokenFFN` (here the biases are `gate_up_bias` and `down_bias`).
        down_init_scale: Factor on the initial `down_kernel` (small init), > 0, or None.
        shared: Share one SwiGLU across tokens (ablation). Defaults to False.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> ffn = PerTokenSwiGLU(hidden_ratio=2, down_init_scale=0.01)
    >>> y = ffn(np.ones((3, 4, 8), "float32"))
    >>> tuple(y.shape), tuple(ffn.gate_up_kernel.shape), tuple(ffn.down_kernel.shape)
    ((3, 4, 8), (4, 8, 32), (4, 16, 8))

    References:
        "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial Recommenders"
        (ByteDance), arXiv:2602.06563 (per-token SwiGLU, down-matrix small init).
        Shazeer, "GLU Variants Improve Transformer", arXiv:2002.05202 (SwiGLU).
    """

    WEIGHT_NAMES = ("gate_up_kernel", "down_kernel", "gate_up_bias", "down_bias")
    UP_FACTOR = 2  # the gate and up projections side by side

    def __init__(
        self,
        hidden_ratio: float = 4,
        hidden_dim: int | None = None,
        use_bias: bool = True,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        kernel_regularizer: RegularizerLike = None,
        bias_regularizer: RegularizerLike = None,
        down_init_scale: float | None = None,
        shared: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("hidden_ratio", hidden_ratio)
        check_positive("hidden_dim", hidden_dim, allow_none=True, integer=True)
        check_positive("down_init_scale", down_init_scale, allow_none=True)
        self.hidden_ratio = hidden_ratio
        self.hidden_dim = hidden_dim
        self.use_bias = bool(use_bias)
        set_weight_settings(
            self, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer
        )
        self.down_init_scale = None if down_init_scale is None else float(down_init_scale)
        self.shared = bool(shared)

    def _down_initializer(self):
        return scaled_initializer(self.kernel_initializer, self.down_init_scale)

    def _activate(self, gate_up):
        gate, up = gate_up[..., : self.ffn_dim], gate_up[..., self.ffn_dim :]
        return ops.silu(gate) * up

    def call(self, inputs):
        if not self.shared and serving_lever("swiglu"):
            return self._call_split_gate_up(inputs)
        # Token-major layout as in PerTokenFFN: T is the leading batch axis of both matmuls.
        return self._mlp(inputs)

    def _call_split_gate_up(self, inputs):
        """The serving spelling (`cpu_serving_graph("swiglu")`): the gate and up projections
        as two batched matmuls on the halves of `gate_up_kernel`, so the `(T, B, 2 H_ffn)`
        activation is never cut in two (a `StridedSlice` copy per half); the kernel's halves
        are sliced instead, a copy of weights, not of activations. Same math and weights."""
        dtype = self.compute_dtype
        width = self.ffn_dim
        kernel = ops.cast(self.gate_up_kernel, dtype)
        x = ops.transpose(inputs, (1, 0, 2))
        gate = ops.matmul(x, kernel[..., :width])
        up = ops.matmul(x, kernel[..., width:])
        if self.gate_up_bias is not None:
            bias = ops.expand_dims(ops.cast(self.gate_up_bias, dtype), 1)
            gate, up = gate + bias[..., :width], up + bias[..., width:]
        out = ops.matmul(ops.silu(gate) * up, ops.cast(self.down_kernel, dtype))
        if self.down_bias is not None:
            out = out + ops.expand_dims(ops.cast(self.down_bias, dtype), 1)
        return ops.transpose(out, (1, 0, 2))

    def get_config(self) -> dict:
        return {**super().get_config(), "down_init_scale": self.down_init_scale}

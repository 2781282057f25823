"""Per-token expert router: one linear router per token (used by `SparseMoE`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_positive, check_tokens_shape, per_token_initializer
from keras_rankmixer.types import InitializerLike


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class PerTokenRouter(keras.layers.Layer):
    """Router logits for per-token experts: `logits[b, t, :] = s[b, t] @ W_t + c_t`.

    Every token t has its own router `h_t` (the paper's `h(s_i)`, Eq. 10) scoring that token's
    own `num_experts` experts. Computed as one batched matmul `btd,tde->bte`.

    Weights (leading axis T, names prefixed `router_` so sharding rules can match them):
    `router_kernel` `(T, D, E)` and `router_bias` `(T, E)`.

    Args:
        num_experts: Number of experts E per token.
        kernel_initializer: Router kernel initializer (default: per-token Glorot-uniform).
        bias_initializer: Router bias initializer. Defaults to zeros.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, E)`.

    Example:

    >>> import numpy as np
    >>> router = PerTokenRouter(num_experts=4)
    >>> tuple(router(np.ones((2, 3, 8), "float32")).shape), tuple(router.router_kernel.shape)
    ((2, 3, 4), (3, 8, 4))

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.5, Eq. 10.
    """

    def __init__(
        self,
        num_experts: int,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("num_experts", num_experts, integer=True)
        self.num_experts = num_experts
        self.kernel_initializer = per_token_initializer(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape) -> None:
        num_tokens, dim = check_tokens_shape("PerTokenRouter", input_shape)
        self.router_kernel = self.add_weight(
            name="router_kernel",
            shape=(num_tokens, dim, self.num_experts),
            initializer=self.kernel_initializer,
        )
        self.router_bias = self.add_weight(
            name="router_bias",
            shape=(num_tokens, self.num_experts),
            initializer=self.bias_initializer,
        )
        self.built = True

    def call(self, inputs):
        return ops.einsum("btd,tde->bte", inputs, self.router_kernel) + self.router_bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.num_experts)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

"""Sparse per-token MoE of TokenMixer-Large: pSwiGLU experts, top-k softmax, a shared expert."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import (
    check_non_negative,
    check_positive,
    check_tokens_shape,
    clone_initializer,
)
from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim
from keras_rankmixer.layers.per_token_swiglu import PerTokenSwiGLU, scaled_initializer
from keras_rankmixer.layers.sparse_moe import (
    dispatch_to_experts,
    expert_capacity,
    expert_initializers_config,
    load_balance_loss,
    make_router,
    set_expert_initializers,
    top_k_softmax_gates,
)
from keras_rankmixer.types import InitializerLike

DISPATCHES = ("sparse", "dense")


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class TokenMixerMoE(keras.layers.Layer):
    """Sparse per-token MoE ("first enlarge, then sparse"): a drop-in for `PerTokenSwiGLU`.

    Every token t owns `num_experts` E pSwiGLU experts, each of hidden width
    `h = round(hidden_ratio * D / E)` (so the E experts together have the hidden width
    `hidden_ratio * D` of one dense pSwiGLU), its own router `PerTokenRouter`, and one
    always-on shared pSwiGLU expert. For token t of a sample:

        g_t    = softmax over the top_k largest router logits of token t, 0 elsewhere
        y_t    = alpha * sum_j g_tj * Expert_tj(x_t) + Shared_t(x_t),   alpha = E / top_k

    `Expert_tj(x) = W_down_tj (Swish(W_gate_tj x + b) * (W_up_tj x + b)) + b_down_tj`, gate
    and up fused as in `PerTokenSwiGLU`. The gate-value scale alpha (`gate_scale`, default
    E/k) undoes the shrinking of the routed sum by the softmax over k of E experts.

    **Sparse in training and in inference** (`dispatch="sparse"`, the default). Only the
    selected experts are computed, with static shapes (XLA, `model.export`), by the
    capacity-bounded gather/scatter of `SparseMoE` (`dispatch_to_experts`): for each token
    and expert the `C = min(B, ceil(capacity_factor * top_k / E * B))` samples of the batch
    with the largest gates are gathered, pushed through the expert as batched matmuls
    `(T, E, C, D)` and scatter-added back. Gradients flow through the gathered gates to the
    router and through the experts. If an expert is selected by more than C samples its
    smallest gates are dropped: `dropped_ratio` (non-trainable, the last call's fraction of
    dropped selections) says how often. With `capacity_factor >= E / top_k` nothing can be
    dropped and the result equals `dispatch="dense"` (all experts computed and weighted by
    the same gates; the reference the tests compare against).

    Optional Switch-style load-balance loss (`load_balance_weight > 0`, training only,
    added in float32): `w * E * mean_t sum_j f_tj P_tj`, `f_tj` the fraction of the batch's
    selections that go to expert j of token t, `P_tj` its mean softmax router probability.

    Weights (leading axis T): `expert_gate_up_kernel` `(T, E, D, 2h)`, `expert_gate_up_bias`
    `(T, E, 2h)`, `expert_down_kernel` `(T, E, h, D)`, `expert_down_bias` `(T, E, D)`; the
    router's `router_kernel` `(T, D, E)` and `router_bias` `(T, E)`; the shared expert's
    `PerTokenSwiGLU` weights (sublayer `shared_expert`).

    Args:
        num_experts: Routed experts per token, E.
        top_k: Experts selected per token and sample, k <= E. Defaults to 2.
        hidden_ratio: Total routed hidden width as a multiple n of D; each expert has
            `n D / E`. Defaults to 4.
        expert_hidden_dim: Explicit hidden width of each routed expert (overrides
            `hidden_ratio`).
        use_shared_expert: Add the always-on shared expert. Defaults to True.
        shared_hidden_dim: Hidden width of the shared expert; None means the routed
            experts' width.
        gate_scale: alpha; None means E / top_k.
        capacity_factor: Capacity multiplier of the sparse dispatch (> 0). Defaults to 2.
        dispatch: `"sparse"` (default) or `"dense"` (reference: every expert computed).
        load_balance_weight: Weight of the load-balance loss (0 disables it, the default).
        down_init_scale: Small-init factor of every down projection (routed and shared),
            or None for the plain initializer.
        use_bias: Whether the experts have biases.
        kernel_initializer, bias_initializer, router_initializer: As in `SparseMoE`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> moe = TokenMixerMoE(num_experts=4, top_k=1, hidden_ratio=2, capacity_factor=4.0)
    >>> x = np.random.rand(8, 3, 16).astype("float32")
    >>> y = moe(x)
    >>> tuple(y.shape), tuple(moe.expert_gate_up_kernel.shape), moe.gate_scale_value
    ((8, 3, 16), (3, 4, 16, 16), 4.0)
    >>> dense = TokenMixerMoE(num_experts=4, top_k=1, hidden_ratio=2, dispatch="dense")
    >>> _ = dense(x); dense.set_weights(moe.get_weights())
    >>> bool(np.allclose(dense(x), y, atol=1e-5))  # capacity E/k: sparse == dense
    True

    References:
        "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial Recommenders"
        (ByteDance), arXiv:2602.06563 (Sparse-Pertoken MoE, shared expert, gate scaling).
        Fedus et al., "Switch Transformers", arXiv:2101.03961 (capacity, load balance).
    """

    def __init__(
        self,
        num_experts: int,
        top_k: int = 2,
        hidden_ratio: float = 4,
        expert_hidden_dim: int | None = None,
        use_shared_expert: bool = True,
        shared_hidden_dim: int | None = None,
        gate_scale: float | None = None,
        capacity_factor: float = 2.0,
        dispatch: str = "sparse",
        load_balance_weight: float = 0.0,
        down_init_scale: float | None = None,
        use_bias: bool = True,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        router_initializer: InitializerLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("num_experts", num_experts, integer=True)
        check_positive("top_k", top_k, integer=True)
        if top_k > num_experts:
            raise ValueError(f"`top_k` must be <= num_experts={num_experts}, got top_k={top_k!r}.")
        check_positive("hidden_ratio", hidden_ratio)
        check_positive("expert_hidden_dim", expert_hidden_dim, allow_none=True, integer=True)
        check_positive("shared_hidden_dim", shared_hidden_dim, allow_none=True, integer=True)
        check_positive("gate_scale", gate_scale, allow_none=True)
        check_positive("capacity_factor", capacity_factor)
        if dispatch not in DISPATCHES:
            raise ValueError(f"`dispatch` must be one of {DISPATCHES}, got dispatch={dispatch!r}.")
        check_non_negative("load_balance_weight", load_balance_weight)
        check_positive("down_init_scale", down_init_scale, allow_none=True)
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_ratio = hidden_ratio
        self.expert_hidden_dim = expert_hidden_dim
        self.use_shared_expert = bool(use_shared_expert)
        self.shared_hidden_dim = shared_hidden_dim
        self.gate_scale = None if gate_scale is None else float(gate_scale)
        self.gate_scale_value = self.gate_scale or num_experts / top_k
        self.capacity_factor = float(capacity_factor)
        self.dispatch = dispatch
        self.load_balance_weight = float(load_balance_weight)
        self.down_init_scale = None if down_init_scale is None else float(down_init_scale)
        self.use_bias = bool(use_bias)
        set_expert_initializers(self, kernel_initializer, bias_initializer, router_initializer)
        self.router = make_router(self, "router")
        self.shared_expert = None

    def build(self, input_shape) -> None:
        (t, d), e = check_tokens_shape("TokenMixerMoE", input_shape), self.num_experts
        h = (
            self.expert_hidden_dim
            if self.expert_hidden_dim is not None
            else resolve_hidden_dim(d, self.hidden_ratio / e, None)
        )
        self.num_tokens, self.token_dim, self.expert_dim = t, d, h
        self.router.build(input_shape)

        def weight(name, shape, initializer):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.expert_gate_up_kernel = weight(
            "expert_gate_up_kernel", (t, e, d, 2 * h), self.kernel_initializer
        )
        self.expert_down_kernel = weight(
            "expert_down_kernel",
            (t, e, h, d),
            scaled_initializer(self.kernel_initializer, self.down_init_scale),
        )
        if self.use_bias:
            self.expert_gate_up_bias = weight(
                "expert_gate_up_bias", (t, e, 2 * h), self.bias_initializer
            )
            self.expert_down_bias = weight("expert_down_bias", (t, e, d), self.bias_initializer)
        else:
            self.expert_gate_up_bias = self.expert_down_bias = None
        if self.use_shared_expert:
            self.shared_expert = PerTokenSwiGLU(
                hidden_dim=self.shared_hidden_dim or h,
                use_bias=self.use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=self.bias_initializer,
                down_init_scale=self.down_init_scale,
                dtype=self.dtype_policy,
                name="shared_expert",
            )
            self.shared_expert.build(input_shape)
        self.dropped_ratio = self.add_weight(
            name="dropped_ratio",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="mean",
            autocast=False,
        )
        self.built = True

    # ------------------------------------------------------------------ experts
    def _glu(self, gate_up):
        h = self.expert_dim
        return ops.silu(gate_up[..., :h]) * gate_up[..., h:]

    def _dense_routed(self, inputs, gates):
        gate_up = ops.einsum("btd,tedh->bteh", inputs, self.expert_gate_up_kernel)
        if self.expert_gate_up_bias is not None:
            gate_up = gate_up + self.expert_gate_up_bias
        hidden = self._glu(gate_up) * gates[..., None]
        out = ops.einsum("bteh,tehd->btd", hidden, self.expert_down_kernel)
        if self.expert_down_bias is not None:
            out = out + ops.einsum("bte,ted->btd", gates, self.expert_down_bias)
        return out

    def _experts(self, picked):
        """Expert j of token t on its C gathered samples: `(T, E, C, D) -> (T, E, C, D)`."""
        gate_up = ops.einsum("tecd,tedh->tech", picked, self.expert_gate_up_kernel)
        if self.expert_gate_up_bias is not None:
            gate_up = gate_up + self.expert_gate_up_bias[:, :, None, :]
        out = ops.einsum("tech,tehd->tecd", self._glu(gate_up), self.expert_down_kernel)
        if self.expert_down_bias is not None:
            out = out + self.expert_down_bias[:, :, None, :]
        return out

    def capacity(self, batch_size):
        """Per-expert capacity `min(B, ceil(capacity_factor * top_k / E * B))`."""
        return expert_capacity(batch_size, self.capacity_factor * self.top_k / self.num_experts)

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        logits = self.router(inputs)
        gates = top_k_softmax_gates(logits, self.top_k)  # (B, T, E)
        if self.dispatch == "dense":
            routed = self._dense_routed(inputs, gates)
            dropped = ops.zeros((), "float32")
        else:
            routed, overflow = dispatch_to_experts(
                inputs, gates, self.capacity(ops.shape(inputs)[0]), self._experts
            )
            selections = ops.cast(ops.count_nonzero(gates), "float32")
            dropped = overflow / ops.maximum(selections, 1.0)
        self.dropped_ratio.assign(ops.cast(dropped, "float32"))
        out = routed * ops.cast(self.gate_scale_value, routed.dtype)
        if self.shared_expert is not None:
            out = out + self.shared_expert(inputs)
        if training and self.load_balance_weight > 0:
            balance = load_balance_loss(logits, gates, self.top_k)
            self.add_loss(ops.cast(self.load_balance_weight * balance, "float32"))
        return out

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs per sample of the selected routed experts and the router.

        Routed: `6 * T * k * D * h` (the capacity padding, up to `capacity_factor` times
        more, not counted); router: `2 * T * D * E`. The shared expert is a sublayer and
        reports its own (`shared_expert.flops_per_sample()`, `6 * T * D * h_shared`), so
        `flops.count_model`, which sums over all layers, counts it once.
        """
        t, d, e, h = self.num_tokens, self.token_dim, self.num_experts, self.expert_dim
        return 6 * t * self.top_k * d * h + 2 * t * d * e

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "hidden_ratio": self.hidden_ratio,
                "expert_hidden_dim": self.expert_hidden_dim,
                "use_shared_expert": self.use_shared_expert,
                "shared_hidden_dim": self.shared_hidden_dim,
                "gate_scale": self.gate_scale,
                "capacity_factor": self.capacity_factor,
                "dispatch": self.dispatch,
                "load_balance_weight": self.load_balance_weight,
                "down_init_scale": self.down_init_scale,
                "use_bias": self.use_bias,
                **expert_initializers_config(self),
            }
        )
        return config

"""Per-token Sparse Mixture-of-Experts (RankMixer Sparse-MoE variant, Eqs. 10-11)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_rankmixer.layers._checks import (
    check_non_negative,
    check_positive,
    check_tokens_shape,
    clone_initializer,
    per_token_initializer,
)
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim
from keras_rankmixer.layers.per_token_router import PerTokenRouter
from keras_rankmixer.types import ActivationLike, InitializerLike

ROUTINGS = ("relu", "dtsi", "topk")
INFERENCE_MODES = ("sparse", "dense")
_LAMBDA_MIN, _LAMBDA_MAX = 1e-30, 1e6


def top_k_softmax_gates(logits, k: int):
    """Gates `(..., E)`: softmax over the `k` largest logits of each row, zero elsewhere.

    Example:

    >>> import numpy as np
    >>> g = top_k_softmax_gates(np.array([[0.0, 1.0, 1.0, -2.0]], "float32"), 2)
    >>> np.round(np.asarray(g), 3).tolist()
    [[0.0, 0.5, 0.5, 0.0]]
    """
    logits = ops.convert_to_tensor(logits)
    _, index = ops.top_k(logits, k)
    mask = ops.sum(ops.one_hot(index, logits.shape[-1], dtype=logits.dtype), axis=-2)
    masked = ops.where(mask > 0, logits, ops.full_like(logits, -1e9))
    return ops.softmax(masked, axis=-1) * mask


def expert_capacity(batch_size, share: float):
    """Samples each expert can take, `min(B, ceil(share * B))`, at least 1 (int or int tensor).

    `share` is `capacity_factor * active fraction`.

    Example:

    >>> expert_capacity(4096, 1.25 * 0.25), expert_capacity(1, 0.5)
    (1280, 1)
    """
    if isinstance(batch_size, int):
        return max(1, min(batch_size, math.ceil(share * batch_size - 1e-9)))
    cap = ops.cast(ops.ceil(share * ops.cast(batch_size, "float32") - 1e-6), "int32")
    return ops.maximum(1, ops.minimum(ops.cast(batch_size, "int32"), cap))


def set_expert_initializers(
    layer: keras.layers.Layer,
    kernel_initializer: InitializerLike | None,
    bias_initializer: InitializerLike,
    router_initializer: InitializerLike | None,
) -> None:
    """Set an MoE layer's expert kernel, expert bias and router kernel initializers.

    The kernel and router initializers go through `per_token_initializer` (None: per-token
    Glorot). The initializers of `SparseMoE` and `TokenMixerMoE`.
    """
    layer.kernel_initializer = per_token_initializer(kernel_initializer)
    layer.bias_initializer = keras.initializers.get(bias_initializer)
    layer.router_initializer = per_token_initializer(router_initializer)


def expert_initializers_config(layer: keras.layers.Layer) -> dict:
    """The `get_config` entries of the initializers `set_expert_initializers` put on `layer`."""
    return {
        name: keras.initializers.serialize(getattr(layer, name))
        for name in ("kernel_initializer", "bias_initializer", "router_initializer")
    }


def make_router(layer: keras.layers.Layer, name: str) -> PerTokenRouter:
    """A `PerTokenRouter` over `layer.num_experts` experts with its own copy of
    `layer.router_initializer`, in `layer`'s dtype policy."""
    return PerTokenRouter(
        layer.num_experts,
        kernel_initializer=clone_initializer(layer.router_initializer),
        dtype=layer.dtype_policy,
        name=name,
    )


def load_balance_loss(logits, gates, k: int):
    """Switch-style load balance `E * mean_t sum_j f_tj P_tj`, in float32.

    `f_tj` is the fraction of the batch's `k` selections per token that go to expert j of
    token t (`gates > 0`), `P_tj` the mean softmax router probability; `logits` and `gates`
    are `(B, T, E)`. 1 when the load is even.

    Example:

    >>> import numpy as np
    >>> gates = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], "float32")  # 2 samples, 1 token, E=2
    >>> float(load_balance_loss(np.zeros((2, 1, 2), "float32"), gates, 1))
    1.0
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    fraction = ops.mean(ops.cast(ops.greater(gates, 0), "float32"), axis=0) / k  # (T, E)
    importance = ops.mean(probs, axis=0)
    return gates.shape[-1] * ops.mean(ops.sum(fraction * importance, axis=-1))


def dispatch_to_experts(inputs, gates, capacity, experts):
    """Capacity-bounded sparse compute of per-token experts with static shapes.

    For each token t and expert j, the `capacity` samples of the batch with the largest gates
    `gates[:, t, j]` are picked (`top_k` over the batch), gathered into `(T, E, C, D)`, passed
    through `experts` (a function `(T, E, C, D) -> (T, E, C, D_out)` applying expert j of
    token t to its C samples), scaled by their gates and scatter-added back to
    `(B, T, D_out)`. Equal to `sum_j gates[b, t, j] * expert_tj(inputs[b, t])` when no expert
    has more than `capacity` non-zero gates; otherwise each overflowing expert's smallest
    gates are dropped. Gradients reach `inputs`, the gates and the experts' weights.

    Args:
        inputs: `(B, T, D)` tokens.
        gates: `(B, T, E)` gates (zeros where an expert is off).
        capacity: Samples per expert C (int, or int scalar tensor), `<= B`.
        experts: The batched experts.

    Returns:
        `(output (B, T, D_out), overflow)`: `overflow` is the float32 number of dropped
        non-zero gates.
    """
    t, e, d = gates.shape[1], gates.shape[2], inputs.shape[-1]
    batch = ops.shape(inputs)[0]
    by_expert = ops.transpose(gates, (1, 2, 0))  # (T, E, B)
    values, index = ops.top_k(by_expert, capacity, sorted=False)  # (T, E, C)
    rows = index + ops.reshape(ops.arange(t, dtype=index.dtype), (t, 1, 1)) * ops.cast(
        batch, index.dtype
    )
    flat_rows = ops.reshape(rows, (-1,))
    tokens = ops.reshape(ops.transpose(inputs, (1, 0, 2)), (-1, d))  # (T*B, D)
    picked = ops.reshape(ops.take(tokens, flat_rows, axis=0), (t, e, -1, d))  # (T,E,C,D)
    out = experts(picked)
    d_out = out.shape[-1]
    out = out * values[..., None]
    merged = ops.scatter(
        ops.expand_dims(flat_rows, -1), ops.reshape(out, (-1, d_out)), (t * batch, d_out)
    )
    merged = ops.transpose(ops.reshape(merged, (t, -1, d_out)), (1, 0, 2))
    load = ops.sum(ops.cast(ops.greater(by_expert, 0), "float32"), axis=-1)  # (T, E)
    overflow = ops.sum(ops.relu(load - ops.cast(capacity, "float32")))
    return merged, overflow


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class SparseMoE(keras.layers.Layer):
    """Per-token Sparse-MoE: a drop-in replacement for `PerTokenFFN` in `RankMixerBlock`.

    Every token t owns `num_experts` experts (two-layer MLPs, `act(s W1 + b1) W2 + b2`) and
    its own router. For token t of a sample the output is `v_t = sum_j G_tj * e_tj(s_t)`.

    **Routing** (`routing=`):

    - `"relu"` (paper Eq. 10, from ReMoE): `G = ReLU(h(s))`, no top-k, no softmax. The L1
      regularizer `lambda * L_reg` with `L_reg = mean_batch sum_{t,j} G_tj` (Eq. 11) is added
      with `add_loss` (in float32, so mixed precision works); by default each expert's gates
      are weighted by its load (`balance_l1`, ReMoE's load-balanced variant). In training a
      small straight-through gradient reaches switched-off gates (`gate_gradient_leak`), so
      gates that the L1 term killed can come back; the forward value is unchanged.
    - `"dtsi"` (dense-train / sparse-infer): two routers, `train_router` (h_train) and
      `infer_router` (h_infer). Our wiring (the paper gives none)::

          G_inf = ReLU(h_infer(s))             # the gates that are served
          G_tr  = softplus(h_train(s))         # dense, > 0 everywhere
          M     = stop_gradient(G_inf == 0)    # experts h_infer switched off
          y     = sum_j G_inf_j e_j  +  (Z - stop_gradient(Z)),  Z = w sum_j G_tr_j M_j e_j

      The second term is exactly zero in the forward pass (`x - x == 0`), so the training
      forward *is* the inference forward (measured difference 0, see the tests). Its gradient
      is not zero: experts switched off by h_infer still get the gradient
      `w * G_tr_j * dL/dy` (dense training; `w = dense_grad_weight`), and h_train learns from the task loss
      (`dL/dG_tr_j = <e_j, dL/dy>`) which of the inactive experts would help.
      Active experts get the exact gradient of the served model (`G_inf_j * dL/dy`), and
      h_infer gets the task gradient `<e_j, dL/dy>` on its active gates plus the L1
      gradient; the L1 term applies to h_infer only. At inference only h_infer is used.
    - `"topk"` (the paper's "vanilla SMoE" baseline): softmax over the `top_k` largest router
      logits of each token, zero elsewhere; optional Switch-style load-balance loss
      `load_balance_weight * E * mean_t sum_j f_tj P_tj`.

    **Adaptive lambda** (ReMoE rule). `l1_lambda` is a non-trainable variable. In every
    training call the layer measures the fraction of zero gates in the batch, adds
    `lambda * L_reg` with the current lambda, then assigns
    `lambda * l1_multiplier` if that fraction is below `1 - target_active_ratio`, else
    `lambda / l1_multiplier` (clipped to `[1e-30, 1e6]` so it can never get stuck at 0).
    Because it is a plain `variable.assign` in `call`, it runs inside `fit` with
    `jit_compile=True` on TensorFlow and JAX (Keras carries non-trainable state through the
    jitted step). Under a `tf.distribute` strategy `l1_lambda` uses aggregation
    `"only_first_replica"` (replica 0's batch shard decides the step's update, so replicas
    never diverge) and the measurement variables use `"mean"`.

    **Load controller** (`load_bias_rate`, `"relu"` / `"dtsi"`). The ReMoE rule alone does
    not hold the target on small data: lambda overshoots while the routers are still dense,
    some experts' gates go to zero for every sample, a switched-off expert gets no gradient
    and stays useless, so the task loss keeps it off and lambda sinks to its floor with the
    active ratio 20-40% under target (measured on Frappe, `benchmarks/RESULTS.md`). So every
    served gate also gets a non-trainable offset, `G = ReLU(h(s) + b)` with `b` `(T, E)`
    named `gate_offset`, and after every training call
    `b_tj <- b_tj + load_bias_rate * sign(target_active_ratio - load_tj)`, where `load_tj`
    is the fraction of the batch for which expert j of token t is on: an expert that is off
    too often is raised until it is used again, a busy one is lowered (the auxiliary-loss-free
    balancing of DeepSeek-V3, applied to ReLU gates). Each expert's load then oscillates
    around the target, which also evens out the per-expert load the sparse-inference capacity
    depends on. The offset is part of the served model (saved, exported); it is updated
    like `l1_lambda` (inside the compiled step; `"only_first_replica"` under tf.distribute).
    `load_bias_rate=0` disables it.

    **Observability.** After each training call: `active_ratio` (scalar, fraction of non-zero
    gates in the batch), `router_active_ratio` `(T,)` (per token) and `l1_lambda`. Read them
    with `moe_stats()`, or add `keras_rankmixer.training.MoEMonitor` to `fit` to get them
    into the logs / `History` and to plot active ratio per token over training (Fig. 4).

    **Sparse inference** (`inference_mode="sparse"`, the default). Only non-zero gates are
    computed, with static shapes (works under XLA and in `model.export`): for each token t
    and expert j, the `C = min(B, ceil(capacity_factor * a * B))` samples of the batch with
    the largest gates are picked with `top_k` over the batch (`a` is `target_active_ratio`,
    or `top_k / E` for `"topk"`), gathered, pushed through the expert as batched matmuls
    `(T, E, C, D)`, scaled by their gates and scatter-added back. Compute scales with
    `capacity_factor * a`. **Overflow:** if an expert has more than C non-zero gates in a
    batch, its smallest gates beyond C are dropped (their contribution is lost, the rest of
    the output is exact). Every inference call adds to `infer_gate_count` (gates seen),
    `infer_active_count` (non-zero gates) and `infer_overflow_count` (dropped non-zero
    gates); read them with `inference_stats()`, zero them with `reset_inference_stats()`.
    With `capacity_factor * a >= 1` nothing can overflow and the result equals dense
    compute to float tolerance. `inference_mode="dense"` computes every expert.

    Weights (all with leading axis T; expert weights named `expert_*`, router weights
    `router_*` inside the router sublayers `router`, or `train_router` / `infer_router` for
    dtsi): `expert_kernel_1` `(T, E, D, H)`, `expert_bias_1` `(T, E, H)`, `expert_kernel_2`
    `(T, E, H, D)`, `expert_bias_2` `(T, E, D)`; `router_kernel` `(T, D, E)`,
    `router_bias` `(T, E)`; non-trainable `gate_offset` `(T, E)` (the load controller's).

    Args:
        num_experts: Experts per token, E.
        hidden_ratio: Hidden width of *each* expert as a multiple of D. For the same total
            parameters as a `PerTokenFFN(hidden_ratio=k)`, use `k / num_experts`.
        target_active_ratio: Target fraction of active gates (`k/E` in ReMoE), in (0, 1].
        routing: `"relu"`, `"dtsi"` or `"topk"`.
        l1_init: Initial lambda. Defaults to 1e-8 (ReMoE).
        l1_multiplier: Lambda update factor alpha > 1. Defaults to 1.2 (ReMoE).
        hidden_dim: Explicit per-expert hidden width (overrides `hidden_ratio`).
        top_k: Experts per token for `"topk"`; defaults to
            `max(1, round(target_active_ratio * num_experts))`.
        load_balance_weight: Weight of the load-balance loss for `"topk"` (0 disables it).
        inference_mode: `"sparse"` (capacity-bounded, see above) or `"dense"`.
        capacity_factor: Capacity multiplier for sparse inference (> 0).
        balance_l1: Use ReMoE's load-balanced L1 for `"relu"` / `"dtsi"`: expert j of token
            t has its gates weighted by its (stop-gradient) load in the batch,
            `f_tj = mean_b 1[G_btj > 0] / target_active_ratio`, so busy experts are pushed
            down harder. This evens out per-expert load, which is what keeps the sparse
            inference capacity from overflowing. False gives the plain L1 of Eq. 11.
        dense_grad_weight: `"dtsi"` only: scale `w` of the dense-training path,
            `Z = w * sum_j G_tr_j M_j e_j`. Its forward value stays exactly 0; it scales the
            gradient that switched-off experts (and h_train) receive relative to the exact
            gradient of the active experts. Defaults to 0.01: that gradient has no feedback
            (the expert is not in the forward), so under Adam a large surrogate drags
            switched-off experts along `-dL/dy` every step; on Frappe larger `w` cost AUC,
            with or without the load controller (benchmarks/RESULTS.md, SparseMoE on Frappe).
        gate_gradient_leak: `"relu"` / `"dtsi"`: slope of a straight-through gradient for
            switched-off gates in training. The forward value stays exactly `ReLU(h(s))`;
            the task loss's gradient `<e_j, dL/dy>` reaches a logit `< 0` scaled by this
            slope, so a gate the L1 term pushed to zero comes back when the task wants the
            expert (a plain ReLU gate at zero never gets a gradient again, and its token's
            active ratio then stays below the target however small lambda gets). The L1
            term's gradient is unchanged (it only pushes active gates down); experts of
            switched-off gates get no gradient from it. 0 gives the plain ReLU. Defaults
            to 0.01.
        load_bias_rate: `"relu"` / `"dtsi"`: step of the load controller (see above), in
            router-logit units per training step. Defaults to 0.05 (0.01 was too slow to
            reach the target on Frappe within a few hundred steps). 0 disables it.
        activation: Expert activation (as in `PerTokenFFN`, `"gelu_tanh"` included). Defaults
            to `"gelu"`.
        kernel_initializer: Expert kernel initializer (default: Glorot per expert matrix).
        bias_initializer: Expert bias initializer.
        router_initializer: Router kernel initializer (default: Glorot per token).
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, T, D)`.

    Example:

    >>> import numpy as np
    >>> moe = SparseMoE(num_experts=4, hidden_ratio=0.5, target_active_ratio=0.25)
    >>> x = np.random.rand(8, 3, 16).astype("float32")
    >>> tuple(moe(x).shape), tuple(moe.expert_kernel_1.shape), tuple(moe.router.router_kernel.shape)
    ((8, 3, 16), (3, 4, 16, 8), (3, 16, 4))
    >>> roomy = SparseMoE(4, hidden_ratio=0.5, target_active_ratio=0.25, capacity_factor=4.0)
    >>> dense = SparseMoE(4, hidden_ratio=0.5, inference_mode="dense")
    >>> _ = roomy(x), dense(x)
    >>> roomy.set_weights(moe.get_weights()); dense.set_weights(moe.get_weights())
    >>> bool(np.allclose(roomy(x), dense(x), atol=1e-5))  # enough capacity: sparse == dense
    True

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Section 3.5, Eqs. 10-11, Fig. 3.
        Wang et al., "ReMoE: Fully Differentiable Mixture-of-Experts with ReLU Routing",
        arXiv:2412.14711 (ReLU routing, adaptive L1).
    """

    def __init__(
        self,
        num_experts: int,
        hidden_ratio: float = 0.5,
        target_active_ratio: float = 0.25,
        routing: str = "relu",
        l1_init: float = 1e-8,
        l1_multiplier: float = 1.2,
        hidden_dim: int | None = None,
        top_k: int | None = None,
        load_balance_weight: float = 0.0,
        inference_mode: str = "sparse",
        capacity_factor: float = 2.0,
        balance_l1: bool = True,
        dense_grad_weight: float = 0.01,
        gate_gradient_leak: float = 0.01,
        load_bias_rate: float = 0.05,
        activation: ActivationLike = "gelu",
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        router_initializer: InitializerLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("num_experts", num_experts, integer=True)
        check_positive("hidden_ratio", hidden_ratio)
        check_positive("hidden_dim", hidden_dim, allow_none=True, integer=True)
        check_positive("target_active_ratio", target_active_ratio)
        if target_active_ratio > 1:
            raise ValueError(
                "`target_active_ratio` must be in (0, 1], "
                f"got target_active_ratio={target_active_ratio!r}."
            )
        if routing not in ROUTINGS:
            raise ValueError(f"`routing` must be one of {ROUTINGS}, got routing={routing!r}.")
        check_positive("l1_init", l1_init)
        check_positive("l1_multiplier", l1_multiplier)
        if l1_multiplier <= 1:
            raise ValueError(f"`l1_multiplier` must be > 1, got l1_multiplier={l1_multiplier!r}.")
        check_positive("top_k", top_k, allow_none=True, integer=True)
        if top_k is not None and top_k > num_experts:
            raise ValueError(f"`top_k` must be <= num_experts={num_experts}, got top_k={top_k!r}.")
        check_non_negative("load_balance_weight", load_balance_weight)
        if inference_mode not in INFERENCE_MODES:
            raise ValueError(
                f"`inference_mode` must be one of {INFERENCE_MODES}, "
                f"got inference_mode={inference_mode!r}."
            )
        check_positive("capacity_factor", capacity_factor)
        check_non_negative("load_bias_rate", load_bias_rate)
        check_positive("dense_grad_weight", dense_grad_weight)
        check_non_negative("gate_gradient_leak", gate_gradient_leak, at_most=1.0)
        self.num_experts = num_experts
        self.hidden_ratio = hidden_ratio
        self.target_active_ratio = float(target_active_ratio)
        self.routing = routing
        self.l1_init = float(l1_init)
        self.l1_multiplier = float(l1_multiplier)
        self.hidden_dim = hidden_dim
        self.top_k = top_k
        self.num_selected = (
            top_k if top_k is not None else max(1, round(target_active_ratio * num_experts))
        )
        self.load_balance_weight = float(load_balance_weight)
        self.inference_mode = inference_mode
        self.capacity_factor = float(capacity_factor)
        self.balance_l1 = bool(balance_l1)
        self.dense_grad_weight = float(dense_grad_weight)
        self.gate_gradient_leak = float(gate_gradient_leak)
        self.load_bias_rate = float(load_bias_rate)
        self.activation = get_activation(activation)
        set_expert_initializers(self, kernel_initializer, bias_initializer, router_initializer)
        if routing == "dtsi":
            self.train_router = make_router(self, "train_router")
            self.infer_router = make_router(self, "infer_router")
        else:
            self.router = make_router(self, "router")

    # ------------------------------------------------------------------ build
    def build(self, input_shape) -> None:
        (t, d), e = check_tokens_shape("SparseMoE", input_shape), self.num_experts
        h = resolve_hidden_dim(d, self.hidden_ratio, self.hidden_dim)
        self.num_tokens, self.token_dim, self.expert_dim = t, d, h
        for router in self._routers():
            router.build(input_shape)
        self.expert_kernel_1 = self.add_weight(
            name="expert_kernel_1", shape=(t, e, d, h), initializer=self.kernel_initializer
        )
        self.expert_bias_1 = self.add_weight(
            name="expert_bias_1", shape=(t, e, h), initializer=self.bias_initializer
        )
        self.expert_kernel_2 = self.add_weight(
            name="expert_kernel_2", shape=(t, e, h, d), initializer=self.kernel_initializer
        )
        self.expert_bias_2 = self.add_weight(
            name="expert_bias_2", shape=(t, e, d), initializer=self.bias_initializer
        )

        def state(name, shape, init, aggregation):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=keras.initializers.Constant(init),
                trainable=False,
                dtype="float32",
                aggregation=aggregation,
                autocast=False,  # stay float32 under mixed precision
            )

        self.l1_lambda = state("l1_lambda", (), self.l1_init, "only_first_replica")
        # per-(token, expert) offset added to the served router's logits (relu / dtsi)
        self.gate_offset = state("gate_offset", (t, e), 0.0, "only_first_replica")
        self.active_ratio = state("active_ratio", (), 0.0, "mean")
        self.router_active_ratio = state("router_active_ratio", (t,), 0.0, "mean")
        self.infer_gate_count = state("infer_gate_count", (), 0.0, "sum")
        self.infer_active_count = state("infer_active_count", (), 0.0, "sum")
        self.infer_overflow_count = state("infer_overflow_count", (), 0.0, "sum")
        self.built = True

    def _routers(self) -> list[PerTokenRouter]:
        if self.routing == "dtsi":
            return [self.train_router, self.infer_router]
        return [self.router]

    # ------------------------------------------------------------------ gates
    def _gates(self, inputs):
        """Served gates `(B, T, E)` and the (served) router's logits."""
        if self.routing in ("relu", "dtsi"):
            router = self.infer_router if self.routing == "dtsi" else self.router
            logits = router(inputs) + ops.cast(self.gate_offset.value, self.compute_dtype)
            return ops.relu(logits), logits
        logits = self.router(inputs)
        return top_k_softmax_gates(logits, self.num_selected), logits

    def _hidden(self, inputs):
        hidden = ops.einsum("btd,tedh->bteh", inputs, self.expert_kernel_1) + self.expert_bias_1
        return self.activation(hidden)

    def _mix(self, coef, hidden):
        """`sum_j coef_j * (hidden_j W2_j + b2_j)` without materialising (B, T, E, D)."""
        out = ops.einsum("bteh,tehd->btd", hidden * coef[..., None], self.expert_kernel_2)
        return out + ops.einsum("bte,ted->btd", coef, self.expert_bias_2)

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        gates, logits = self._gates(inputs)
        if training:
            hidden = self._hidden(inputs)
            task_gates = gates
            if self.routing != "topk" and self.gate_gradient_leak > 0:
                # forward value exactly `gates`; gradient `leak * dL/dG` reaches logits < 0
                neg = ops.minimum(logits, 0)
                task_gates = gates + self.gate_gradient_leak * (neg - ops.stop_gradient(neg))
            out = self._mix(task_gates, hidden)
            if self.routing == "dtsi":
                dense_gates = ops.softplus(self.train_router(inputs))
                off = ops.stop_gradient(ops.cast(ops.equal(gates, 0), dense_gates.dtype))
                z = self._mix(dense_gates * off, hidden) * self.dense_grad_weight
                out = out + (z - ops.stop_gradient(z))
            self._training_updates(gates, logits)
            return out
        if self.inference_mode == "dense":
            out = self._mix(gates, self._hidden(inputs))
            overflow = ops.zeros((), "float32")
        else:
            out, overflow = self._sparse_forward(inputs, gates)
        active = ops.cast(ops.count_nonzero(gates), "float32")
        self.infer_gate_count.assign_add(ops.cast(ops.size(gates), "float32"))
        self.infer_active_count.assign_add(active)
        self.infer_overflow_count.assign_add(overflow)
        return out

    def _training_updates(self, gates, logits) -> None:
        active = ops.cast(ops.greater(gates, 0), "float32")  # (B, T, E)
        per_token = ops.mean(active, axis=(0, 2))
        ratio = ops.mean(per_token)
        self.active_ratio.assign(ratio)
        self.router_active_ratio.assign(per_token)
        if self.routing == "topk":
            if self.load_balance_weight > 0:
                balance = load_balance_loss(logits, gates, self.num_selected)
                self.add_loss(ops.cast(self.load_balance_weight * balance, "float32"))
            return
        lam = ops.convert_to_tensor(self.l1_lambda.value)
        gates32 = ops.cast(gates, "float32")
        load = ops.stop_gradient(ops.mean(active, axis=0))  # (T, E) fraction of the batch
        if self.balance_l1:  # ReMoE's load-balanced L1: weight each expert by its load
            gates32 = gates32 * (load / self.target_active_ratio)
        if self.load_bias_rate > 0:  # move each expert's load towards the target
            step = self.load_bias_rate * ops.sign(self.target_active_ratio - load)
            self.gate_offset.assign(self.gate_offset.value + step)
        l1 = ops.mean(ops.sum(gates32, axis=(1, 2)))
        self.add_loss(ops.cast(lam * l1, "float32"))
        sparsity = 1.0 - ratio
        target_sparsity = 1.0 - self.target_active_ratio
        new = ops.where(
            ops.less(sparsity, target_sparsity), lam * self.l1_multiplier, lam / self.l1_multiplier
        )
        self.l1_lambda.assign(ops.clip(new, _LAMBDA_MIN, _LAMBDA_MAX))

    def capacity(self, batch_size):
        """Per-expert capacity `min(B, ceil(capacity_factor * a * B))` (int or int tensor)."""
        return expert_capacity(batch_size, self.capacity_factor * self.budget_ratio())

    def budget_ratio(self) -> float:
        """Active fraction the capacity is sized for: `top_k / E` (topk) or the target."""
        if self.routing == "topk":
            return self.num_selected / self.num_experts
        return self.target_active_ratio

    def _sparse_forward(self, inputs, gates):
        def experts(picked):  # (T, E, C, D) -> (T, E, C, D)
            hidden = ops.einsum("tecd,tedh->tech", picked, self.expert_kernel_1)
            hidden = self.activation(hidden + self.expert_bias_1[:, :, None, :])
            out = ops.einsum("tech,tehd->tecd", hidden, self.expert_kernel_2)
            return out + self.expert_bias_2[:, :, None, :]

        return dispatch_to_experts(inputs, gates, self.capacity(ops.shape(inputs)[0]), experts)

    # ------------------------------------------------------------------ stats
    def moe_stats(self) -> dict:
        """Last training batch's measurements: active ratio (layer, per token) and lambda."""
        return {
            "active_ratio": float(ops.convert_to_numpy(self.active_ratio)),
            "router_active_ratio": ops.convert_to_numpy(self.router_active_ratio).tolist(),
            "l1_lambda": float(ops.convert_to_numpy(self.l1_lambda)),
        }

    def inference_stats(self) -> dict:
        """Totals since the last reset: active ratio and overflow of inference calls."""
        gates = float(ops.convert_to_numpy(self.infer_gate_count))
        active = float(ops.convert_to_numpy(self.infer_active_count))
        overflow = float(ops.convert_to_numpy(self.infer_overflow_count))
        return {
            "gates": gates,
            "active": active,
            "overflow": overflow,
            "active_ratio": active / gates if gates else float("nan"),
            "overflow_ratio": overflow / active if active else 0.0,
        }

    def reset_inference_stats(self) -> None:
        for var in (self.infer_gate_count, self.infer_active_count, self.infer_overflow_count):
            var.assign(0.0)

    def flops_per_sample(self, active_ratio: float | None = None) -> int:
        """Inference matmul FLOPs per sample at `active_ratio` (default: the budget ratio).

        Experts: `4 * T * E * a * D * H`; one router: `2 * T * D * E`.
        """
        a = self.budget_ratio() if active_ratio is None else active_ratio
        t, d, e, h = self.num_tokens, self.token_dim, self.num_experts, self.expert_dim
        return int(round(4 * t * e * a * d * h)) + 2 * t * d * e

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "hidden_ratio": self.hidden_ratio,
                "target_active_ratio": self.target_active_ratio,
                "routing": self.routing,
                "l1_init": self.l1_init,
                "l1_multiplier": self.l1_multiplier,
                "hidden_dim": self.hidden_dim,
                "top_k": self.top_k,
                "load_balance_weight": self.load_balance_weight,
                "inference_mode": self.inference_mode,
                "capacity_factor": self.capacity_factor,
                "balance_l1": self.balance_l1,
                "dense_grad_weight": self.dense_grad_weight,
                "gate_gradient_leak": self.gate_gradient_leak,
                "load_bias_rate": self.load_bias_rate,
                "activation": keras.activations.serialize(self.activation),
                **expert_initializers_config(self),
            }
        )
        return config

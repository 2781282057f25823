"""Per-token feed-forward network (RankMixer, Eqs. 6-7)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import keras
from keras import ops

from keras_rankmixer.layers._checks import (
    check_positive,
    check_tokens_shape,
    set_weight_settings,
    weight_settings_config,
)
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.types import ActivationLike, InitializerLike, RegularizerLike

#: The serving-graph levers `cpu_serving_graph` can switch on (see its docstring).
SERVING_LEVERS = frozenset({"ffn", "residual", "tokenizer", "layer_norm", "swiglu"})
#: The levers of `"fused"` (the export default): those that served faster at batch 64 and 512.
#: `"swiglu"` is opt-in: faster at batch 512, slower at 64 (docs/performance.md).
FUSED_SERVING_LEVERS = SERVING_LEVERS - {"swiglu"}
_SERVING = threading.local()


@contextlib.contextmanager
def cpu_serving_graph(levers: Iterable[str] | str = "fused") -> Iterator[frozenset]:
    """Trace the layers in the spelling TF's CPU graph optimiser fuses (TensorFlow only).

    Inside this context, while a `tf.function` is traced for serving without XLA (e.g. by
    `keras_rankmixer.export_saved_model`), the per-token layers emit the same math with the
    same weights as a graph that grappler's remapper rewrites into oneDNN fused kernels:

    - `"ffn"`: `PerTokenFFN` runs one 2-D `MatMul` per token instead of one `BatchMatMulV2`,
      with `BiasAdd` + activation right after it, which the remapper fuses into
      `_MklNativeFusedMatMul[BiasAdd, GeluExact]` (exact erf GELU; also `Relu`, `Elu`, ...) and
      `[BiasAdd]`. TF has no fusion for `BatchMatMulV2` + bias + GELU, so the batched form runs
      the bias add and the exact GELU's `Neg`/`Mul`/`Erfc`/`Mul`/`Mul` as separate passes over
      the k-times wider hidden activation.
    - `"residual"`: `RankMixerBlock` hands its residual to the FFN, so the second matmul of
      every token becomes `_MklNativeFusedMatMul[BiasAdd, Add]` (bias and skip connection in
      the matmul's epilogue).
    - `"tokenizer"`: `FeatureTokenizer` projects each slice with its own 2-D
      `MatMul` + `BiasAdd` (fused) instead of an `Einsum`.
    - `"layer_norm"`: `RankMixerBlock`'s LayerNorms are spelled as Keras 2 spelled them
      (`Reshape` -> `FusedBatchNormV3(is_training)` -> `Reshape` -> `* gamma + beta`), the
      pattern the remapper turns into one `_MklLayerNorm` when the batch size is dynamic (as
      in a SavedModel signature), instead of Keras 3's ~10 element-wise ops.

    - `"swiglu"` (opt-in, not in `"fused"`): `PerTokenSwiGLU` (TokenMixer-Large) runs its
      gate and up projections as two batched matmuls on the halves of its fused kernel, so
      the `(T, B, 2 H_ffn)` activation is not cut in two by `StridedSlice` copies. It served
      faster at large batches and slower at small ones (docs/performance.md). The SwiGLU
      stays batched: run per token (bias fused, one `_MklSwish`) it served slower.

    Outside this context (training, `model.predict`, JAX, an XLA-compiled export) nothing
    changes. `levers` is `"fused"` (`FUSED_SERVING_LEVERS`, what `export_saved_model`
    uses by default), `"all"` (every lever), `"none"`, a comma-separated string or an
    iterable of the names in `SERVING_LEVERS`.

    Example:

    >>> with cpu_serving_graph("ffn") as levers:
    ...     sorted(levers)
    ['ffn']
    """
    active = parse_serving_levers(levers)
    previous = getattr(_SERVING, "levers", frozenset())
    _SERVING.levers = active
    try:
        yield active
    finally:
        _SERVING.levers = previous


def parse_serving_levers(levers: Iterable[str] | str) -> frozenset:
    """`"fused"` / `"all"` / `"none"` / `"ffn,residual"` / an iterable -> a frozenset of
    `SERVING_LEVERS`."""
    if isinstance(levers, str):
        named = {"all": SERVING_LEVERS, "fused": FUSED_SERVING_LEVERS, "none": (), "": ()}
        levers = named.get(levers, [x.strip() for x in levers.split(",")])
    active = frozenset(levers)
    unknown = active - SERVING_LEVERS
    if unknown:
        raise ValueError(
            f"unknown serving-graph lever(s) {sorted(unknown)}; "
            f"choose from {sorted(SERVING_LEVERS)}, 'fused', 'all' or 'none'."
        )
    return active


def serving_lever(name: str) -> bool:
    """Whether lever `name` of `cpu_serving_graph` is on (always False off TensorFlow)."""
    return name in getattr(_SERVING, "levers", ()) and keras.backend.backend() == "tensorflow"


def resolve_hidden_dim(dim: int, hidden_ratio: float, hidden_dim: int | None) -> int:
    """Hidden width of a (per-token) FFN: `hidden_dim`, else `round(hidden_ratio * dim)`."""
    return int(hidden_dim) if hidden_dim is not None else max(1, int(round(hidden_ratio * dim)))


def per_token_mlp(inputs, kernel_1, bias_1, activation, kernel_2, bias_2, shared=False):
    """`activation(inputs @ kernel_1 + bias_1) @ kernel_2 + bias_2`, per token unless `shared`.

    Per token, `inputs` is `(B, T, D)` and the weights have a leading T axis; the biases may be
    None. The two matmuls of `PerTokenFFN` and `PerTokenSwiGLU` (whose `activation` is the GLU).
    """
    if shared:
        hidden = ops.matmul(inputs, kernel_1)
        if bias_1 is not None:
            hidden = hidden + bias_1
        out = ops.matmul(activation(hidden), kernel_2)
        return out + bias_2 if bias_2 is not None else out
    # Token-major layout: one transpose of the (B, T, D) input in and one of the output
    # out; both batched matmuls ((T, B, D) @ (T, D, H), then (T, B, H) @ (T, H, D)) and the
    # bias + activation epilogue run on (T, B, .) with T as the leading batch axis, so the
    # k-times larger hidden activation is never transposed (the einsum form
    # `btd,tdh->bth` transposes it on the way in and out of each matmul). Same math and
    # weights; measured in docs/performance.md.
    x = ops.transpose(inputs, (1, 0, 2))
    hidden = ops.matmul(x, kernel_1)
    if bias_1 is not None:
        hidden = hidden + ops.expand_dims(bias_1, 1)
    hidden = activation(hidden)
    out = ops.matmul(hidden, kernel_2)
    if bias_2 is not None:
        out = out + ops.expand_dims(bias_2, 1)
    return ops.transpose(out, (1, 0, 2))


class _PerTokenMLP(keras.layers.Layer):
    """What `PerTokenFFN` and `PerTokenSwiGLU` share: a two-matmul MLP for every token.

    `v_t = act(s_t W_up_t + b_up_t) W_down_t + b_down_t` with `W_up_t` `(D, U)` and
    `W_down_t` `(H_ffn, D)`, `H_ffn = hidden_dim` or `round(hidden_ratio * D)` and
    `U = UP_FACTOR * H_ffn`; with `shared` the weights lose their leading T axis. A subclass
    sets `hidden_ratio`, `hidden_dim`, `use_bias`, `shared` and the weight settings
    (`set_weight_settings`) in `__init__`, names its weights in `WEIGHT_NAMES` (up kernel,
    down kernel, up bias, down bias: the order they are made in) and defines `_activate`, the
    function between the two matmuls.
    """

    WEIGHT_NAMES: tuple[str, str, str, str]
    UP_FACTOR = 1

    def _down_initializer(self):
        return self.kernel_initializer

    def build(self, input_shape) -> None:
        num_tokens, dim = check_tokens_shape(type(self).__name__, input_shape)
        hidden = resolve_hidden_dim(dim, self.hidden_ratio, self.hidden_dim)
        self.num_tokens, self.token_dim, self.ffn_dim = num_tokens, dim, hidden
        lead = () if self.shared else (num_tokens,)
        up, down, up_bias, down_bias = self.WEIGHT_NAMES
        width = self.UP_FACTOR * hidden
        kernels = (
            (up, (dim, width), self.kernel_initializer),
            (down, (hidden, dim), self._down_initializer()),
        )
        for name, shape, initializer in kernels:
            weight = self.add_weight(
                name=name,
                shape=lead + shape,
                initializer=initializer,
                regularizer=self.kernel_regularizer,
            )
            setattr(self, name, weight)
        for name, size in ((up_bias, width), (down_bias, dim)):
            weight = None
            if self.use_bias:
                weight = self.add_weight(
                    name=name,
                    shape=lead + (size,),
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                )
            setattr(self, name, weight)
        self.built = True

    def _mlp(self, inputs):
        """The two matmuls on `(batch, T, D)` inputs, by `per_token_mlp`."""
        up, down, up_bias, down_bias = (getattr(self, name) for name in self.WEIGHT_NAMES)
        return per_token_mlp(
            inputs, up, up_bias, self._activate, down, down_bias, shared=self.shared
        )

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs per sample (2 per multiply-add): `2 * T * D * (U + H_ffn)`.

        That is `4 * T * D * H_ffn` for `PerTokenFFN` and `6 * T * D * H_ffn` for
        `PerTokenSwiGLU` (U = 2 H_ffn).
        """
        return 2 * self.num_tokens * self.token_dim * (self.UP_FACTOR + 1) * self.ffn_dim

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "hidden_ratio": self.hidden_ratio,
                "hidden_dim": self.hidden_dim,
                "use_bias": self.use_bias,
                **weight_settings_config(self),
                "shared": self.shared,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class PerTokenFFN(_PerTokenMLP):
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

    WEIGHT_NAMES = ("kernel_1", "kernel_2", "bias_1", "bias_2")

    def __init__(
        self,
        hidden_ratio: float = 4,
        hidden_dim: int | None = None,
        activation: ActivationLike = "gelu",
        use_bias: bool = True,
        kernel_initializer: InitializerLike | None = None,
        bias_initializer: InitializerLike = "zeros",
        kernel_regularizer: RegularizerLike = None,
        bias_regularizer: RegularizerLike = None,
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
        set_weight_settings(
            self, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer
        )
        self.shared = bool(shared)

    def call(self, inputs, residual=None):
        """`FFN(inputs)`, plus `residual` when given (the block's skip connection)."""
        if not self.shared and serving_lever("ffn"):
            return self._call_per_token_2d(inputs, residual)
        out = self._mlp(inputs)
        return out if residual is None else out + residual

    def _call_per_token_2d(self, inputs, residual):
        """The serving spelling (`cpu_serving_graph("ffn")`): T 2-D matmuls whose bias,
        activation and residual TF's remapper fuses into the oneDNN matmul (same math)."""
        import tensorflow as tf

        dtype = self.compute_dtype
        xs = tf.unstack(inputs, axis=1)
        if residual is None:
            rs = [None] * len(xs)
        else:  # the block's skip connection is usually the FFN input itself: unstack it once
            rs = xs if residual is inputs else tf.unstack(residual, axis=1)
        k1 = tf.unstack(ops.cast(self.kernel_1, dtype), axis=0)  # leading-axis slices: views
        k2 = tf.unstack(ops.cast(self.kernel_2, dtype), axis=0)
        if self.bias_1 is not None:
            b1 = tf.unstack(ops.cast(self.bias_1, dtype), axis=0)
            b2 = tf.unstack(ops.cast(self.bias_2, dtype), axis=0)
        outs = []
        for t, x in enumerate(xs):
            hidden = tf.matmul(x, k1[t])
            if self.bias_1 is not None:
                hidden = tf.nn.bias_add(hidden, b1[t])
            out = tf.matmul(self.activation(hidden), k2[t])
            if self.bias_2 is not None:
                out = tf.nn.bias_add(out, b2[t])
            outs.append(out if rs[t] is None else out + rs[t])
        return tf.stack(outs, axis=1)

    def _activate(self, hidden):
        return self.activation(hidden)

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": keras.activations.serialize(self.activation)}

"""`TokenMixerLargeBackbone` (raw features -> MLP tokens -> mix-and-revert blocks -> read-out)
and `TokenMixerLargeRanker` (a `Ranker` that adds TokenMixer-Large's auxiliary losses)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_rankmixer.features import Feature
from keras_rankmixer.layers._checks import (
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_rate,
)
from keras_rankmixer.layers.feature_tokenizer import FeatureTokenizer
from keras_rankmixer.layers.group_tokenizer import GroupTokenizer, SharedMLPTokenizer
from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim
from keras_rankmixer.layers.token_readout import READOUTS, TokenReadout
from keras_rankmixer.layers.tokenmixer_large_block import TokenMixerLargeBlock
from keras_rankmixer.models.backbone import Backbone, feature_front_end, register_backbone
from keras_rankmixer.models.ranker import Ranker
from keras_rankmixer.types import ActivationLike, DTypeLike

#: How the embeddings become tokens.
TOKENIZERS = ("group", "shared_mlp", "slice")
#: The block options the backbone passes to every `TokenMixerLargeBlock`, with the block's own
#: defaults (read from its signature, so the two cannot drift apart).
BLOCK_DEFAULTS: dict[str, Any] = {
    name: p.default
    for name, p in inspect.signature(TokenMixerLargeBlock.__init__).parameters.items()
    if name in ("num_heads", "dropout", "use_revert", "shared_ffn", "ffn", "moe", "norm",
                "small_init", "down_init_scale")
}  # fmt: skip


def block_counts(
    num_tokens: int,
    token_dim: int,
    num_layers: int,
    hidden_ratio: float = 4,
    num_heads: int | None = None,
    **_unused: Any,
) -> dict:
    """Exact parameters and forward matmul FLOPs per example of L dense TokenMixer-Large blocks.

    Per block, two pSwiGLU banks (the H mixed tokens of width `W = T*D/H`, then the T
    tokens of width D), each token `3 * W * h + 2h + W` parameters (`h = round(n W)`), and
    two RMSNorm scales (W and D). FLOPs: `6 * tokens * W * h` per bank. The tokenizer, the
    final norm and the towers depend on the features and tasks and are not included.

    Example:

    >>> block_counts(num_tokens=16, token_dim=192, num_layers=4, hidden_ratio=128 / 192)
    {'block_params': 9496064, 'block_flops_per_sample': 18874368}
    """
    t, d = num_tokens, token_dim
    heads = num_heads or t
    params = flops = 0
    for tokens, width in ((heads, t * d // heads), (t, d)):
        h = resolve_hidden_dim(width, hidden_ratio, None)
        params += tokens * (3 * width * h + 2 * h + width) + width
        flops += 6 * tokens * width * h
    return {"block_params": num_layers * params, "block_flops_per_sample": num_layers * flops}


@register_backbone("tokenmixer_large")
class TokenMixerLargeBackbone(Backbone):
    """TokenMixer-Large: front-end -> MLP tokenizer -> L x `TokenMixerLargeBlock` -> read-out.

    Data flow: one named input per feature spec; lookup/normalise/embed and concatenate per
    semantic group (layers `embed_*`, `group_*`); the tokenizer (layer `tokenizer`):

    - `"group"` (the paper): one token per group from its own MLP, plus (with
      `global_token`) a global token from an MLP over all groups, first; T = groups + 1.
    - `"shared_mlp"` (RankElastor): one MLP over all embeddings cut into `num_tokens` tokens.
    - `"slice"`: RankMixer's `FeatureTokenizer` (Eq. 2), `num_tokens` slices projected.

    then L blocks (layers `block_0`, ...; mix, pSwiGLU, revert, pSwiGLU, pre-RMSNorm; see
    `TokenMixerLargeBlock` for every switch), an **inter-layer residual** every
    `inter_residual_every` blocks (layer `inter_residual_{i}` after block i adds the tokens of
    the previous residual point, the tokenizer output at first; never after the last block),
    a final RMSNorm (layer `final_norm`) and the read-out (layer `readout`): the global token
    (the paper), the mean over tokens, or all tokens flattened.

    The inter-residual points are also where `TokenMixerLargeRanker` reads its auxiliary
    predictions (`aux_layer_names`).

    Args:
        features: Feature specs (or their `feature_to_config` dicts).
        token_dim: Token width D.
        num_layers: Number of blocks L (0: tokens straight to the read-out).
        hidden_ratio: pSwiGLU hidden width n as a multiple of each bank's token width.
        num_tokens: T for `"shared_mlp"` / `"slice"` (required there); for `"group"`
            optional, and then checked against groups + global token.
        tokenizer: `"group"` (default), `"shared_mlp"` or `"slice"`.
        global_token: `"group"` only: add the global token. Defaults to True.
        tokenizer_hidden_dim: Hidden width of the tokenizer MLPs (None: max(input, D)).
        tokenizer_activation: Activation of the tokenizer MLPs. Defaults to `"gelu"`.
        tokenizer_dropout: Dropout inside the tokenizer MLPs.
        num_heads: Mixing heads H (None: H = T). D must be divisible by H.
        dropout: Dropout on every block branch.
        use_revert, shared_ffn, ffn, moe, norm, small_init, down_init_scale: Passed to every
            `TokenMixerLargeBlock` (ablations; `ffn="moe"` with `moe={"num_experts": ...}`
            gives the sparse per-token MoE).
        inter_residual_every: Inter-layer residual every n blocks (0: none). Defaults to 2.
        final_norm: RMSNorm on the last tokens before the read-out. Defaults to True.
        readout: `"global"` (needs the group tokenizer's global token), `"mean"` or
            `"flatten"`. Defaults to `"global"`.
        embedding_l2: L2 penalty on every embedding table (0 = none).
        dtype: Dtype policy of all layers (e.g. `"mixed_bfloat16"`); None for the global one.
        name: Model name.
        **kwargs: `keras.Model` arguments (e.g. `trainable`).

    Output shape: `(batch, D)`, or `(batch, T * D)` for flatten.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature, NumericFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    ...          CategoricalFeature("item", vocabulary_size=50, embedding_dim=8, group="item"),
    ...          NumericFeature("price", embedding_dim=8, group="item")]
    >>> backbone = TokenMixerLargeBackbone(feats, token_dim=16, num_layers=3, num_heads=2)
    >>> tuple(backbone.output.shape), backbone.num_tokens_out, backbone.aux_layer_names
    ((None, 16), 3, ['inter_residual_1'])

    References:
        Jiang et al., "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial
        Recommenders", arXiv:2602.06563.
    """

    def __init__(
        self,
        features: Sequence[Feature | Mapping],
        token_dim: int,
        num_layers: int,
        hidden_ratio: float = 4,
        *,
        num_tokens: int | None = None,
        tokenizer: str = "group",
        global_token: bool = True,
        tokenizer_hidden_dim: int | None = None,
        tokenizer_activation: ActivationLike = "gelu",
        tokenizer_dropout: float = 0.0,
        num_heads: int | None = BLOCK_DEFAULTS["num_heads"],
        dropout: float = BLOCK_DEFAULTS["dropout"],
        use_revert: bool = BLOCK_DEFAULTS["use_revert"],
        shared_ffn: bool = BLOCK_DEFAULTS["shared_ffn"],
        ffn: str = BLOCK_DEFAULTS["ffn"],
        moe: dict | None = BLOCK_DEFAULTS["moe"],
        norm: str = BLOCK_DEFAULTS["norm"],
        small_init: bool = BLOCK_DEFAULTS["small_init"],
        down_init_scale: float = BLOCK_DEFAULTS["down_init_scale"],
        inter_residual_every: int = 2,
        final_norm: bool = True,
        readout: str = "global",
        embedding_l2: float = 0.0,
        dtype: DTypeLike = None,
        name: str = "tokenmixer_large_backbone",
        **kwargs: Any,
    ) -> None:
        # === Argument checks ===
        check_positive("token_dim", token_dim, integer=True)
        check_non_negative_int("num_layers", num_layers)
        if tokenizer not in TOKENIZERS:
            raise ValueError(
                f"`tokenizer` must be one of {TOKENIZERS}, got tokenizer={tokenizer!r}."
            )
        check_positive("num_tokens", num_tokens, allow_none=True, integer=True)
        if tokenizer != "group" and num_tokens is None:
            raise ValueError(f"tokenizer={tokenizer!r} needs `num_tokens`, got num_tokens=None.")
        check_rate("tokenizer_dropout", tokenizer_dropout)
        if moe is not None and not isinstance(moe, dict):  # the block's check, before the copy
            raise ValueError(f"`moe` must be a dict of TokenMixerMoE arguments, got moe={moe!r}.")
        if not isinstance(inter_residual_every, int) or isinstance(inter_residual_every, bool):
            raise ValueError(
                "`inter_residual_every` must be a non-negative int, "
                f"got inter_residual_every={inter_residual_every!r}."
            )
        check_non_negative("inter_residual_every", inter_residual_every)
        if readout not in READOUTS:
            raise ValueError(f"`readout` must be one of {READOUTS}, got readout={readout!r}.")
        if readout == "global" and not (tokenizer == "group" and global_token):
            raise ValueError(
                'readout="global" reads the global token of tokenizer="group" with '
                f"global_token=True; got tokenizer={tokenizer!r}, global_token={global_token!r}."
            )

        # === Own arguments: attributes and config keys; every block gets its share ===
        own = {
            "token_dim": token_dim,
            "num_layers": num_layers,
            "hidden_ratio": hidden_ratio,
            "num_tokens": num_tokens,
            "tokenizer": tokenizer,
            "global_token": bool(global_token),
            "tokenizer_hidden_dim": tokenizer_hidden_dim,
            "tokenizer_activation": tokenizer_activation,
            "tokenizer_dropout": tokenizer_dropout,
            "num_heads": num_heads,
            "dropout": dropout,
            "use_revert": use_revert,
            "shared_ffn": shared_ffn,
            "ffn": ffn,
            "moe": dict(moe) if moe is not None else None,
            "norm": norm,
            "small_init": small_init,
            "down_init_scale": down_init_scale,
            "inter_residual_every": inter_residual_every,
            "final_norm": final_norm,
            "readout": readout,
        }
        block_args = {k: own[k] for k in ("hidden_ratio", *BLOCK_DEFAULTS)}

        # === Layers and graph ===
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        mlp_args = {
            "hidden_dim": tokenizer_hidden_dim,
            "activation": tokenizer_activation,
            "dropout": tokenizer_dropout,
            "dtype": dtype,
            "name": "tokenizer",
        }
        if tokenizer == "group":
            if len(groups) == 1:
                warnings.warn(
                    "TokenMixer-Large's group tokenizer got a single feature group, so it makes "
                    f"{1 + int(global_token)} token(s): give the features semantic groups (the "
                    "`group` of each feature spec) or use tokenizer='slice' or 'shared_mlp' "
                    "with `num_tokens`.",
                    stacklevel=2,
                )
            layer = GroupTokenizer(token_dim, global_token=global_token, **mlp_args)
        elif tokenizer == "shared_mlp":
            layer = SharedMLPTokenizer(num_tokens, token_dim, **mlp_args)
        else:
            layer = FeatureTokenizer(num_tokens, token_dim, dtype=dtype, name="tokenizer")
        x = layer(groups)
        tokens_out = int(x.shape[1])
        if num_tokens is not None and tokens_out != num_tokens:
            raise ValueError(
                f"`num_tokens`={num_tokens} but the group tokenizer makes {tokens_out} tokens "
                f"({len(groups)} groups{' + the global token' if global_token else ''})."
            )
        residual, aux_layer_names = x, []
        for i in range(num_layers):
            x = TokenMixerLargeBlock(**block_args, dtype=dtype, name=f"block_{i}")(x)
            if inter_residual_every and (i + 1) % inter_residual_every == 0 and i < num_layers - 1:
                name_i = f"inter_residual_{i}"
                x = keras.layers.Add(dtype=dtype, name=name_i)([x, residual])
                residual = x
                aux_layer_names.append(name_i)
        if final_norm:
            x = keras.layers.RMSNormalization(dtype=dtype, name="final_norm")(x)
        x = TokenReadout(readout, dtype=dtype, name="readout")(x)
        super().__init__(
            inputs, x, features, own, embedding_l2=embedding_l2, dtype=dtype, name=name, **kwargs
        )
        #: Number of tokens the blocks see.
        self.num_tokens_out = tokens_out
        #: Layers whose outputs are the inter-residual points (the auxiliary read-outs).
        self.aux_layer_names = aux_layer_names

    @classmethod
    def block_counts(cls, **config: Any) -> dict[str, int]:
        """Block parameters and FLOPs per example of a config (the module's `block_counts`).

        Example:

        >>> TokenMixerLargeBackbone.block_counts(num_tokens=4, token_dim=8, num_layers=2,
        ...                                      hidden_ratio=1, tokenizer="shared_mlp")
        {'block_params': 3488, 'block_flops_per_sample': 6144}
        """
        return block_counts(**config)

    def get_config(self) -> dict:
        config = super().get_config()  # the constructor arguments; the activation serialized
        activation = self.tokenizer_activation
        if not isinstance(activation, str):
            config["tokenizer_activation"] = keras.activations.serialize(activation)
        return config


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class TokenMixerLargeRanker(Ranker):
    """A `Ranker` on a `TokenMixerLargeBackbone` with auxiliary losses at the inter-residuals.

    At every inter-residual point i of the backbone (`backbone.aux_layer_names`) and for
    every task, an auxiliary head (`RMSNorm` -> the backbone's read-out -> `Dense(1,
    sigmoid)`, layers `aux_norm_{i}`, `aux_readout_{i}`, `{task}_aux_{i}`) predicts the task
    from the intermediate tokens. Training minimises

        L = L_tasks + aux_loss_weight * sum_i sum_task w_task * BCE(y_task, p_aux_{i,task})

    (`w_task` the tasks' `loss_weight` options, 1 by default; computed in float32).

    The auxiliary heads exist only in training: `ranker(x, training=True)` runs a graph that
    shares every layer with the serving graph and also returns the `{task}_aux_{i}`
    predictions, which `compute_loss` and `compute_metrics` take out again. `predict`,
    `evaluate`, `model.export` and `export_saved_model` call the model with `training=False`,
    which is exactly `Ranker`'s serving graph: outputs `{task: probability}` and no
    auxiliary head in the exported signature. (The heads' variables are still the ranker's
    weights, so they are saved; `serving_model()` is the serving graph without them, for a
    reduced-precision export, which copies weights onto a clone of the graph.) With
    `aux_loss_weight=0`, or a backbone with no inter-residual point, it is a plain `Ranker`.

    Args:
        backbone: A `TokenMixerLargeBackbone`.
        *args, **kwargs: `Ranker`'s arguments (`tasks`, `tower_units`, `tower_dropout`,
            `tower_batch_norm`, `tower_activation`, `name`) and `keras.Model`'s.
        aux_loss_weight: Weight of the auxiliary losses (>= 0), keyword only. Defaults to
            0.1.

    Example:

    >>> import numpy as np
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4, group="u"),
    ...          CategoricalFeature("item", vocabulary_size=10, embedding_dim=4, group="i")]
    >>> backbone = TokenMixerLargeBackbone(feats, token_dim=6, num_layers=3, hidden_ratio=1)
    >>> ranker = TokenMixerLargeRanker(backbone, tasks=["click"], tower_units=(4,))
    >>> x = {"user": np.array([1, 2]), "item": np.array([3, 4])}
    >>> sorted(ranker(x, training=True)), sorted(ranker.predict(x, verbose=0))
    (['click', 'click_aux_1'], ['click'])

    References:
        Jiang et al., "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial
        Recommenders", arXiv:2602.06563 (inter-layer residuals and auxiliary loss).
    """

    def __init__(
        self,
        backbone: TokenMixerLargeBackbone,
        *args: Any,
        aux_loss_weight: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if not isinstance(backbone, TokenMixerLargeBackbone):
            raise ValueError(
                f"`backbone` must be a TokenMixerLargeBackbone, got backbone={backbone!r}."
            )
        check_non_negative("aux_loss_weight", aux_loss_weight)
        super().__init__(backbone, *args, **kwargs)  # tasks, towers, name: as in Ranker
        self.aux_loss_weight = float(aux_loss_weight)
        self._aux_keys: dict[str, str] = {}  # output key -> task
        self._train_graph = None
        if not (self.aux_loss_weight and backbone.aux_layer_names):
            return
        # The serving graph's representation (the backbone's output inside this ranker) and
        # the towers on it, as a sub-model sharing the towers' layers.
        representation = backbone._inbound_nodes[-1].outputs[0]
        towers = keras.Model(representation, {t: self.get_layer(t).output for t in self.tasks})
        # The backbone with its inter-residual points as extra outputs (same layers).
        taps = keras.Model(
            backbone.input,
            [backbone.output] + [backbone.get_layer(n).output for n in backbone.aux_layer_names],
            name=f"{backbone.name}_taps",
        )
        dtype = backbone.dtype_policy
        tapped = taps(self.input)
        outputs = dict(towers(tapped[0]))
        for name_i, tokens in zip(backbone.aux_layer_names, tapped[1:], strict=True):
            i = name_i.rsplit("_", 1)[-1]
            h = keras.layers.RMSNormalization(dtype=dtype, name=f"aux_norm_{i}")(tokens)
            h = TokenReadout(backbone.readout, dtype=dtype, name=f"aux_readout_{i}")(h)
            for task in self.tasks:
                key = f"{task}_aux_{i}"
                outputs[key] = keras.layers.Dense(
                    1, activation="sigmoid", dtype="float32", name=key
                )(h)
                self._aux_keys[key] = task
        self._train_graph = keras.Model(self.input, outputs, name=f"{self.name}_with_aux")

    def serving_model(self) -> keras.Model:
        """The serving graph alone, as a plain functional model sharing this ranker's layers.

        Same inputs, outputs `{task: probability}` and weights, without the auxiliary heads'
        variables; for tools that copy weights between a model and a clone of its graph
        (e.g. `export_saved_model(..., precision="bfloat16")`).
        """
        return keras.Model(self.input, self.output, name=self.name)

    @property
    def aux_output_names(self) -> list[str]:
        """The training-only outputs `{task}_aux_{i}`."""
        return list(self._aux_keys)

    def call(self, inputs, training=None, mask=None):
        if training and self._train_graph is not None:
            return self._train_graph(inputs, training=True)
        return super().call(inputs, training=training, mask=mask)

    def _main(self, y_pred):
        if isinstance(y_pred, Mapping) and self._aux_keys:
            return {t: y_pred[t] for t in self.tasks}
        return y_pred

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=self._main(y_pred), sample_weight=sample_weight, training=training
        )
        aux = [k for k in self._aux_keys if isinstance(y_pred, Mapping) and k in y_pred]
        if not aux:
            return loss
        labels = y if isinstance(y, Mapping) else {self.tasks[0]: y}
        weights = self.default_loss_weights or {}
        total = ops.zeros((), "float32")
        for key in aux:
            task = self._aux_keys[key]
            y_true = ops.reshape(ops.cast(labels[task], "float32"), (-1, 1))
            bce = keras.losses.binary_crossentropy(y_true, ops.cast(y_pred[key], "float32"))
            total = total + weights.get(task, 1.0) * ops.mean(bce)
        return loss + ops.cast(self.aux_loss_weight, "float32") * total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self._main(y_pred), sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config["aux_loss_weight"] = self.aux_loss_weight
        return config


# The task `Ranker.from_preset` and `rankmixer train --model tokenmixer_large` build on it.
TokenMixerLargeBackbone.task_class = TokenMixerLargeRanker

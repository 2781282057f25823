"""`RankMixerBackbone`: raw features -> FeatureTokenizer -> RankMixer blocks -> pooled tokens."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from keras_rankmixer.features import Feature
from keras_rankmixer.flops import count_config
from keras_rankmixer.layers._checks import check_non_negative_int
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.layers.feature_tokenizer import FeatureTokenizer
from keras_rankmixer.layers.rankmixer_block import RankMixerBlock
from keras_rankmixer.layers.sparse_moe import SparseMoE
from keras_rankmixer.models.backbone import Backbone, feature_front_end, register_backbone
from keras_rankmixer.types import ActivationLike, DTypeLike, InitializerLike

#: How the T output tokens become one representation.
POOLINGS = ("mean", "flatten")
#: The backbone's arguments it passes on to every `RankMixerBlock` (with the block's FFN).
BLOCK_ARGUMENTS = ("hidden_ratio", "hidden_dim", "num_heads", "dropout", "activation",
                   "use_token_mixing", "use_residual", "use_layer_norm", "shared_ffn",
                   "kernel_initializer")  # fmt: skip


def _serialize_activation(activation: ActivationLike) -> str | dict:
    if isinstance(activation, str):
        return activation
    return keras.activations.serialize(get_activation(activation))


@register_backbone("rankmixer")
class RankMixerBackbone(Backbone):
    """RankMixer: feature front-end -> `FeatureTokenizer` -> L x `RankMixerBlock` -> pooling.

    Data flow: one named input per feature spec; lookup/normalise/embed and concatenate per
    semantic group (layers `embed_*`, `group_*`); the tokenizer (Eq. 2, layer `tokenizer`)
    splits the concatenated embeddings into T slices and projects each to D; each block
    (layers `block_0`, ..., Eq. 1) is token mixing (Eq. 3-5) then a per-token FFN (Eq. 6-7)
    or `SparseMoE`, post-LayerNorm; the T output tokens are mean-pooled (layer `mean_pool`,
    width D, the paper) or flattened (layer `flatten_tokens`, width T*D).

    Args:
        features: Feature specs (`CategoricalFeature`, `SequenceFeature`, `NumericFeature`,
            or their `feature_to_config` dicts).
        num_tokens: Number of tokens T.
        token_dim: Token width D.
        num_layers: Number of blocks L. 0 feeds the tokenizer's output straight to the
            pooling: an ablation that measures what the blocks add.
        hidden_ratio: Per-token FFN hidden ratio k.
        hidden_dim: Explicit FFN hidden width (overrides `hidden_ratio`).
        num_heads: Token-mixing heads (must equal T; None means T).
        dropout: Dropout on each block's FFN output.
        activation: Per-token FFN activation: `"gelu"` (exact, the default), `"gelu_tanh"` or
            any Keras activation.
        kernel_initializer: The per-token FFN kernels' initializer; None for the blocks'
            default (per-token Glorot-uniform).
        shared_projection: Share the tokenizer's projection across slices.
        use_token_mixing: Table 2 ablation; False skips token mixing.
        use_residual: Table 2 ablation; False drops both residual connections.
        use_layer_norm: Table 2 ablation; False drops both LayerNorms.
        shared_ffn: Table 2 ablation; True shares one FFN across tokens.
        moe: Optional `SparseMoE` keyword arguments (e.g. `{"num_experts": 8,
            "hidden_ratio": 0.5, "routing": "dtsi", "target_active_ratio": 0.25}`); every
            block's FFN is then `SparseMoE(**moe)` (layer `block_i/moe`). Exclusive with
            `ffn_factory` and `block_ffns`.
        ffn_factory: Optional `f(block_index) -> layer` giving each block's FFN (any layer
            mapping `(batch, T, D)` to itself). Not serializable as such: the config stores
            the layers it made as `block_ffns`.
        block_ffns: Optional list of L FFN layers (or their serialized configs), one per
            block; what `ffn_factory` becomes in the config.
        pooling: `"mean"` or `"flatten"`.
        embedding_l2: L2 penalty on every embedding table (0 = none).
        dtype: Dtype policy of all layers (e.g. `"mixed_bfloat16"`); None for the global one.
        name: Model name.
        **kwargs: `keras.Model` arguments (e.g. `trainable`).

    Output shape: `(batch, D)` with mean pooling, `(batch, T * D)` with flatten.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature, NumericFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    ...          NumericFeature("price", embedding_dim=8, group="item")]
    >>> backbone = RankMixerBackbone(feats, num_tokens=4, token_dim=16, num_layers=1)
    >>> tuple(backbone.output.shape), backbone.get_layer("tokenizer").num_tokens
    ((None, 16), 4)

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551, Sections 3.1-3.3.
    """

    def __init__(
        self,
        features: Sequence[Feature | Mapping],
        num_tokens: int,
        token_dim: int,
        num_layers: int,
        hidden_ratio: float = 4,
        *,
        hidden_dim: int | None = None,
        num_heads: int | None = None,
        dropout: float = 0.0,
        activation: ActivationLike = "gelu",
        kernel_initializer: InitializerLike | None = None,
        shared_projection: bool = False,
        use_token_mixing: bool = True,
        use_residual: bool = True,
        use_layer_norm: bool = True,
        shared_ffn: bool = False,
        moe: dict | None = None,
        ffn_factory: Callable[[int], keras.layers.Layer] | None = None,
        block_ffns: Sequence[keras.layers.Layer | Mapping] | None = None,
        pooling: str = "mean",
        embedding_l2: float = 0.0,
        dtype: DTypeLike = None,
        name: str = "rankmixer_backbone",
        **kwargs: Any,
    ) -> None:
        # === Argument checks ===
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got pooling={pooling!r}.")
        check_non_negative_int("num_layers", num_layers)
        given = [
            n
            for n, v in (("moe", moe), ("ffn_factory", ffn_factory), ("block_ffns", block_ffns))
            if v is not None
        ]
        if num_layers == 0 and given:
            raise ValueError(f"`{given[0]}` sets the blocks' FFN; it needs num_layers >= 1.")
        if len(given) > 1:
            raise ValueError(
                f"Give at most one of `moe`, `ffn_factory` and `block_ffns`, got {given}."
            )
        if moe is not None and not isinstance(moe, dict):
            raise ValueError(f"`moe` must be a dict of SparseMoE arguments, got moe={moe!r}.")
        if block_ffns is not None:
            block_ffns = list(block_ffns)
            if len(block_ffns) != num_layers:
                raise ValueError(
                    f"`block_ffns` needs one layer per block ({num_layers}), got {len(block_ffns)}."
                )
        get_activation(activation, "activation")
        if kernel_initializer is not None:
            kernel_initializer = keras.initializers.get(kernel_initializer)

        # === Own arguments: attributes and config keys; every block gets its share ===
        own = {
            "num_tokens": num_tokens,
            "token_dim": token_dim,
            "num_layers": num_layers,
            "hidden_ratio": hidden_ratio,
            "hidden_dim": hidden_dim,
            "num_heads": num_heads,
            "dropout": dropout,
            "activation": activation,
            "kernel_initializer": kernel_initializer,
            "shared_projection": shared_projection,
            "use_token_mixing": use_token_mixing,
            "use_residual": use_residual,
            "use_layer_norm": use_layer_norm,
            "shared_ffn": shared_ffn,
            "moe": dict(moe) if moe is not None else None,
            "pooling": pooling,
        }
        block_args = {k: own[k] for k in BLOCK_ARGUMENTS}

        # === Layers and graph ===
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        x = FeatureTokenizer(
            num_tokens,
            token_dim,
            shared_projection=shared_projection,
            dtype=dtype,
            name="tokenizer",
        )(groups)
        ffns = []
        for i in range(num_layers):
            if moe is not None:
                ffn = SparseMoE(**moe, dtype=dtype, name="moe")
            elif ffn_factory is not None:
                ffn = ffn_factory(i)
            elif block_ffns is not None:
                ffn = block_ffns[i]
                if isinstance(ffn, Mapping):
                    ffn = keras.saving.deserialize_keras_object(dict(ffn))
            else:
                ffn = None
            ffns.append(ffn)
            x = RankMixerBlock(**block_args, ffn=ffn, dtype=dtype, name=f"block_{i}")(x)
        if pooling == "flatten":
            x = keras.layers.Flatten(dtype=dtype, name="flatten_tokens")(x)
        else:
            x = keras.layers.GlobalAveragePooling1D(dtype=dtype, name="mean_pool")(x)
        super().__init__(
            inputs, x, features, own, embedding_l2=embedding_l2, dtype=dtype, name=name, **kwargs
        )
        # FFN layers given from outside (ffn_factory / block_ffns) go into the config.
        self._block_ffn_configs = (
            [keras.saving.serialize_keras_object(f) for f in ffns]
            if ffn_factory is not None or block_ffns is not None
            else None
        )

    @classmethod
    def block_counts(cls, **config: Any) -> dict[str, int]:
        """Block parameters and FLOPs per example of a config (`flops.count_config`).

        Example:

        >>> RankMixerBackbone.block_counts(num_tokens=4, token_dim=32, num_layers=2, hidden_ratio=2)
        {'block_params': 33792, 'block_flops_per_sample': 65536}
        """
        counts = count_config(**config)
        return {k: counts[k] for k in ("block_params", "block_flops_per_sample")}

    def get_config(self) -> dict:
        config = super().get_config()  # the constructor arguments; serialized where needed:
        config["activation"] = _serialize_activation(self.activation)
        if self.kernel_initializer is not None:
            config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        config["block_ffns"] = self._block_ffn_configs
        return config

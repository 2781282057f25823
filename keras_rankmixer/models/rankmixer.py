"""`build_rankmixer`: a `Ranker` on a `RankMixerBackbone` from one flat list of arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras

from keras_rankmixer.features import Feature
from keras_rankmixer.models.presets import get_backbone_preset, get_preset
from keras_rankmixer.models.ranker import Ranker, add_task_towers, check_tasks
from keras_rankmixer.models.rankmixer_backbone import POOLINGS, RankMixerBackbone
from keras_rankmixer.types import ActivationLike, DTypeLike

# Kept for callers of the old module-level names.
_check_tasks = check_tasks
__all__ = ["POOLINGS", "add_task_towers", "build_from_preset", "build_rankmixer"]


def build_rankmixer(
    features: Sequence[Feature],
    num_tokens: int,
    token_dim: int,
    num_layers: int,
    hidden_ratio: float = 4,
    tasks: Sequence[str] | str | Mapping[str, Mapping | None] = ("click",),
    *,
    hidden_dim: int | None = None,
    num_heads: int | None = None,
    dropout: float = 0.0,
    activation: ActivationLike = "gelu",
    tower_units: Sequence[int] = (64,),
    tower_dropout: float = 0.0,
    tower_batch_norm: bool = False,
    tower_activation: ActivationLike = "gelu",
    shared_projection: bool = False,
    use_token_mixing: bool = True,
    use_residual: bool = True,
    use_layer_norm: bool = True,
    shared_ffn: bool = False,
    ffn_factory: Callable[[int], keras.layers.Layer] | None = None,
    moe: dict | None = None,
    pooling: str = "mean",
    embedding_l2: float = 0.0,
    dtype: DTypeLike = None,
    name: str = "rankmixer",
) -> Ranker:
    """Build RankMixer from raw named features: `Ranker(RankMixerBackbone(...), ...)`.

    One flat list of arguments for both parts: the backbone ones go to `RankMixerBackbone`
    (named `{name}_backbone`), the `tasks` and `tower_*` ones to the `Ranker` (named `name`).
    Inputs are a dict of raw features (one `keras.Input` per spec, named after it); outputs
    a dict `{task: probability (batch, 1) float32}`. Data flow: feature front-end (lookup,
    normalise, embed, pool) -> `FeatureTokenizer` (Eq. 2) -> `num_layers` x `RankMixerBlock`
    (Eq. 1) -> mean pooling over tokens -> one tower per task.

    Args:
        features: Feature specs (`CategoricalFeature`, `SequenceFeature`, `NumericFeature`).
        num_tokens: Number of tokens T.
        token_dim: Token width D.
        num_layers: Number of RankMixer blocks L. 0 feeds the tokenizer's output straight
            to the pooling and towers: an ablation that measures what the blocks add.
        hidden_ratio: Per-token FFN hidden ratio k.
        tasks: Task names; one tower and one output each (e.g. `("finish", "skip", "like")`),
            or a dict `{name: {"loss_weight": w}}` (see `Ranker`).
        hidden_dim: Explicit FFN hidden width (overrides `hidden_ratio`).
        num_heads: Token-mixing heads (must equal T; None means T).
        dropout: Dropout on each block's FFN output.
        activation: The per-token FFN activation: `"gelu"` (exact, the default), `"gelu_tanh"`
            (tanh-approximated, faster on GPUs; see `keras_rankmixer.layers.gelu_tanh`) or any
            Keras activation.
        tower_units: Hidden widths of each task tower.
        tower_dropout: Dropout after each tower hidden layer (0 = none).
        tower_batch_norm: Batch normalization before each tower activation (as in the
            DNN/DCNv2 baselines' MLP).
        tower_activation: Activation of each tower hidden layer (`"gelu"` by default;
            `"relu"` gives the baselines' MLP).
        shared_projection: Share the tokenizer's projection across slices.
        use_token_mixing, use_residual, use_layer_norm, shared_ffn: Table 2 ablations.
        ffn_factory: Optional `f(block_index) -> layer` giving each block's FFN (the seam for
            `SparseMoE`); None uses the per-token FFN.
        moe: Optional `SparseMoE` keyword arguments (e.g. `{"num_experts": 8,
            "hidden_ratio": 0.5, "routing": "dtsi", "target_active_ratio": 0.25}`); when set,
            every block's FFN is `SparseMoE(**moe)` (built with `dtype`). Exclusive with
            `ffn_factory`.
        pooling: How the T output tokens reach the towers: `"mean"` (the paper: mean over
            tokens, width D) or `"flatten"` (concatenate them, width T*D; keeps which token
            said what, useful when T is small, e.g. a 10-field dataset).
        embedding_l2: L2 penalty on every embedding table (0 = none; see `Backbone`).
        dtype: Dtype policy for all layers (e.g. `"mixed_bfloat16"`); None uses the global one.
            Outputs are float32 in every case.
        name: Model name.

    Returns:
        A `Ranker` (a functional `keras.Model`); `get_layer` finds the backbone's layers
        too (`"tokenizer"`, `"block_0"`, `"mean_pool"`, `"embed_{feature}"`).

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature, NumericFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    ...          CategoricalFeature("item", vocabulary_size=50, embedding_dim=8, group="item"),
    ...          NumericFeature("price", embedding_dim=8, group="item")]
    >>> model = build_rankmixer(feats, num_tokens=4, token_dim=16, num_layers=1, hidden_ratio=2)
    >>> sorted(model.output_names)
    ['click']

    References:
        Zhu et al., "RankMixer: Scaling Up Ranking Models in Industrial Recommenders",
        arXiv:2507.15551.
    """
    tasks = check_tasks(tasks) if not isinstance(tasks, Mapping) else tasks
    backbone = RankMixerBackbone(
        features,
        num_tokens,
        token_dim,
        num_layers,
        hidden_ratio,
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        dropout=dropout,
        activation=activation,
        shared_projection=shared_projection,
        use_token_mixing=use_token_mixing,
        use_residual=use_residual,
        use_layer_norm=use_layer_norm,
        shared_ffn=shared_ffn,
        ffn_factory=ffn_factory,
        moe=moe,
        pooling=pooling,
        embedding_l2=embedding_l2,
        dtype=dtype,
        name=f"{name}_backbone",
    )
    return Ranker(
        backbone,
        tasks=tasks,
        tower_units=tower_units,
        tower_dropout=tower_dropout,
        tower_batch_norm=tower_batch_norm,
        tower_activation=tower_activation,
        name=name,
    )


def build_from_preset(
    preset: str, features: Sequence[Feature], tasks: Sequence[str] | str = ("click",), **overrides
) -> Ranker:
    """`build_rankmixer` with a named preset's T, D, L, k (and its head, `BackbonePreset.task`);
    keyword overrides win.

    (`Ranker.from_preset` is the same for any registered backbone's preset.)

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> m = build_from_preset("tiny", [CategoricalFeature("a", vocabulary_size=10)])
    >>> m.get_layer("tokenizer").num_tokens
    4
    """
    config = {**get_backbone_preset(preset).task, **get_preset(preset), **overrides}
    return build_rankmixer(features, tasks=tasks, **config)

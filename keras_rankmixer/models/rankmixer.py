"""`build_rankmixer`: raw features -> tokens -> RankMixer blocks -> one tower per task."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from keras_rankmixer.features import Feature, build_inputs, check_features, embed_groups
from keras_rankmixer.layers._checks import check_rate
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.layers.feature_tokenizer import FeatureTokenizer
from keras_rankmixer.layers.rankmixer_block import RankMixerBlock
from keras_rankmixer.layers.sparse_moe import SparseMoE
from keras_rankmixer.models.presets import get_preset


def _check_tasks(tasks) -> list[str]:
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"`tasks` must be a non-empty list of unique names, got {tasks!r}.")
    return tasks


def add_task_towers(
    pooled: keras.KerasTensor,
    tasks: Sequence[str],
    tower_units: Sequence[int] = (64,),
    dtype=None,
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
    activation: str | Callable = "gelu",
) -> dict[str, keras.KerasTensor]:
    """One MLP tower per task ending in a float32 sigmoid; outputs are named after the task.

    Each hidden layer is `Dense -> [BatchNormalization] -> activation -> [Dropout]`; with the
    defaults (GELU, no batch norm, no dropout) it is a single `Dense(activation="gelu")` named
    `{task}_tower_{i}`.
    """
    check_rate("dropout", dropout)
    activation = get_activation(activation)
    outputs = {}
    for task in _check_tasks(tasks):
        h = pooled
        for i, units in enumerate(tower_units):
            name = f"{task}_tower_{i}"
            if batch_norm:
                h = keras.layers.Dense(units, dtype=dtype, name=name)(h)
                # momentum 0.9 as in the baselines' MLP (`models.baselines`)
                h = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, name=f"{name}_bn")(h)
                h = keras.layers.Activation(activation, dtype=dtype, name=f"{name}_activation")(h)
            else:
                h = keras.layers.Dense(units, activation=activation, dtype=dtype, name=name)(h)
            if dropout:
                h = keras.layers.Dropout(dropout, dtype=dtype, name=f"{name}_dropout")(h)
        outputs[task] = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=task)(h)
    return outputs


POOLINGS = ("mean", "flatten")


def build_rankmixer(
    features: Sequence[Feature],
    num_tokens: int,
    token_dim: int,
    num_layers: int,
    hidden_ratio: float = 4,
    tasks: Sequence[str] | str = ("click",),
    *,
    hidden_dim: int | None = None,
    num_heads: int | None = None,
    dropout: float = 0.0,
    activation: str | Callable = "gelu",
    tower_units: Sequence[int] = (64,),
    tower_dropout: float = 0.0,
    tower_batch_norm: bool = False,
    tower_activation: str | Callable = "gelu",
    shared_projection: bool = False,
    use_token_mixing: bool = True,
    use_residual: bool = True,
    use_layer_norm: bool = True,
    shared_ffn: bool = False,
    ffn_factory: Callable[[int], keras.layers.Layer] | None = None,
    moe: dict | None = None,
    pooling: str = "mean",
    dtype=None,
    name: str = "rankmixer",
) -> keras.Model:
    """Build RankMixer as a functional `keras.Model` from raw named features.

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
        tasks: Task names; one tower and one output each (e.g. `("finish", "skip", "like")`).
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
        dtype: Dtype policy for all layers (e.g. `"mixed_bfloat16"`); None uses the global one.
            Outputs are float32 in every case.
        name: Model name.

    Returns:
        A functional `keras.Model`.

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
    features = check_features(features)
    tasks = _check_tasks(tasks)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}, got pooling={pooling!r}.")
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 0:
        raise ValueError(f"`num_layers` must be a non-negative int, got num_layers={num_layers!r}.")
    check_rate("tower_dropout", tower_dropout)
    tower_activation = get_activation(tower_activation, "tower_activation")
    if num_layers == 0 and (moe is not None or ffn_factory is not None):
        raise ValueError("`moe` and `ffn_factory` set the blocks' FFN; they need num_layers >= 1.")
    if moe is not None:
        if ffn_factory is not None:
            raise ValueError("Give at most one of `moe` and `ffn_factory`, got both.")
        if not isinstance(moe, dict):
            raise ValueError(f"`moe` must be a dict of SparseMoE arguments, got moe={moe!r}.")
        moe_config = dict(moe)

        def ffn_factory(index: int) -> keras.layers.Layer:
            return SparseMoE(**moe_config, dtype=dtype, name="moe")

    inputs = build_inputs(features)
    groups = embed_groups(inputs, features, dtype=dtype)
    x = FeatureTokenizer(
        num_tokens, token_dim, shared_projection=shared_projection, dtype=dtype, name="tokenizer"
    )(groups)
    for i in range(num_layers):
        x = RankMixerBlock(
            hidden_ratio=hidden_ratio,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            dropout=dropout,
            activation=activation,
            use_token_mixing=use_token_mixing,
            use_residual=use_residual,
            use_layer_norm=use_layer_norm,
            shared_ffn=shared_ffn,
            ffn=ffn_factory(i) if ffn_factory is not None else None,
            dtype=dtype,
            name=f"block_{i}",
        )(x)
    if pooling == "flatten":
        pooled = keras.layers.Flatten(dtype=dtype, name="flatten_tokens")(x)
    else:
        pooled = keras.layers.GlobalAveragePooling1D(dtype=dtype, name="mean_pool")(x)
    outputs = add_task_towers(
        pooled,
        tasks,
        tower_units,
        dtype=dtype,
        dropout=tower_dropout,
        batch_norm=tower_batch_norm,
        activation=tower_activation,
    )
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def build_from_preset(
    preset: str, features: Sequence[Feature], tasks: Sequence[str] | str = ("click",), **overrides
) -> keras.Model:
    """`build_rankmixer` with a named preset's T, D, L, k; keyword overrides win.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> m = build_from_preset("tiny", [CategoricalFeature("a", vocabulary_size=10)])
    >>> m.get_layer("tokenizer").num_tokens
    4
    """
    config = get_preset(preset)
    config.update(overrides)
    return build_rankmixer(features, tasks=tasks, **config)

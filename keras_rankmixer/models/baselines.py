"""Baselines on the same feature front-end as RankMixer: DNN, DCNv2, and ablation variants.

All models here take the same raw named inputs (`features.build_inputs`), embed them with the
same layers (`features.embed_groups`) and end in the same per-task towers
(`models.rankmixer.add_task_towers`), so only the interaction part differs and comparisons are
fair:

- `build_dnn`: concatenated embeddings -> MLP (the "DLRM-MLP"/DNN baseline).
- `build_dcnv2`: concatenated embeddings -> `keras_rs.layers.FeatureCross` stack (Wang et al.,
  DCN-V2, arXiv:2008.13535), in parallel with (or followed by) an MLP.
- `VARIANTS`: RankMixer's Table 2 ablations as named `build_rankmixer` keyword sets;
  `build_model(name, features, **kwargs)` builds any of them by name.
- `set_embedding_l2`: an L2 penalty on every embedding table (BARS' `embedding_regularizer`),
  applied the same way to every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import keras_rs

from keras_rankmixer.features import Feature, build_inputs, check_features, embed_groups
from keras_rankmixer.layers._checks import check_rate
from keras_rankmixer.layers.categorical_embedding import CategoricalEmbedding
from keras_rankmixer.models.rankmixer import _check_tasks, add_task_towers, build_rankmixer

#: RankMixer ablations (paper Table 2) as `build_rankmixer` keyword overrides.
VARIANTS: dict[str, dict[str, Any]] = {
    "rankmixer": {},
    "no_token_mixing": {"use_token_mixing": False},
    "shared_ffn": {"shared_ffn": True},
    "no_residual": {"use_residual": False},
    "no_layer_norm": {"use_layer_norm": False},
}

#: Every model name `build_model` accepts.
MODEL_NAMES: tuple[str, ...] = ("dnn", "dcnv2", *VARIANTS)


def _check_units(name: str, units: Sequence[int]) -> tuple[int, ...]:
    units = tuple(units)
    if not all(isinstance(u, int) and u > 0 for u in units):
        raise ValueError(f"`{name}` must be a sequence of positive ints, got {name}={units!r}.")
    return units


def _mlp(x, units: Sequence[int], dropout: float, batch_norm: bool, prefix: str, dtype):
    for i, width in enumerate(units):
        x = keras.layers.Dense(width, dtype=dtype, name=f"{prefix}_dense_{i}")(x)
        if batch_norm:
            # momentum 0.9 = PyTorch's default (FuxiCTR/BARS baselines); Keras' 0.99 lags
            # for the ~50 steps per epoch of small benchmarks.
            x = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, name=f"{prefix}_bn_{i}")(
                x
            )
        x = keras.layers.Activation("relu", dtype=dtype, name=f"{prefix}_relu_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, dtype=dtype, name=f"{prefix}_dropout_{i}")(x)
    return x


def _front_end(features: Sequence[Feature], dtype):
    features = check_features(features)
    inputs = build_inputs(features)
    groups = embed_groups(inputs, features, dtype=dtype)
    x = (
        groups[0]
        if len(groups) == 1
        else keras.layers.Concatenate(dtype=dtype, name="embeddings")(groups)
    )
    return inputs, x


def build_dnn(
    features: Sequence[Feature],
    tasks: Sequence[str] | str = ("click",),
    *,
    hidden_units: Sequence[int] = (400, 400, 400),
    dropout: float = 0.0,
    batch_norm: bool = False,
    tower_units: Sequence[int] = (),
    dtype=None,
    name: str = "dnn",
) -> keras.Model:
    """The DNN (MLP) baseline: concatenated feature embeddings -> ReLU MLP -> task towers.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        tasks: Task names; one sigmoid output each.
        hidden_units: Widths of the shared MLP.
        dropout: Dropout after each hidden layer.
        batch_norm: Batch normalization before each ReLU.
        tower_units: Hidden widths of each task tower (empty: one sigmoid unit).
        dtype: Dtype policy for all layers; outputs are float32.
        name: Model name.

    Returns:
        A functional `keras.Model` with dict inputs and dict outputs `{task: (batch, 1)}`.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> model = build_dnn(feats, hidden_units=(8,))
    >>> sorted(model.output_names)
    ['click']
    """
    tasks = _check_tasks(tasks)
    hidden_units = _check_units("hidden_units", hidden_units)
    check_rate("dropout", dropout)
    inputs, x = _front_end(features, dtype)
    x = _mlp(x, hidden_units, dropout, batch_norm, "mlp", dtype)
    return keras.Model(inputs, add_task_towers(x, tasks, tower_units, dtype=dtype), name=name)


def build_dcnv2(
    features: Sequence[Feature],
    tasks: Sequence[str] | str = ("click",),
    *,
    num_cross_layers: int = 3,
    projection_dim: int | None = None,
    hidden_units: Sequence[int] = (400, 400, 400),
    structure: str = "parallel",
    dropout: float = 0.0,
    batch_norm: bool = False,
    tower_units: Sequence[int] = (),
    dtype=None,
    name: str = "dcnv2",
) -> keras.Model:
    """DCN-V2: a stack of `keras_rs.layers.FeatureCross` layers beside (or before) an MLP.

    Each cross layer computes `x_{l+1} = x_0 * (W x_l + b) + x_l` (full-rank `W`, or low-rank
    `U V` with `projection_dim`). With `structure="parallel"` the cross stack and the MLP both
    read the embeddings and their outputs are concatenated; with `"stacked"` the MLP reads the
    cross stack's output.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        tasks: Task names; one sigmoid output each.
        num_cross_layers: Number of cross layers.
        projection_dim: Low-rank size of each cross layer's `W`; None for full rank.
        hidden_units: Widths of the MLP (may be empty: cross network only).
        structure: `"parallel"` or `"stacked"`.
        dropout: Dropout after each MLP hidden layer.
        batch_norm: Batch normalization in the MLP.
        tower_units: Hidden widths of each task tower.
        dtype: Dtype policy for all layers; outputs are float32.
        name: Model name.

    Returns:
        A functional `keras.Model` with dict inputs and dict outputs `{task: (batch, 1)}`.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> model = build_dcnv2(feats, num_cross_layers=2, hidden_units=(8,))
    >>> len([l for l in model.layers if l.name.startswith("cross_") and "deep" not in l.name])
    2

    References:
        Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
        Web-scale Learning to Rank Systems", WWW 2021, arXiv:2008.13535.
    """
    tasks = _check_tasks(tasks)
    hidden_units = _check_units("hidden_units", hidden_units)
    check_rate("dropout", dropout)
    if not isinstance(num_cross_layers, int) or num_cross_layers < 1:
        raise ValueError(
            f"`num_cross_layers` must be a positive int, got num_cross_layers={num_cross_layers!r}."
        )
    if structure not in ("parallel", "stacked"):
        raise ValueError(f"`structure` must be 'parallel' or 'stacked', got {structure!r}.")
    if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim < 1):
        raise ValueError(
            f"`projection_dim` must be None or a positive int, got projection_dim={projection_dim!r}."
        )
    inputs, x0 = _front_end(features, dtype)
    cross = x0
    for i in range(num_cross_layers):
        cross = keras_rs.layers.FeatureCross(
            projection_dim=projection_dim, dtype=dtype, name=f"cross_{i}"
        )(x0, cross)
    if structure == "stacked":
        out = _mlp(cross, hidden_units, dropout, batch_norm, "mlp", dtype)
    else:
        deep = _mlp(x0, hidden_units, dropout, batch_norm, "mlp", dtype)
        out = (
            keras.layers.Concatenate(dtype=dtype, name="cross_and_deep")([cross, deep])
            if hidden_units
            else cross
        )
    return keras.Model(inputs, add_task_towers(out, tasks, tower_units, dtype=dtype), name=name)


def build_model(
    name: str,
    features: Sequence[Feature],
    tasks: Sequence[str] | str = ("click",),
    **kwargs,
) -> keras.Model:
    """Build a model by name: `"dnn"`, `"dcnv2"`, or a RankMixer variant from `VARIANTS`.

    For RankMixer variants, `kwargs` are `build_rankmixer` arguments (T, D, L, k, ...); the
    variant's ablation switches are applied on top. For the baselines they are the builder's
    keyword arguments.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("a", vocabulary_size=10, embedding_dim=8)]
    >>> m = build_model("shared_ffn", feats, num_tokens=2, token_dim=8, num_layers=1)
    >>> m.get_layer("block_0").shared_ffn
    True
    """
    if name == "dnn":
        return build_dnn(features, tasks, **kwargs)
    if name == "dcnv2":
        return build_dcnv2(features, tasks, **kwargs)
    if name not in VARIANTS:
        raise ValueError(f"unknown model name={name!r}; available: {list(MODEL_NAMES)}.")
    config = dict(kwargs)
    config.update(VARIANTS[name])
    config.setdefault("name", name)
    return build_rankmixer(features, tasks=tasks, **config)


def set_embedding_l2(model: keras.Model, l2: float) -> keras.Model:
    """Put an L2 penalty `l2 * sum(w**2)` on every embedding table of `model` (in place).

    The penalty is attached to the table variables (so it is part of the training loss) and
    to the layers' configs (so it survives `model.save` / `keras.models.load_model`).
    `l2=0` removes it.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> m = build_dnn([CategoricalFeature("a", vocabulary_size=10)], hidden_units=(4,))
    >>> len(set_embedding_l2(m, 0.01).losses)
    1
    """
    if not l2 >= 0:
        raise ValueError(f"`l2` must be >= 0, got l2={l2!r}.")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, CategoricalEmbedding):
            layer.embeddings_regularizer = regularizer
            layer.embedding.embeddings_regularizer = regularizer
            layer.embedding.embeddings.regularizer = regularizer
    return model

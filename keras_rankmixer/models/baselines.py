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

from keras_rankmixer.features import Feature
from keras_rankmixer.models.backbone import Backbone, set_embedding_regularizer
from keras_rankmixer.models.dcnv2_backbone import DCNv2Backbone
from keras_rankmixer.models.dnn_backbone import DNNBackbone
from keras_rankmixer.models.ranker import Ranker, check_tasks
from keras_rankmixer.models.rankmixer import build_rankmixer

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

#: The validated defaults of `rankmixer train --model dnn|dcnv2` (benchmarks/RESULTS.md,
#: "Defaults: what validation favours", #18): BARS' MLP (400, 400, 400) with batch norm and
#: dropout 0.2, embedding L2 0.01 (`set_embedding_l2`); DCNv2 with 3 cross layers. The
#: builders' own defaults stay the plain MLP (no batch norm, no dropout).
BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dnn": {
        "hidden_units": (400, 400, 400),
        "batch_norm": True,
        "dropout": 0.2,
        "embedding_l2": 0.01,
    },
    "dcnv2": {
        "num_cross_layers": 3,
        "hidden_units": (400, 400, 400),
        "batch_norm": True,
        "dropout": 0.2,
        "embedding_l2": 0.01,
    },
}


def _baseline(
    backbone_cls: type[Backbone],
    features: Sequence[Feature],
    tasks: Sequence[str] | str,
    tower_units: Sequence[int],
    name: str,
    backbone_kwargs: dict[str, Any],
) -> Ranker:
    """`Ranker(backbone_cls(features, name=f"{name}_backbone", **backbone_kwargs), ...)`."""
    tasks = check_tasks(tasks)
    backbone = backbone_cls(features, name=f"{name}_backbone", **backbone_kwargs)
    return Ranker(backbone, tasks=tasks, tower_units=tower_units, name=name)


def build_dnn(
    features: Sequence[Feature],
    tasks: Sequence[str] | str = ("click",),
    *,
    tower_units: Sequence[int] = (),
    name: str = "dnn",
    **backbone_kwargs: Any,
) -> Ranker:
    """The DNN (MLP) baseline: concatenated feature embeddings -> ReLU MLP -> task towers.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        tasks: Task names; one sigmoid output each.
        tower_units: Hidden widths of each task tower (empty: one sigmoid unit).
        name: Model name.
        **backbone_kwargs: `DNNBackbone` arguments, with its defaults: `hidden_units`
            (400, 400, 400), `dropout` after each hidden layer (0), `batch_norm` before each
            ReLU (False), `dtype` for all layers (outputs are float32).

    Returns:
        A `Ranker` (dict inputs, dict outputs `{task: (batch, 1)}`) on a backbone named
        `{name}_backbone`.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> model = build_dnn(feats, hidden_units=(8,))
    >>> sorted(model.output_names)
    ['click']
    """
    return _baseline(DNNBackbone, features, tasks, tower_units, name, backbone_kwargs)


def build_dcnv2(
    features: Sequence[Feature],
    tasks: Sequence[str] | str = ("click",),
    *,
    tower_units: Sequence[int] = (),
    name: str = "dcnv2",
    **backbone_kwargs: Any,
) -> Ranker:
    """DCN-V2: a stack of `keras_rs.layers.FeatureCross` layers beside (or before) an MLP.

    Each cross layer computes `x_{l+1} = x_0 * (W x_l + b) + x_l` (full-rank `W`, or low-rank
    `U V` with `projection_dim`). With `structure="parallel"` the cross stack and the MLP both
    read the embeddings and their outputs are concatenated; with `"stacked"` the MLP reads the
    cross stack's output.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        tasks: Task names; one sigmoid output each.
        tower_units: Hidden widths of each task tower.
        name: Model name.
        **backbone_kwargs: `DCNv2Backbone` arguments, with its defaults: `num_cross_layers`
            (3), `projection_dim` (None: full rank), `hidden_units` of the MLP ((400, 400,
            400); may be empty: cross network only), `structure` (`"parallel"` or
            `"stacked"`), `dropout` (0) and `batch_norm` (False) of the MLP, `dtype`.

    Returns:
        A `Ranker` (dict inputs, dict outputs `{task: (batch, 1)}`) on a backbone named
        `{name}_backbone`.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> model = build_dcnv2(feats, num_cross_layers=2, hidden_units=(8,))
    >>> len([l for l in model.backbone.layers if l.name.startswith("cross_") and "deep" not in l.name])
    2

    References:
        Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
        Web-scale Learning to Rank Systems", WWW 2021, arXiv:2008.13535.
    """
    return _baseline(DCNv2Backbone, features, tasks, tower_units, name, backbone_kwargs)


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
    to the layers' configs and every backbone's `embedding_l2` (so it survives `model.save` /
    `keras.models.load_model`).
    `l2=0` removes it.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> m = build_dnn([CategoricalFeature("a", vocabulary_size=10)], hidden_units=(4,))
    >>> len(set_embedding_l2(m, 0.01).losses)
    1
    """
    set_embedding_regularizer(model, l2)
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, Backbone):
            layer.embedding_l2 = l2  # in the backbone's config: survives saving
    return model

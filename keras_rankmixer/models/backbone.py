"""`Backbone`: raw features -> one representation per example; the registry of backbones.

A backbone is a functional `keras.Model` subclass built in `__init__` from plain arguments
(the keras-hub pattern): it makes one named `keras.Input` per feature spec, runs the shared
feature front-end (lookup or hash, normalise, embed, concatenate per group;
`keras_rankmixer.features`) and its own interaction part, and outputs a `(batch, width)`
representation. Task heads live elsewhere (`keras_rankmixer.models.Ranker`).

Its config holds the feature specs (`features.feature_to_config`), so a saved `.keras` file
describes its own inputs, and `Backbone.from_config(backbone.get_config())` rebuilds it.

**Adding a backbone.** Subclass `Backbone`, build the graph in `__init__` with
`feature_front_end`, end it with one call `super().__init__(inputs, outputs, features,
arguments, ...)` (`arguments`: the class's own constructor arguments, which become its
attributes and config keys), extend `get_config` only for values that need serializing, and
register the class under a name, which also registers it with Keras' serialization (so
`keras.saving.load_model` finds it):

```python
from keras_rankmixer.models.backbone import Backbone, feature_front_end, register_backbone


@register_backbone("tokenmixer_large")
class TokenMixerLargeBackbone(Backbone):
    def __init__(self, features, num_tokens, ..., dtype=None, name="tokenmixer_large_backbone",
                 **kwargs):
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        x = ...  # tokenizer, blocks, pooling -> (batch, width)
        own = {"num_tokens": num_tokens, ...}  # attributes and config keys
        super().__init__(inputs, x, features, own, dtype=dtype, name=name, **kwargs)

    @classmethod
    def block_counts(cls, **config):  # only needed if the class has presets
        return {"block_params": ..., "block_flops_per_sample": ...}
```

and import the module in `keras_rankmixer/models/__init__.py` so the registration runs on
`import keras_rankmixer`. Then `get_backbone_class("tokenmixer_large")`, presets naming
`backbone="tokenmixer_large"` (`models.presets.BACKBONE_PRESETS`; their stated counts are
checked against `block_counts`, and the README's table is regenerated with
`python -m keras_rankmixer.models.presets`), `Backbone.from_preset`, `Ranker.from_preset`
and `Ranker(TokenMixerLargeBackbone(...))` all work. Keyword arguments `keras.Model` does not
know are a `TypeError` (`check_model_kwargs`), so pass only `trainable` through `**kwargs`.
A backbone whose task needs more than `Ranker` (extra losses) names it in the class
attribute `task_class` (`TokenMixerLargeBackbone.task_class = TokenMixerLargeRanker`):
`Ranker.from_preset` and `rankmixer train --model NAME` then build that task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from keras_rankmixer.features import (
    Feature,
    build_inputs,
    check_features,
    embed_groups,
    feature_to_config,
)
from keras_rankmixer.layers.categorical_embedding import CategoricalEmbedding
from keras_rankmixer.types import DTypeLike

PACKAGE = "keras_rankmixer"
_BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str, package: str = PACKAGE) -> Callable[[type], type]:
    """Class decorator: register a `Backbone` subclass under `name` (and with Keras).

    The class is also registered as a Keras serializable (`package>ClassName`), so saved
    models holding it load with `keras.saving.load_model`.

    Args:
        name: Registry name (e.g. `"rankmixer"`); presets refer to backbones by it.
        package: Keras serialization package of the class.

    Returns:
        The decorator, which returns the class unchanged.

    Example:

    >>> "rankmixer" in backbone_names()
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got name={name!r}.")

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise ValueError(f"register_backbone({name!r}) needs a Backbone subclass, got {cls!r}.")
        known = _BACKBONES.get(name)
        if known is not None and _qualname(known) != _qualname(cls):
            raise ValueError(
                f"backbone name {name!r} is already registered to {_qualname(known)}; "
                f"cannot register {_qualname(cls)} under it."
            )
        keras.saving.register_keras_serializable(package=package)(cls)
        _BACKBONES[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def backbone_names() -> list[str]:
    """The registered backbone names, sorted.

    Example:

    >>> {"dcnv2", "dnn", "rankmixer", "tokenmixer_large"} <= set(backbone_names())
    True
    """
    return sorted(_BACKBONES)


def get_backbone_class(name: str) -> type[Backbone]:
    """The `Backbone` subclass registered under `name`; `ValueError` listing the names if unknown.

    Example:

    >>> get_backbone_class("rankmixer").__name__
    'RankMixerBackbone'
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone name={name!r}; registered: {backbone_names()}.")
    return _BACKBONES[name]


def feature_front_end(
    features: Sequence[Feature | Mapping], dtype: DTypeLike = None
) -> tuple[list[Feature], dict[str, keras.KerasTensor], list[keras.KerasTensor]]:
    """Checked specs, one named `keras.Input` per spec, and one embedding per semantic group.

    The front-end every backbone shares (`features.build_inputs` + `features.embed_groups`):
    layers `embed_{feature}` per feature and `group_{group}` where a group holds several.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> specs, inputs, groups = feature_front_end([CategoricalFeature("a", vocabulary_size=5)])
    >>> list(inputs), tuple(groups[0].shape)
    (['a'], (None, 16))
    """
    features = check_features(features)
    inputs = build_inputs(features)
    return features, inputs, embed_groups(inputs, features, dtype=dtype)


def concatenated_embeddings(
    groups: Sequence[keras.KerasTensor], dtype: DTypeLike = None
) -> keras.KerasTensor:
    """All group embeddings side by side (layer `embeddings`; the single group as it is)."""
    if len(groups) == 1:
        return groups[0]
    return keras.layers.Concatenate(dtype=dtype, name="embeddings")(list(groups))


def set_embedding_regularizer(model: keras.Model, l2: float) -> None:
    """Put `l2 * sum(w**2)` on every `CategoricalEmbedding` table inside `model` (0 removes it)."""
    if not (isinstance(l2, int | float) and not isinstance(l2, bool) and l2 >= 0):
        raise ValueError(f"`l2` must be >= 0, got l2={l2!r}.")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, CategoricalEmbedding):
            layer.embeddings_regularizer = regularizer
            layer.embedding.embeddings_regularizer = regularizer
            layer.embedding.embeddings.regularizer = regularizer


def check_model_kwargs(cls: type, kwargs: Mapping[str, Any], allowed: Sequence[str] = ()) -> None:
    """`TypeError` for keyword arguments `keras.Model` would silently drop (a typo, a wrong
    override); `trainable` and `allowed` pass."""
    unknown = sorted(set(kwargs) - {"trainable", *allowed})
    if unknown:
        raise TypeError(f"{cls.__name__} got unexpected keyword argument(s) {unknown}.")


def from_config_with(
    cls: type, config: Mapping[str, Any], key: str, deserialize: Callable[[dict], Any]
) -> Any:
    """`cls(**config)` with `config[key]` deserialized first where it is a dict (a serialized
    object): the `from_config` of `Backbone` (its dtype policy) and `Ranker` (its backbone)."""
    config = dict(config)
    if isinstance(config.get(key), dict):
        config[key] = deserialize(config[key])
    return cls(**config)


class Backbone(keras.Model):
    """Base class of the backbones: a functional model from raw features to `(batch, width)`.

    Subclasses build their graph in `__init__` and pass `inputs`, `outputs` and the checked
    feature specs here. The config holds the specs, the dtype policy and `embedding_l2`;
    subclasses add their own arguments (see the module docstring for the pattern).

    A subclass ends its `__init__` with one call, what it built first, then what it passes
    through: `super().__init__(inputs, x, features, own, embedding_l2=embedding_l2,
    dtype=dtype, name=name, **kwargs)` (`features, inputs` from `feature_front_end`).

    Args:
        inputs: The `keras.Input`s (`feature_front_end`'s), one per feature.
        outputs: The `(batch, width)` representation built on them.
        features: The feature specs the inputs were built from (objects or
            `feature_to_config` dicts).
        embedding_l2: L2 penalty `embedding_l2 * sum(w**2)` on every embedding table (BARS'
            `embedding_regularizer`); 0 for none. Part of the config, so it survives saving.
        dtype: Dtype policy the layers were built with; None for the global policy.
        arguments: The subclass's own constructor arguments `{name: value}`: each becomes an
            attribute and a key of `get_config` (tuples as lists), so a subclass lists them
            once; it overrides `get_config` only for values that need serializing (e.g. an
            activation object).
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> backbone = Backbone.from_preset("tiny", features=[CategoricalFeature("a", vocabulary_size=9)])
    >>> type(backbone).__name__, [f.name for f in backbone.features], tuple(backbone.output.shape)
    ('RankMixerBackbone', ['a'], (None, 32))
    """

    #: The registry name (set by `register_backbone`).
    registry_name: str | None = None
    #: The task class built on this backbone by `Ranker.from_preset` and `rankmixer train
    #: --model NAME` (a `Ranker` subclass, e.g. `TokenMixerLargeRanker`); None: `Ranker`.
    #: Read it through `task_class_of()`.
    task_class: type | None = None

    def __init__(
        self,
        inputs: Any,
        outputs: Any,
        features: Sequence[Feature | Mapping],
        arguments: Mapping[str, Any] | None = None,
        *,
        embedding_l2: float = 0.0,
        dtype: DTypeLike = None,
        **kwargs: Any,
    ) -> None:
        check_model_kwargs(type(self), kwargs, allowed=("name",))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)
        self._features = tuple(check_features(features))
        set_embedding_regularizer(self, embedding_l2)
        self.embedding_l2 = embedding_l2
        arguments = dict(arguments or {})
        self._argument_names = tuple(arguments)
        for key, value in arguments.items():
            setattr(self, key, value)

    @property
    def features(self) -> list[Feature]:
        """The feature specs, one per input (in input order)."""
        return list(self._features)

    @property
    def output_dim(self) -> int:
        """Width of the representation."""
        return int(self.output.shape[-1])

    def get_config(self) -> dict:
        # Not chained to keras.Model: a functional config (layer graph) cannot be passed to
        # the constructor; the constructor arguments rebuild the same graph.
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "features": [feature_to_config(f) for f in self._features],
            "embedding_l2": self.embedding_l2,
        }
        for key in getattr(self, "_argument_names", ()):
            value = getattr(self, key)
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config: dict) -> Backbone:
        return from_config_with(cls, config, "dtype", keras.dtype_policies.get)

    @classmethod
    def task_class_of(cls) -> type:
        """The task class for this backbone class: `task_class`, or `Ranker` if it is None.

        Example:

        >>> from keras_rankmixer.models import RankMixerBackbone, TokenMixerLargeBackbone
        >>> RankMixerBackbone.task_class_of().__name__
        'Ranker'
        >>> TokenMixerLargeBackbone.task_class_of().__name__
        'TokenMixerLargeRanker'
        """
        if cls.task_class is not None:
            return cls.task_class
        from keras_rankmixer.models.ranker import Ranker  # ranker.py imports this module

        return Ranker

    @classmethod
    def block_counts(cls, **config: Any) -> dict[str, int]:
        """Parameters and forward FLOPs per example of the blocks of a config, unbuilt.

        What a preset states (`BackbonePreset.block_params`, `block_flops_per_sample`) and
        the tests check: every backbone class with presets defines it (keys
        `block_params`, `block_flops_per_sample`; `config` as in the preset, no features).
        """
        raise NotImplementedError(
            f"{cls.__name__}.block_counts is not defined; a backbone with presets defines this "
            "classmethod so the presets' stated counts can be checked (see "
            "RankMixerBackbone.block_counts)."
        )

    @classmethod
    def from_preset(
        cls, preset: str, features: Sequence[Feature | Mapping], **overrides: Any
    ) -> Backbone:
        """The backbone of a named preset (`models.presets`); keyword overrides win.

        Called on `Backbone` it builds the preset's class; called on a subclass it checks
        that the preset is one of that class.

        Args:
            preset: Preset name (`keras_rankmixer.models.presets.preset_names()`).
            features: Feature specs.
            **overrides: Constructor arguments replacing the preset's (e.g. `num_layers=1`,
                `dtype="mixed_bfloat16"`).
        """
        from keras_rankmixer.models.presets import get_backbone_preset

        spec = get_backbone_preset(preset)
        backbone_cls = get_backbone_class(spec.backbone)
        if not issubclass(backbone_cls, cls):
            raise ValueError(
                f"preset {preset!r} is a {backbone_cls.__name__}, not a {cls.__name__}; use "
                f"{backbone_cls.__name__}.from_preset or Backbone.from_preset."
            )
        config = dict(spec.config)
        config.update(overrides)
        return backbone_cls(features=features, **config)


def find_backbone(model: keras.Model) -> Backbone | None:
    """`model` itself if it is a `Backbone`, else the one `Backbone` inside it (or None)."""
    if isinstance(model, Backbone):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, Backbone):
        return backbone
    found = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, Backbone)
    ]
    return found[0] if len(found) == 1 else None


def model_features(model: keras.Model, features_file: str | os.PathLike | None = None) -> list:
    """The feature specs of a model: from its backbone's config, or from a `features.json`.

    Models built on a `Backbone` (a `Ranker`, or a backbone itself) carry their specs, so
    the `.keras` file alone is enough. Plain functional models (saved before backbones
    existed) do not; pass `features_file`, the run's `features.json` (a JSON list of
    `feature_to_config` dicts), for them. When both are there the model's specs win.

    Args:
        model: A built or loaded model.
        features_file: Optional path of a `features.json`.

    Returns:
        A list of feature specs.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> from keras_rankmixer.models import build_from_preset
    >>> [f.name for f in model_features(build_from_preset("tiny", [CategoricalFeature("a", vocabulary_size=9)]))]
    ['a']
    """
    backbone = find_backbone(model)
    if backbone is not None:
        return backbone.features
    if features_file is None:
        raise ValueError(
            f"model {model.name!r} holds no Backbone, so it does not carry its feature specs; "
            "pass `features_file` (the run's features.json)."
        )
    with open(features_file) as f:
        return check_features(json.load(f))

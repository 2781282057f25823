"""Declarative feature specifications and the input front-end.

A feature spec says what a raw input column is (categorical id, multi-valued ids, numeric),
how it is looked up or normalised, how wide its embedding is and which semantic group it
belongs to (user, item, context, ...). `build_inputs` makes the named `keras.Input`s and
`embed_groups` turns them into one embedding per group, in a fixed group order, ready for the
`FeatureTokenizer`. The same front-end serves RankMixer and the baselines, so comparisons
between them are fair.

Conventions (documented safe defaults, never silent errors):

- Categorical / sequence ids: out-of-vocabulary values and missing values (negative ids,
  conventionally -1; the empty string for strings) map to the reserved row 0.
- Multi-valued features are fixed-length `(batch, max_length)` arrays padded with -1 (or "").
- Numeric features: NaN / inf mean "missing" and get their own learned embedding.
- `validate_features` checks a batch on the host (missing/unknown column, wrong dtype or
  shape, NaN in an id column) and raises `FeatureError` naming the feature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_rankmixer.layers.categorical_embedding import CategoricalEmbedding
from keras_rankmixer.layers.numeric_embedding import NumericEmbedding


class FeatureError(ValueError):
    """Bad feature data or spec; the message names the feature."""


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
    """A single-valued categorical feature.

    Give exactly one of `vocabulary_size` (integer ids in `[0, N)`), `vocabulary` (explicit
    values, ints or strings) or `num_hash_bins` (hashing, for huge id spaces).

    Example:

    >>> CategoricalFeature("user_id", vocabulary_size=1000, embedding_dim=16, group="user").kind
    'categorical'
    """

    name: str
    vocabulary_size: int | None = None
    vocabulary: tuple | None = None
    num_hash_bins: int | None = None
    embedding_dim: int = 16
    group: str = "default"
    dtype: str = "int64"

    kind = "categorical"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        given = [a for a in ("vocabulary_size", "vocabulary", "num_hash_bins") if getattr(self, a)]
        if len(given) != 1:
            raise FeatureError(
                f"feature {self.name!r}: give exactly one of vocabulary_size, vocabulary or "
                f"num_hash_bins (got {given or 'none'})."
            )
        if self.dtype not in ("int64", "string"):
            raise FeatureError(
                f"feature {self.name!r}: dtype must be 'int64' or 'string', got {self.dtype!r}."
            )
        if self.dtype == "string" and self.vocabulary_size:
            raise FeatureError(
                f"feature {self.name!r}: string features need vocabulary or num_hash_bins."
            )
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise FeatureError(
                f"feature {self.name!r}: embedding_dim must be a positive int, "
                f"got {self.embedding_dim!r}."
            )

    @property
    def input_shape(self) -> tuple:
        return ()

    def make_layer(self, dtype=None) -> keras.layers.Layer:
        return CategoricalEmbedding(
            embedding_dim=self.embedding_dim,
            vocabulary_size=self.vocabulary_size,
            vocabulary=list(self.vocabulary) if self.vocabulary else None,
            num_hash_bins=self.num_hash_bins,
            input_dtype=self.dtype,
            pooling=getattr(self, "pooling", None),
            dtype=dtype,
            name=f"embed_{self.name}",
        )


@dataclasses.dataclass(frozen=True)
class SequenceFeature(CategoricalFeature):
    """A multi-valued / sequence id feature, padded to `max_length` with -1 and pooled.

    Example:

    >>> SequenceFeature("history", vocabulary_size=500, max_length=8, group="user").kind
    'sequence'
    """

    max_length: int = 8
    pooling: str = "mean"

    kind = "sequence"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise FeatureError(
                f"feature {self.name!r}: max_length must be a positive int, got {self.max_length!r}."
            )
        if self.pooling not in ("mean", "sum"):
            raise FeatureError(
                f"feature {self.name!r}: pooling must be 'mean' or 'sum', got {self.pooling!r}."
            )

    @property
    def input_shape(self) -> tuple:
        return (self.max_length,)


@dataclasses.dataclass(frozen=True)
class NumericFeature:
    """A scalar numeric feature, normalised as `(t(x) - mean) / std` and embedded.

    Example:

    >>> NumericFeature("price", mean=10.0, std=5.0, group="item").kind
    'numeric'
    """

    name: str
    mean: float = 0.0
    std: float = 1.0
    transform: str | None = None
    embedding_dim: int = 16
    group: str = "default"
    dtype: str = "float32"

    kind = "numeric"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not (self.std > 0 and np.isfinite(self.std) and np.isfinite(self.mean)):
            raise FeatureError(
                f"feature {self.name!r}: need finite mean and std > 0, got mean={self.mean}, "
                f"std={self.std}."
            )
        if self.transform not in (None, "log1p"):
            raise FeatureError(
                f"feature {self.name!r}: transform must be None or 'log1p', got {self.transform!r}."
            )

    @property
    def input_shape(self) -> tuple:
        return ()

    def make_layer(self, dtype=None) -> keras.layers.Layer:
        return NumericEmbedding(
            embedding_dim=self.embedding_dim,
            mean=self.mean,
            std=self.std,
            transform=self.transform,
            dtype=dtype,
            name=f"embed_{self.name}",
        )


Feature = CategoricalFeature | SequenceFeature | NumericFeature
_KINDS = {"categorical": CategoricalFeature, "sequence": SequenceFeature, "numeric": NumericFeature}


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise FeatureError(
            f"feature name must be a non-empty string of letters, digits and '_', got {name!r}."
        )


def feature_to_config(feature: Feature) -> dict:
    """A JSON-ready dict for a spec (`kind` plus its fields)."""
    config = {"kind": feature.kind}
    for field in dataclasses.fields(feature):
        value = getattr(feature, field.name)
        config[field.name] = list(value) if isinstance(value, tuple) else value
    return config


def feature_from_config(config: Mapping) -> Feature:
    """Inverse of `feature_to_config`."""
    if not isinstance(config, Mapping):
        raise FeatureError(f"a feature spec is a JSON object, got {config!r}.")
    config = dict(config)
    kind = config.pop("kind", "categorical")
    if kind not in _KINDS:
        raise FeatureError(f"unknown feature kind {kind!r}; expected one of {sorted(_KINDS)}.")
    cls = _KINDS[kind]
    valid = [f.name for f in dataclasses.fields(cls)]
    name = config.get("name", "?")
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise FeatureError(
            f"feature {name!r}: unknown key(s) {unknown} for kind {kind!r}; valid keys: "
            f"{['kind', *valid]}."
        )
    if "name" not in config:
        raise FeatureError(f"a {kind!r} feature spec needs a 'name' (got keys {sorted(config)}).")
    return cls(**config)


def check_features(features: Sequence[Feature]) -> list[Feature]:
    """Validate a list of specs (types, unique names) and return it as a list."""
    features = [feature_from_config(f) if isinstance(f, Mapping) else f for f in features]
    if not features:
        raise FeatureError("at least one feature spec is needed.")
    seen = set()
    for f in features:
        if not isinstance(f, CategoricalFeature | NumericFeature):
            raise FeatureError(f"not a feature spec: {f!r}.")
        if f.name in seen:
            raise FeatureError(f"feature {f.name!r} is declared twice.")
        seen.add(f.name)
    return features


def group_order(features: Sequence[Feature]) -> list[str]:
    """Semantic groups in the order of their first feature."""
    return list(dict.fromkeys(f.group for f in features))


def build_inputs(features: Sequence[Feature]) -> dict[str, keras.KerasTensor]:
    """One named `keras.Input` per feature (raw values: ids, strings or floats)."""
    return {
        f.name: keras.Input(shape=f.input_shape, dtype=f.dtype, name=f.name)
        for f in check_features(features)
    }


def embed_groups(
    inputs: Mapping[str, Any], features: Sequence[Feature], dtype=None
) -> list[keras.KerasTensor]:
    """Embed every feature and concatenate within each group; groups in `group_order`."""
    features = check_features(features)
    per_group: dict[str, list] = {g: [] for g in group_order(features)}
    for f in features:
        per_group[f.group].append(f.make_layer(dtype=dtype)(inputs[f.name]))
    return [
        parts[0]
        if len(parts) == 1
        else keras.layers.Concatenate(name=f"group_{g}", dtype=dtype)(parts)
        for g, parts in per_group.items()
    ]


def embedding_width(features: Sequence[Feature]) -> int:
    """Total width E of the concatenated feature embeddings."""
    return sum(f.embedding_dim for f in check_features(features))


def validate_features(data: Mapping[str, Any], features: Sequence[Feature]) -> None:
    """Check a host-side batch against the specs; raise `FeatureError` naming the feature.

    Checks: every declared feature is present, no unknown columns, dtype kind (integer ids,
    strings, numbers), shape (`(batch,)` or `(batch, 1)` for scalars, `(batch, max_length)`
    for sequences), equal batch sizes, and no NaN in id columns.

    Example:

    >>> spec = [CategoricalFeature("item", vocabulary_size=10)]
    >>> validate_features({"item": np.array([1, 2])}, spec)
    >>> validate_features({}, spec)
    Traceback (most recent call last):
    ...
    keras_rankmixer.features.FeatureError: missing feature 'item' (expected: ['item']).
    """
    features = check_features(features)
    names = [f.name for f in features]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise FeatureError(f"unknown feature(s) {unknown}; the model expects {names}.")
    batch = None
    for f in features:
        if f.name not in data:
            raise FeatureError(f"missing feature {f.name!r} (expected: {names}).")
        x = np.asarray(data[f.name])
        if f.dtype == "string":
            if x.dtype.kind not in "USO":
                raise FeatureError(f"feature {f.name!r}: expected strings, got dtype {x.dtype}.")
        elif f.kind == "numeric":
            if x.dtype.kind not in "biuf":
                raise FeatureError(f"feature {f.name!r}: expected numbers, got dtype {x.dtype}.")
        else:
            if x.dtype.kind == "f":
                if np.isnan(x).any():
                    raise FeatureError(
                        f"feature {f.name!r}: NaN in an id column; use -1 for missing ids."
                    )
                if (x != np.round(x)).any():
                    raise FeatureError(
                        f"feature {f.name!r}: expected integer ids, got non-integer floats."
                    )
            elif x.dtype.kind not in "biu":
                raise FeatureError(
                    f"feature {f.name!r}: expected integer ids, got dtype {x.dtype}."
                )
        want = f.input_shape
        ok = (x.ndim == 1 + len(want) and tuple(x.shape[1:]) == want) or (
            not want and x.ndim == 2 and x.shape[1] == 1
        )
        if not ok:
            raise FeatureError(
                f"feature {f.name!r}: expected shape (batch, {', '.join(map(str, want))}) "
                f"got {x.shape}.".replace(", )", ")")
            )
        if batch is not None and x.shape[0] != batch:
            raise FeatureError(
                f"feature {f.name!r}: batch size {x.shape[0]} differs from the others ({batch})."
            )
        batch = x.shape[0]


def adapt_features(features: Sequence[Feature], data: Mapping[str, Any]) -> list[Feature]:
    """Return specs whose numeric mean/std come from `data` (e.g. the training split).

    Categorical specs are returned unchanged; numeric specs get the mean and std of their
    finite values (after the transform).
    """
    out = []
    for f in check_features(features):
        if f.kind == "numeric":
            x = np.asarray(data[f.name], dtype="float64").reshape(-1)
            x = x[np.isfinite(x)]
            if f.transform == "log1p":
                x = np.sign(x) * np.log1p(np.abs(x))
            if x.size:
                f = dataclasses.replace(f, mean=float(x.mean()), std=float(x.std()) or 1.0)
        out.append(f)
    return out

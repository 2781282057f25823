import numpy as np
import pytest

import keras_rankmixer as kr
from keras_rankmixer.features import (
    FeatureError,
    adapt_features,
    feature_from_config,
    feature_to_config,
    group_order,
)

SPECS = [
    kr.CategoricalFeature("user", vocabulary_size=5, group="user"),
    kr.SequenceFeature("hist", vocabulary_size=5, max_length=2, group="user"),
    kr.CategoricalFeature("city", vocabulary=["a", "b"], dtype="string", group="ctx"),
    kr.NumericFeature("price", group="item"),
]


def good():
    return {
        "user": np.array([1, 2]),
        "hist": np.array([[1, -1], [2, 3]]),
        "city": np.array(["a", "zz"], dtype=object),
        "price": np.array([1.0, np.nan], "float32"),
    }


def test_valid_batch_passes_and_scalar_columns_may_be_2d():
    kr.validate_features(good(), SPECS)
    x = good()
    x["user"] = x["user"][:, None]
    kr.validate_features(x, SPECS)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: x.pop("user"), "missing feature 'user'"),
        (lambda x: x.update(extra=np.ones(2)), r"unknown feature\(s\) \['extra'\]"),
        (lambda x: x.update(user=np.array([1.5, 2.0])), "'user'.*non-integer"),
        (lambda x: x.update(user=np.array([np.nan, 1.0])), "'user'.*NaN"),
        (lambda x: x.update(user=np.array(["1", "2"])), "'user'.*integer ids"),
        (lambda x: x.update(city=np.array([1, 2])), "'city'.*strings"),
        (lambda x: x.update(price=np.array(["x", "y"])), "'price'.*numbers"),
        (lambda x: x.update(hist=np.array([1, 2])), "'hist'.*shape"),
        (lambda x: x.update(price=np.ones(3, "float32")), "'price'.*batch size"),
    ],
)
def test_bad_batches_name_the_feature(change, match):
    x = good()
    change(x)
    with pytest.raises(FeatureError, match=match):
        kr.validate_features(x, SPECS)


def test_spec_config_round_trip_and_groups():
    for spec in SPECS:
        assert feature_from_config(feature_to_config(spec)) == spec
    assert group_order(SPECS) == ["user", "ctx", "item"]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: kr.CategoricalFeature("a"), "exactly one"),
        (lambda: kr.CategoricalFeature("a", vocabulary_size=3, num_hash_bins=3), "exactly one"),
        (lambda: kr.CategoricalFeature("a b", vocabulary_size=3), "name"),
        (lambda: kr.CategoricalFeature("a", vocabulary_size=3, dtype="string"), "string"),
        (lambda: kr.NumericFeature("a", std=0), "std"),
        (lambda: kr.SequenceFeature("a", vocabulary_size=3, max_length=0), "max_length"),
        (lambda: feature_from_config({"kind": "image", "name": "a"}), "unknown feature kind"),
    ],
)
def test_bad_specs(make, match):
    with pytest.raises(FeatureError, match=match):
        make()


def test_duplicate_feature_names_rejected():
    with pytest.raises(FeatureError, match="twice"):
        kr.build_rankmixer(SPECS + SPECS[:1], 4, 8, 1, 1)


def test_adapt_numeric_statistics():
    spec = [kr.NumericFeature("p", transform="log1p")]
    data = {"p": np.array([0.0, np.e - 1, np.nan], "float32")}
    (adapted,) = adapt_features(spec, data)
    assert adapted.mean == pytest.approx(0.5, abs=1e-6)
    assert adapted.std == pytest.approx(0.5, abs=1e-6)


def test_string_feature_model_predicts_and_is_not_jit():
    model = kr.build_rankmixer(SPECS, 4, 8, 1, 1)
    out = model.predict(good(), verbose=0)["click"]
    assert out.shape == (2, 1) and np.isfinite(out).all()
    assert not all(layer.supports_jit for layer in model._flatten_layers())


def test_spec_key_typo_names_feature_key_and_valid_keys():
    with pytest.raises(FeatureError) as err:
        feature_from_config({"kind": "sequence", "name": "hist", "max_len": 5})
    assert str(err.value) == (
        "feature 'hist': unknown key(s) ['max_len'] for kind 'sequence'; valid keys: ['kind', "
        "'name', 'vocabulary_size', 'vocabulary', 'num_hash_bins', 'embedding_dim', 'group', "
        "'dtype', 'max_length', 'pooling']."
    )
    with pytest.raises(FeatureError, match=r"^a 'numeric' feature spec needs a 'name'"):
        feature_from_config({"kind": "numeric", "mean": 1.0})
    with pytest.raises(FeatureError, match=r"^a feature spec is a JSON object, got 'user'"):
        feature_from_config("user")

"""The synthetic click log: deterministic by seed, Zipf ids, valid specs, learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from keras_rankmixer.data import make_click_data
from keras_rankmixer.features import validate_features
from keras_rankmixer.training.metrics import roc_auc


@pytest.fixture(scope="module")
def data():
    return make_click_data(20_000, seed=3, tasks=("click", "like"))


def test_deterministic_by_seed(data):
    again = make_click_data(20_000, seed=3, tasks=("click", "like"))
    for name, x in data.features.items():
        np.testing.assert_array_equal(x, again.features[name])
    np.testing.assert_array_equal(data.labels["click"], again.labels["click"])
    other = make_click_data(20_000, seed=4, tasks=("click", "like"))
    assert not np.array_equal(other.labels["click"], data.labels["click"])


def test_features_match_specs_and_missing_conventions(data):
    validate_features(data.features, data.specs)
    numeric = [f.name for f in data.specs if f.kind == "numeric"]
    rate = np.mean([np.isnan(data.features[n]).mean() for n in numeric])
    assert 0.04 < rate < 0.06  # 5% missing numerics (NaN)
    history = data.features["history"]
    assert (history == -1).any() and (history >= 0).any()
    # padding is on the right: once -1, always -1
    assert not ((history[:, 1:] >= 0) & (history[:, :-1] < 0)).any()


def test_zipf_ids_are_head_heavy(data):
    spec = max((f for f in data.specs if f.kind == "categorical"), key=lambda f: f.vocabulary_size)
    counts = np.sort(np.bincount(data.features[spec.name], minlength=spec.vocabulary_size))[::-1]
    top = counts[: max(1, spec.vocabulary_size // 100)].sum() / counts.sum()
    assert top > 0.3  # 1% of the ids carry over 30% of the rows
    assert (counts == 0).mean() > 0.2  # and many ids are never drawn


def test_labels_follow_probabilities(data):
    click, prob = data.labels["click"], data.probabilities["click"]
    assert abs(click.mean() - 0.2) < 0.02  # the requested click rate
    assert abs(click.mean() - prob.mean()) < 0.01
    assert 0.7 < roc_auc(click, prob) < 0.99  # learnable, not trivial
    like = data.labels["like"]
    assert like.sum() > 0 and not (like > click).any()  # like implies click


def test_split_keeps_rows_aligned(data):
    first, rest = data.split(0.75)
    assert len(first.labels["click"]) == 15_000 and len(rest.labels["click"]) == 5_000
    np.testing.assert_array_equal(rest.features["history"], data.features["history"][15_000:])
    np.testing.assert_array_equal(rest.probabilities["click"], data.probabilities["click"][15_000:])

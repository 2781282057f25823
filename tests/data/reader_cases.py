"""Shared cases of the reader tests (test_schema, test_sources, test_pipeline): one small CSV
with every feature kind and the arrays every format must give for it."""

from __future__ import annotations

import os

import numpy as np

from keras_rankmixer.features import CategoricalFeature, NumericFeature, SequenceFeature

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")

SPECS = [
    CategoricalFeature("user", vocabulary_size=100, group="user"),
    CategoricalFeature("city", vocabulary=("paris", "rome"), dtype="string", group="ctx"),
    SequenceFeature("hist", vocabulary_size=50, max_length=3, group="user"),
    NumericFeature("price", group="item"),
]
CSV = """label,user,city,hist,price
1,3,paris,1|2,2.5
0,,rome,,
1,7,,4|5|6|7,-1
"""
EXPECTED = {
    "user": np.array([3, -1, 7]),
    "city": np.array(["paris", "rome", ""], dtype=object),
    "hist": np.array([[1, 2, -1], [-1, -1, -1], [4, 5, 6]]),
    "price": np.array([2.5, np.nan, -1.0], dtype="float32"),
}


def write(tmp_path, name, text):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def check_expected(out):
    for name, want in EXPECTED.items():
        got = out.features[name]
        if want.dtype == object:
            assert got.tolist() == want.tolist(), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(out.labels["label"], [1, 0, 1])

"""Schema: values, missing cells and truncation by feature kind, bad-data errors naming
file/line/column, skip-and-count, hashing, vocabulary adaptation, the modules' examples."""

from __future__ import annotations

import numpy as np
import pytest
from reader_cases import CSV, SPECS, check_expected, write

from keras_rankmixer.data import (
    CRITEO_COLUMNS,
    DataError,
    adapt_vocabularies,
    criteo_features,
    hash_strings,
    read_arrays,
)
from keras_rankmixer.features import CategoricalFeature, NumericFeature


def test_csv_values_missing_and_truncation(tmp_path):
    out = read_arrays(write(tmp_path, "a.csv", CSV), SPECS)
    check_expected(out)
    assert out.features["user"].dtype == np.int64
    assert out.report.rows_read == out.report.rows_kept == 3
    assert out.report.missing == {"user": 1, "city": 1, "hist": 1, "price": 1}
    assert out.report.truncated == {"hist": 1}


@pytest.mark.parametrize(
    "text, message",
    [
        ("label,user\n1,3\n0,4,9\n", "line 3"),  # malformed row: too many fields
        ("label,user\n1,3\n2,4\n", "line 3, column 'label': label must be 0 or 1"),
        ("label,user\n1,3\nnan,4\n", "line 3, column 'label': label must be 0 or 1"),
        ("label,user\n1,3\n0,abc\n", "line 3, column 'user': not an integer id"),
        ("label,user\n1,3.5\n", "line 2, column 'user': not an integer id"),
        ("label,user,extra\n1,3,x\n", "unknown column(s) ['extra']"),
        ("label\n1\n", "missing column(s) ['user']"),
    ],
)
def test_bad_data_names_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as err:
        read_arrays(path, [CategoricalFeature("user", vocabulary_size=10)])
    assert path in str(err.value)
    assert message in str(err.value)


def test_nan_numeric_is_missing_and_ignore_columns(tmp_path):
    path = write(tmp_path, "a.csv", "label,x,extra\n1,nan,a\n0,2,b\n")
    out = read_arrays(path, [NumericFeature("x")], ignore_columns=["extra"])
    assert np.isnan(out.features["x"][0]) and out.features["x"][1] == 2
    assert out.report.missing == {"x": 1}


def test_skip_policy_counts_every_dropped_row(tmp_path):
    text = "label,user\n1,3\n2,4\n0,abc\n0,5,6\n1,8\n"
    path = write(tmp_path, "bad.csv", text)
    out = read_arrays(path, [CategoricalFeature("user", vocabulary_size=10)], on_bad_rows="skip")
    assert out.features["user"].tolist() == [3, 8]
    assert out.report.rows_read == 5 and out.report.rows_kept == 2
    assert sum(out.report.skipped.values()) == 3
    assert any("label must be 0 or 1" in k for k in out.report.skipped)
    assert any("not an integer id" in k for k in out.report.skipped)
    assert any("malformed row" in k for k in out.report.skipped)


def test_hashing_is_stable_and_criteo_layout(tmp_path):
    ids = hash_strings(["05db9164", "68fd1e64", "", "05db9164"])
    assert ids[0] == ids[3] and ids[0] != ids[1] and ids[2] == -1
    assert ids.dtype == np.int64 and (ids[[0, 1]] >= 0).all()
    row = ["1", "5", "", "-1"] + ["3"] * 10 + ["05db9164"] + [""] * 25
    path = write(tmp_path, "day_0.tsv", "\t".join(row) + "\n")
    specs, hashed = criteo_features(embedding_dim=4, num_hash_bins=1000)
    out = read_arrays(path, specs, column_names=CRITEO_COLUMNS, hash_columns=hashed)
    assert out.features["C1"][0] == ids[0] and out.features["C2"][0] == -1
    assert np.isnan(out.features["I2"][0]) and out.features["I3"][0] == -1.0
    assert all(f.dtype == "int64" for f in specs if f.kind == "categorical")


def test_adapt_vocabularies_from_training_split():
    spec = [CategoricalFeature("a", vocabulary_size=10_000), NumericFeature("x")]
    data = {"a": np.array([5000, 7, 5000, -1, 3]), "x": np.array([1.0, 3.0, np.nan, 1, 3])}
    a, x = adapt_vocabularies(spec, data)
    assert a.vocabulary == (3, 7, 5000) and a.vocabulary_size is None
    assert x.mean == pytest.approx(2.0) and x.std == pytest.approx(1.0)
    (a2,) = adapt_vocabularies(spec[:1], data, min_count=2)
    assert a2.vocabulary == (5000,)


def test_skip_keeps_twenty_examples(tmp_path):
    text = "label,user\n" + "".join(f"2,{i % 10}\n" for i in range(30)) + "1,1\n"
    out = read_arrays(
        write(tmp_path, "bad.csv", text),
        [CategoricalFeature("user", vocabulary_size=10)],
        on_bad_rows="skip",
    )
    assert len(out.report.examples) == 20 and sum(out.report.skipped.values()) == 30
    assert out.report.examples[19].endswith(", line 21: label must be 0 or 1 in column 'label'")


def test_inf_numbers_and_negative_ids_are_counted_as_missing(tmp_path):
    text = "label,user,price\n1,-1,inf\n0,-7,-inf\n1,3,nan\n0,4,2.5\n"
    specs = [CategoricalFeature("user", vocabulary_size=10), NumericFeature("price")]
    out = read_arrays(write(tmp_path, "a.csv", text), specs)
    assert out.report.missing == {"user": 2, "price": 3}
    assert out.features["user"].tolist() == [-1, -7, 3, 4]  # negative ids: the reserved row

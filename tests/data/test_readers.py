"""Readers: exact values per format, bad-data errors naming file/line/column, skip-and-count,
sharding, hashing, vocabulary adaptation, and the tf.data pipeline."""

from __future__ import annotations

import doctest
import importlib
import os
import sys

import numpy as np
import pytest
from helpers import run_json_script

from keras_rankmixer.data import (
    CRITEO_COLUMNS,
    DataError,
    adapt_vocabularies,
    criteo_features,
    hash_strings,
    list_files,
    make_dataset,
    read_arrays,
)
from keras_rankmixer.data.readers import check_files
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


def test_csv_values_missing_and_truncation(tmp_path):
    out = read_arrays(write(tmp_path, "a.csv", CSV), SPECS)
    check_expected(out)
    assert out.features["user"].dtype == np.int64
    assert out.report.rows_read == out.report.rows_kept == 3
    assert out.report.missing == {"user": 1, "city": 1, "hist": 1, "price": 1}
    assert out.report.truncated == {"hist": 1}


def test_tsv_header_less_with_column_names(tmp_path):
    text = "".join(line.replace(",", "\t") + "\n" for line in CSV.splitlines()[1:])
    path = write(tmp_path, "a.tsv", text)
    out = read_arrays(path, SPECS, column_names=["label", "user", "city", "hist", "price"])
    check_expected(out)


def test_parquet_and_tfrecord_match_csv(tmp_path):
    import pandas as pd
    import tensorflow as tf

    frame = pd.DataFrame(
        {
            "label": [1, 0, 1],
            "user": pd.array([3, None, 7], dtype="Int64"),
            "city": ["paris", "rome", None],
            "hist": [[1, 2], [], [4, 5, 6, 7]],
            "price": [2.5, None, -1.0],
        }
    )
    pq = os.path.join(str(tmp_path), "a.parquet")
    frame.to_parquet(pq)
    check_expected(read_arrays(pq, SPECS))

    rec = os.path.join(str(tmp_path), "a.tfrecord")
    with tf.io.TFRecordWriter(rec) as w:
        for row in frame.to_dict("records"):
            feat = {
                "label": tf.train.Feature(float_list=tf.train.FloatList(value=[row["label"]])),
                "hist": tf.train.Feature(int64_list=tf.train.Int64List(value=row["hist"])),
            }
            if not pd.isna(row["user"]):
                feat["user"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[row["user"]]))
            if isinstance(row["city"], str):
                feat["city"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[row["city"].encode()])
                )
            if not pd.isna(row["price"]):
                feat["price"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[row["price"]])
                )
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    out = read_arrays(rec, SPECS)
    check_expected(out)
    assert out.report.missing == {"user": 1, "city": 1, "hist": 1, "price": 1}


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


def test_sharding_by_file(tmp_path):
    for i in range(5):
        write(tmp_path, f"part{i}.csv", f"label,user\n1,{i}\n")
    glob = os.path.join(str(tmp_path), "part*.csv")
    shards = [list_files(glob, i, 2) for i in range(2)]
    assert [len(s) for s in shards] == [3, 2]  # the first 5 % 2 shards get one file more
    assert sorted(sum(shards, [])) == list_files(glob)
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    users = [read_arrays(glob, spec, shard_index=i, num_shards=2).features["user"] for i in (0, 1)]
    assert users[0].tolist() == [0, 2, 4] and users[1].tolist() == [1, 3]
    with pytest.raises(DataError, match="cannot feed 6 shards"):
        list_files(glob, 0, 6)
    with pytest.raises(ValueError, match="shard_index"):
        list_files(glob, 2, 2)
    with pytest.raises(DataError, match="no files match"):
        list_files(os.path.join(str(tmp_path), "nothing*.csv"))


def test_make_dataset_batches_shuffles_and_reports(tmp_path):
    rows = "".join(f"{i % 2},{i}\n" for i in range(10))
    path = write(tmp_path, "a.csv", "label,user\n" + rows)
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    ds = make_dataset(path, spec, batch_size=4, chunk_rows=3)
    batches = [(x["user"].numpy(), y["label"].numpy()) for x, y in ds]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), np.arange(10))
    assert ds.report.rows_read == 10
    shuffled = make_dataset(path, spec, batch_size=10, shuffle=True, seed=3, chunk_rows=10)
    first = next(iter(shuffled))[0]["user"].numpy()
    again = next(iter(make_dataset(path, spec, batch_size=10, shuffle=True, seed=3)))
    assert sorted(first.tolist()) == list(range(10)) and first.tolist() != list(range(10))
    np.testing.assert_array_equal(first, again[0]["user"].numpy())
    labels = next(iter(shuffled))[1]["label"].numpy()
    assert labels.dtype == np.int64


def test_shuffle_window_mixes_rows_of_several_files(tmp_path):
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    for i in range(2):  # file i holds users 10*i .. 10*i+9
        write(
            tmp_path, f"p{i}.csv", "label,user\n" + "".join(f"1,{10 * i + j}\n" for j in range(10))
        )
    glob = os.path.join(str(tmp_path), "p*.csv")

    def first_half_files(shuffle_chunks):
        ds = make_dataset(glob, spec, batch_size=20, shuffle=True, seed=1, chunk_rows=10,
                          shuffle_chunks=shuffle_chunks)  # fmt: skip
        users = next(iter(ds))[0]["user"].numpy()
        assert sorted(users.tolist()) == list(range(20))  # every row once
        return {int(u) // 10 for u in users[:10]}  # the files the first 10 rows came from

    assert len(first_half_files(1)) == 1  # one chunk at a time: no mixing across files
    assert first_half_files(2) == {0, 1}
    with pytest.raises(ValueError, match="shuffle_chunks"):
        make_dataset(glob, spec, shuffle_chunks=0)


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


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared data absent")
def test_criteo_sample_file():
    path = os.path.join(SHARED, "deepctr_samples", "criteo_sample.txt")
    specs, hashed = criteo_features(num_hash_bins=1000)
    out = read_arrays(path, specs, format="csv", hash_columns=hashed)
    assert len(out) == 200 and set(out.labels["label"]) <= {0, 1}
    assert out.report.missing["I1"] > 0  # empty cells are counted, not dropped


def test_adapt_vocabularies_from_training_split():
    spec = [CategoricalFeature("a", vocabulary_size=10_000), NumericFeature("x")]
    data = {"a": np.array([5000, 7, 5000, -1, 3]), "x": np.array([1.0, 3.0, np.nan, 1, 3])}
    a, x = adapt_vocabularies(spec, data)
    assert a.vocabulary == (3, 7, 5000) and a.vocabulary_size is None
    assert x.mean == pytest.approx(2.0) and x.std == pytest.approx(1.0)
    (a2,) = adapt_vocabularies(spec[:1], data, min_count=2)
    assert a2.vocabulary == (5000,)


@pytest.mark.parametrize(
    "name",
    ["keras_rankmixer.data.readers", "keras_rankmixer.runs", "keras_rankmixer.models.baselines"],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared data absent")
def test_frappe_layout():
    from keras_rankmixer.data import frappe_features

    path = os.path.join(SHARED, "frappe_x1", "test.csv")
    out = read_arrays(path, frappe_features())
    assert len(out) == 28_860 and out.report.rows_kept == 28_860 and not out.report.missing
    assert set(np.unique(out.labels["label"])) == {0, 1}
    specs = adapt_vocabularies(frappe_features(), out.features)
    assert [len(f.vocabulary) for f in specs][2:5] == [
        len(np.unique(out.features[n])) for n in ("daytime", "weekday", "isweekend")
    ]


_FIT_READS = """
import json, sys
import keras_rankmixer as kr
from keras_rankmixer.data import make_dataset
from keras_rankmixer.features import CategoricalFeature

spec = [CategoricalFeature("user", vocabulary_size=200)]
ds = make_dataset(sys.argv[1], spec, batch_size=32, chunk_rows=64)
model = kr.build_rankmixer(spec, 2, 8, 1, 1, tasks=["label"])
model.compile("sgd", {"label": "binary_crossentropy"}, jit_compile=True)
model.fit(ds, epochs=2, verbose=0)
print(json.dumps({"rows_read": ds.report.rows_read, "steps": int(model.optimizer.iterations)}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_reads_every_row_once_per_epoch_plus_the_jax_build_batch(tmp_path, backend):
    """Two 64-row files, 2 epochs of batch 32: 8 steps; the report counts 256 rows, plus on JAX
    the one chunk that Keras' `fit` reads through a pass of its own to build the step."""
    for i in range(2):
        write(
            tmp_path, f"part-{i}.csv", "label,user\n" + "".join(f"{j % 2},{j}\n" for j in range(64))
        )
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = run_json_script(
        [sys.executable, "-c", _FIT_READS, os.path.join(str(tmp_path), "part-*.csv")], env
    )
    assert result["steps"] == 8
    assert result["rows_read"] == 256 + (64 if backend == "jax" else 0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("label,user\n1,3\n0\n", "line 3: malformed row: expected 2 fields, saw 1"),  # short
        ("label,user\n1,3\n0,4,9\n", "line 3: malformed row: expected 2 fields, saw 3"),
        ("label,user\n1,3\n\n1,4\n", "line 3: malformed row: expected 2 fields, saw 0 (blank"),
        ('label,user\n1,"3\n"\n0,2,9\n', "line 4: malformed row: expected 2 fields, saw 3"),
    ],
)
def test_wrong_field_count_is_malformed_with_its_line(tmp_path, text, message):
    """Short rows are as malformed as long ones (pandas alone pads them with empty cells);
    a quoted field spanning two lines keeps the later line numbers exact."""
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as err:
        read_arrays(path, [CategoricalFeature("user", vocabulary_size=10)])
    assert str(err.value).startswith(f"{path}, {message}")


def test_skip_reports_exact_lines_of_malformed_and_later_rows(tmp_path):
    # lines:   1 header, 2 ok, 3 short, 4 long, 5 ok, 6 bad label, 7 ok, 8 short, 9 bad id
    text = "label,user\n1,3\n0\n0,4,9\n1,5\n2,6\n0,7\n1\n0,x\n"
    path = write(tmp_path, "bad.csv", text)
    for chunk_rows in (1, 2, 65536):  # line numbers must not depend on the chunking
        out = read_arrays(
            path,
            [CategoricalFeature("user", vocabulary_size=10)],
            on_bad_rows="skip",
            chunk_rows=chunk_rows,
        )
        assert out.features["user"].tolist() == [3, 5, 7]
        assert out.report.rows_read == 8 and out.report.rows_kept == 3
        lines = sorted(int(e.split(", line ")[1].split(":")[0]) for e in out.report.examples)
        assert lines == [3, 4, 6, 8, 9], out.report.examples
        assert out.report.skipped == {
            "malformed row (expected 2 fields, saw 1)": 2,
            "malformed row (expected 2 fields, saw 3)": 1,
            "label must be 0 or 1 in column 'label'": 1,
            "not an integer id in column 'user'": 1,
        }


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


def test_check_files_reads_everything_and_keeps_nothing(tmp_path):
    good = write(tmp_path, "good.csv", "label,user\n1,3\n0,\n")
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    report = check_files(good, spec)
    assert (report.rows_read, report.rows_kept, report.missing) == (2, 2, {"user": 1})
    late = "label,user\n" + "1,3\n" * 2000 + "5,3\n"
    with pytest.raises(DataError, match=r"late.csv, line 2002, column 'label'"):
        check_files(write(tmp_path, "late.csv", late), spec, chunk_rows=256)
    assert check_files(write(tmp_path, "h.csv", "label,user\n"), spec).rows_read == 0


def test_dataset_keeps_the_data_error_that_tf_data_wraps(tmp_path):
    import tensorflow as tf

    path = write(tmp_path, "late.csv", "label,user\n" + "1,3\n" * 40 + "0,abc\n")
    ds = make_dataset(path, [CategoricalFeature("user", vocabulary_size=10)], chunk_rows=8)
    with pytest.raises(tf.errors.InvalidArgumentError):
        for _ in ds:
            pass
    assert len(ds.errors) == 1 and isinstance(ds.errors[0], DataError)
    assert "late.csv, line 42, column 'user': not an integer id" in str(ds.errors[0])

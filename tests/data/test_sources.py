"""Sources: every file format gives the same arrays, header-less text, sharding by file, exact
line numbers of malformed rows, the validation pass (`check_files`), Parquet's optional extra,
the named datasets' real files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from reader_cases import CSV, SHARED, SPECS, check_expected, write

from keras_rankmixer.data import (
    DataError,
    adapt_vocabularies,
    check_files,
    criteo_features,
    list_files,
    read_arrays,
)
from keras_rankmixer.features import CategoricalFeature


def test_tsv_header_less_with_column_names(tmp_path):
    text = "".join(line.replace(",", "\t") + "\n" for line in CSV.splitlines()[1:])
    path = write(tmp_path, "a.tsv", text)
    out = read_arrays(path, SPECS, column_names=["label", "user", "city", "hist", "price"])
    check_expected(out)


def test_parquet_and_tfrecord_match_csv(tmp_path):
    pytest.importorskip("pyarrow")  # the optional `parquet` extra
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


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared data absent")
def test_criteo_sample_file():
    path = os.path.join(SHARED, "deepctr_samples", "criteo_sample.txt")
    specs, hashed = criteo_features(num_hash_bins=1000)
    out = read_arrays(path, specs, format="csv", hash_columns=hashed)
    assert len(out) == 200 and set(out.labels["label"]) <= {0, 1}
    assert out.report.missing["I1"] > 0  # empty cells are counted, not dropped


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


def test_check_files_reads_everything_and_keeps_nothing(tmp_path):
    good = write(tmp_path, "good.csv", "label,user\n1,3\n0,\n")
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    report = check_files(good, spec)
    assert (report.rows_read, report.rows_kept, report.missing) == (2, 2, {"user": 1})
    late = "label,user\n" + "1,3\n" * 2000 + "5,3\n"
    with pytest.raises(DataError, match=r"late.csv, line 2002, column 'label'"):
        check_files(write(tmp_path, "late.csv", late), spec, chunk_rows=256)
    assert check_files(write(tmp_path, "h.csv", "label,user\n"), spec).rows_read == 0


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    """pyarrow is the optional `parquet` extra: without it, reading a Parquet file says how to
    install it (a `None` in `sys.modules` makes `import pyarrow` fail, as if absent)."""
    import sys

    path = write(tmp_path, "a.parquet", "")  # never opened: the import fails first
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    for read in (read_arrays, check_files):
        with pytest.raises(ImportError) as err:
            read(path, spec)
        assert str(err.value) == (
            f"{path}: reading Parquet files needs pyarrow, an optional extra: "
            'pip install "keras-rankmixer[parquet]"'
        )
    assert read_arrays(write(tmp_path, "b.csv", "label,user\n1,3\n"), spec).report.rows_kept == 1

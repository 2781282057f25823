"""The native tf.data input path (`keras_rankmixer.data.native`) against the Python reader:
the same rows, values, dtypes and report counts, and the same bad-row errors, on CSV, TSV
(.gz, header-less), TFRecord, every feature kind, missing values, hashing and sharding."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from reader_cases import CSV, SPECS  # the Python reader tests' small CSV, every kind

from keras_rankmixer.data import DataError, hash_strings, read_arrays
from keras_rankmixer.data.native import check_native_files, make_native_dataset
from keras_rankmixer.features import CategoricalFeature, NumericFeature, SequenceFeature

# Every feature kind, with the Python reader's corner cases in the cells.
MIXED_SPECS = [
    CategoricalFeature("uid", vocabulary_size=100),
    CategoricalFeature("big", num_hash_bins=100),
    CategoricalFeature("site", num_hash_bins=100),
    CategoricalFeature("country", vocabulary=("de", "fr"), dtype="string"),
    SequenceFeature("hist", vocabulary_size=50, max_length=3),
    SequenceFeature("tags", num_hash_bins=50, max_length=2),
    SequenceFeature("words", vocabulary=("a", "b"), dtype="string", max_length=2),
    NumericFeature("price"),
]
MIXED_HASH = ["site", "tags"]
ID_CELLS = ["1", "-1", "", "12.0", " 7", "abc", "nan", "NA", "1e3", "+4", "1_0", "2.5", "inf",
            "-0", "007", " None ", "3.", "-2.0", "1 2", "0x10"]  # fmt: skip
BIG_CELLS = ["4611686018427387903", "9223372036854775807", "-9223372036854775808", "",
             "123", "0000000000000000000042"]  # fmt: skip
TEXT_CELLS = ["x", " y ", "", "nan", " nan", "None", "N/A", "05db9164", "é"]
SEQ_CELLS = ["1|2", " 1 | 2 ||3", "", "nan", "1|x", "1.5|2", "4|5|6|7|x", "|", " ", "2.0|1e1",
             "nan|1", "8"]  # fmt: skip
WORD_CELLS = ["a|b|c", "", "nan", " a |b", "|a", "NA|a"]
NUM_CELLS = ["2.5", "", "inf", "-Infinity", "1e400", " 2.5 ", "NA", "1_0.5", "abc", "-0",
             "nan", "+NaN", ".5", "5.", "1e-400", "0x1p3", "1,5", "12", "-7.25e-3"]  # fmt: skip
LABEL_CELLS = ["0", "1", "1.0", " 0", "2", "", "nan", "-1", "1e0", "0.5"]


def write(tmp_path, name, text, mode="w"):
    path = os.path.join(str(tmp_path), name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, mode + ("t" if name.endswith(".gz") else "")) as f:
        f.write(text)
    return path


def collect(ds):
    """All batches of a dataset as NumPy arrays (strings decoded)."""
    feats, labels = {}, {}
    for x, y in ds:
        for out, part in ((feats, x), (labels, y)):
            for k, v in part.items():
                out.setdefault(k, []).append(v.numpy())
    join = (
        {k: np.concatenate(v) for k, v in feats.items()},
        {k: np.concatenate(v) for k, v in labels.items()},
    )
    for k, v in join[0].items():
        if v.dtype == object:
            join[0][k] = np.vectorize(lambda b: b.decode(), otypes=[object])(v)
    return join


def assert_same(paths, specs, labels=("label",), **kw):
    """Native rows, values, dtypes and report == `read_arrays` on the same files."""
    native_only = ("block_rows", "num_parallel_reads", "whole_file_bytes")
    python_kw = {k: v for k, v in kw.items() if k not in native_only}
    want = read_arrays(paths, specs, labels, **python_kw)
    ds = make_native_dataset(paths, specs, labels, batch_size=kw.pop("batch_size", 5), **kw)
    assert ds.engine == "native"
    if len(want):
        feats, labs = collect(ds)
    else:
        feats, labs = {}, {}
        assert not list(ds)
    for f in specs:
        if not len(want):
            break
        got, exp = feats[f.name], want.features[f.name]
        if f.kind == "numeric":  # make_dataset's dtype (read_arrays keeps float64)
            exp = exp.astype("float32")
        assert got.shape == exp.shape, f.name
        if f.dtype == "string":
            assert got.tolist() == exp.tolist(), f.name
        else:
            assert got.dtype == exp.dtype, f.name
            np.testing.assert_array_equal(got, exp, err_msg=f.name)
    for c in want.labels:
        if len(want):
            np.testing.assert_array_equal(labs[c], want.labels[c])
            assert labs[c].dtype == np.int64
    got, exp = ds.report, want.report
    assert (got.rows_read, got.rows_kept) == (exp.rows_read, exp.rows_kept)
    assert got.skipped == exp.skipped
    assert got.missing == exp.missing and got.truncated == exp.truncated
    assert got.examples == exp.examples
    assert got.files == exp.files
    return want


def python_error(paths, specs, labels=("label",), **kw):
    with pytest.raises(DataError) as err:
        read_arrays(paths, specs, labels, **kw)
    return str(err.value)


def native_error(paths, specs, labels=("label",), **kw):
    """The DataError the native dataset raises (when built, or while iterated)."""
    try:
        ds = make_native_dataset(paths, specs, labels, **kw)
    except DataError as e:
        return str(e)
    with pytest.raises(tf.errors.OpError) as err:
        list(ds)
    assert ds.errors, err.value
    assert str(ds.errors[-1]) in str(err.value)
    return str(ds.errors[-1])


def mixed_csv(rng, rows, sep=","):
    names = ["label"] + [f.name for f in MIXED_SPECS]
    pools = [LABEL_CELLS, ID_CELLS, BIG_CELLS, TEXT_CELLS, TEXT_CELLS, SEQ_CELLS, SEQ_CELLS,
             WORD_CELLS, NUM_CELLS]  # fmt: skip
    lines = [sep.join(names)]
    for _ in range(rows):
        cells = [pool[rng.integers(len(pool))] for pool in pools]
        lines.append(sep.join(f'"{c}"' if sep in c else c for c in cells))
    return "\n".join(lines) + "\n"


def test_csv_values_missing_and_truncation(tmp_path):
    want = assert_same(write(tmp_path, "a.csv", CSV), SPECS)
    assert want.report.truncated == {"hist": 1} and len(want) == 3


@pytest.mark.parametrize("block_rows, whole_file_bytes", [(3, 0), (64, 2**26)])
def test_every_feature_kind_and_corner_case_skip_mode(tmp_path, block_rows, whole_file_bytes):
    """Random rows drawn from tricky cells (missing texts, padded numbers, 1_000, 1e3, inf,
    hex floats, bad ids, bad labels, sequences with blanks): same kept rows, values and
    skip counts; blocks of 3 and 64 lines exercise both the fast and the general path, the
    file streamed line by line and read in one piece."""
    path = write(tmp_path, "mixed.csv", mixed_csv(np.random.default_rng(block_rows), 100))
    want = assert_same(path, MIXED_SPECS, hash_columns=MIXED_HASH, on_bad_rows="skip",
                       block_rows=block_rows, whole_file_bytes=whole_file_bytes)  # fmt: skip
    assert want.report.skipped and want.report.rows_kept > 5  # the test sees both


def test_plain_files_take_the_fast_path_and_match(tmp_path):
    """Blocks whose every cell has the plain form (typed cells by one `decode_csv`): ids with
    -1 and empty cells, numbers with empty cells, hashed and vocabulary strings, sequences, a
    column no feature reads; the last block is short."""
    rng = np.random.default_rng(0)
    rows = ["label,a,b,price,site,extra,country,hist"] + [
        f"{rng.integers(2)},{rng.integers(-1, 9000)},{'' if i % 7 == 0 else rng.integers(50)},"
        f"{'' if i % 11 == 0 else f'{rng.normal():.6f}'},s{rng.integers(30)},zz,"
        f"{['de', 'fr', 'it', ''][i % 4]},{'|'.join(map(str, rng.integers(0, 50, i % 4)))}"
        for i in range(500)
    ]
    specs = [CategoricalFeature(c, vocabulary_size=9000) for c in "ab"] + [
        NumericFeature("price"),
        CategoricalFeature("site", num_hash_bins=100),
        CategoricalFeature("country", vocabulary=("de", "fr"), dtype="string"),
        SequenceFeature("hist", vocabulary_size=50, max_length=2),
    ]
    path = write(tmp_path, "plain.csv", "\n".join(rows) + "\n")
    want = assert_same(path, specs, hash_columns=["site"], ignore_columns=["extra"], block_rows=64)
    assert want.report.missing["price"] == 46 and want.report.truncated["hist"] > 0


def test_tsv_gz_header_less_quotes_and_bom(tmp_path):
    text = "\ufeff" + "".join(line.replace(",", "\t") + "\n" for line in CSV.splitlines()[1:])
    path = write(tmp_path, "a.tsv.gz", text + '0\t"5"\t"paris"\t"1|2"\t"3.5"\n')
    assert_same(path, SPECS, column_names=["label", "user", "city", "hist", "price"])
    quoted = 'label,user,city,hist,price\n1,3,"par,is",1|2,2.5\n0,"4","a""b",,\r\n'
    assert_same(write(tmp_path, "q.csv", quoted), SPECS)


def test_tfrecord_matches_python_reader(tmp_path):
    path = os.path.join(str(tmp_path), "a.tfrecord.gz")
    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        for i in range(40):
            feat = {
                "label": tf.train.Feature(float_list=tf.train.FloatList(value=[i % 2])),
                "hist": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=rng.integers(0, 50, i % 5).tolist())
                ),
                "tags": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[b"x", b"", b"nan", b"y"][: i % 4])),
                "words": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[b"a", b"b", b"c"][: i % 4])),
            }  # fmt: skip
            if i % 3:
                feat["uid"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[i - 5]))
                feat["big"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ab"]))
                feat["site"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"nan"]))
            if i % 4:
                feat["country"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[[b"de", b" NA ", b""][i % 3]])
                )
                feat["price"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[[1.5, np.inf, np.nan][i % 3]])
                )
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    specs = [
        f if f.name != "big" else CategoricalFeature("big", num_hash_bins=9) for f in MIXED_SPECS
    ]
    assert_same(path, specs, hash_columns=MIXED_HASH + ["big"], compression="GZIP",
                block_rows=7)  # fmt: skip


def test_hashing_is_hash_strings_bit_for_bit(tmp_path):
    values = ["05db9164", "68fd1e64", "", "nan", " nan", "é", "05db9164"]
    path = write(tmp_path, "h.csv", "label,site\n" + "".join(f"1,{v}\n" for v in values))
    ds = make_native_dataset(path, [CategoricalFeature("site", num_hash_bins=10)],
                             hash_columns=["site"], batch_size=100)  # fmt: skip
    got = next(iter(ds))[0]["site"].numpy()
    np.testing.assert_array_equal(got, hash_strings(values))


def test_sharding_several_files_layouts_and_ignore_columns(tmp_path):
    for i in range(5):
        header = "label,user,extra" if i % 2 else "user,extra,label"
        rows = "".join(
            (f"{j % 2},{10 * i + j},x\n" if i % 2 else f"{10 * i + j},x,{j % 2}\n")
            for j in range(7)
        )
        write(tmp_path, f"part{i}.csv", header + "\n" + rows)
    glob = os.path.join(str(tmp_path), "part*.csv")
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    for shard in (0, 1):
        assert_same(glob, spec, ignore_columns=["extra"], shard_index=shard, num_shards=2,
                    block_rows=3)  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "label,user\n1,3\n0,4,9\n",  # malformed: too many fields
        "label,user\n1,3\n0\n",  # too few
        "label,user\n1,3\n\n1,4\n",  # blank line
        "label,user\n1,3\n2,4\n",
        "label,user\n1,3\nnan,4\n",
        "label,user\n1,3\n0,abc\n",
        "label,user\n1,3.5\n",
        "label,user,extra\n1,3,x\n",
        "label\n1\n",
        "",
        "label,user\n",
        "label,user\n1,3\n0,2\n1,x\n0,3,3\n",
    ],
)
def test_bad_data_raises_the_python_readers_error(tmp_path, text):
    path = write(tmp_path, "bad.csv", text)
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    try:
        read_arrays(path, spec)
    except DataError as e:
        assert native_error(path, spec, block_rows=2) == str(e)
    else:  # e.g. a header-only file, if the Python reader accepts it
        assert_same(path, spec)


def test_skip_policy_counts_every_dropped_row(tmp_path):
    text = "label,user\n1,3\n2,4\n0,abc\n0,5,6\n\n1,8\n0,1.5\n"
    path = write(tmp_path, "bad.csv", text)
    want = assert_same(path, [CategoricalFeature("user", vocabulary_size=10)],
                       on_bad_rows="skip", block_rows=2)  # fmt: skip
    assert want.report.rows_kept == 2 and sum(want.report.skipped.values()) == 5


def test_multi_line_quoted_field_is_refused(tmp_path):
    path = write(tmp_path, "q.csv", 'label,city\n1,"pa\nris"\n')
    spec = [CategoricalFeature("city", vocabulary=("paris",), dtype="string")]
    assert "quoted field continues" in native_error(path, spec)


def test_tfrecord_multi_valued_scalar_raises_the_python_readers_error(tmp_path):
    path = os.path.join(str(tmp_path), "a.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for values in ([1], [1, 2]):
            feat = {
                "label": tf.train.Feature(float_list=tf.train.FloatList(value=[1])),
                "user": tf.train.Feature(int64_list=tf.train.Int64List(value=values)),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    assert native_error(path, spec) == python_error(path, spec)


def test_shuffle_is_a_seeded_permutation_that_changes_every_epoch(tmp_path):
    path = write(tmp_path, "a.csv", "label,user\n" + "".join(f"{i % 2},{i}\n" for i in range(50)))
    spec = [CategoricalFeature("user", vocabulary_size=100)]

    def epochs(seed):
        ds = make_native_dataset(path, spec, batch_size=50, shuffle=True, seed=seed, block_rows=8)
        return [next(iter(ds))[0]["user"].numpy().tolist() for _ in range(2)]

    first, second = epochs(3)
    assert sorted(first) == list(range(50)) and first != list(range(50)) and first != second
    assert epochs(3) == [first, second]


def test_check_native_files_is_check_files(tmp_path):
    path = write(tmp_path, "bad.csv", "label,user\n1,3\n2,4\n0,abc\n0,5,6\n1,-1\n")
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    got = check_native_files(path, spec, on_bad_rows="skip")
    want = read_arrays(path, spec, on_bad_rows="skip").report
    assert got.to_dict() == want.to_dict()
    with pytest.raises(DataError) as err:
        check_native_files(path, spec)
    assert str(err.value) == python_error(path, spec)


def test_parquet_falls_back_to_the_python_reader(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = os.path.join(str(tmp_path), "a.parquet")
    pd.DataFrame({"label": [1, 0], "user": [3, 4]}).to_parquet(path)
    ds = make_native_dataset(path, [CategoricalFeature("user", vocabulary_size=10)])
    assert ds.engine == "python"
    assert next(iter(ds))[0]["user"].numpy().tolist() == [3, 4]


def test_datasets_of_one_schema_share_the_parser_and_keep_their_own_reports(tmp_path):
    """The parser's graph is traced once per schema and file layout (`native._PARSERS`) and
    reused by every later dataset; each dataset's report and errors stay its own."""
    from keras_rankmixer.data import native

    spec = [CategoricalFeature("user", vocabulary_size=10), NumericFeature("price")]
    bad = write(tmp_path, "bad.csv", "label,user,price\n1,3,0.5\n0,x,1\n1,4,\n0,5,2\n")
    good = write(tmp_path, "good.csv", "label,user,price\n" + "1,2,0.1\n" * 7)
    native._PARSERS.clear()  # a cache: whatever earlier tests left in it is not this test's
    skip = make_native_dataset(bad, spec, batch_size=2, on_bad_rows="skip")
    new = list(native._PARSERS)
    assert len(new) == 1  # this schema and layout: one parser
    parser = native._PARSERS[new[0]]
    clean = make_native_dataset(good, spec, batch_size=2)
    strict = make_native_dataset(bad, spec, batch_size=2)  # on_bad_rows="raise"
    assert list(native._PARSERS) == new  # reused, not retraced
    iterators = [iter(skip), iter(clean)]  # one pass of each, their batches interleaved
    while iterators:
        for it in list(iterators):
            try:
                next(it)
            except StopIteration:
                iterators.remove(it)
    assert parser.experimental_get_tracing_count() == 1
    assert (skip.report.rows_read, skip.report.rows_kept) == (4, 3)
    assert skip.report.skipped == {"not an integer id in column 'user'": 1}
    assert skip.report.missing == {"price": 1} and not skip.errors
    assert (clean.report.rows_read, clean.report.rows_kept) == (7, 7)
    assert not clean.report.skipped and not clean.report.missing and not clean.errors
    assert native_error(bad, spec) == python_error(bad, spec)  # another dataset, same parser
    with pytest.raises(tf.errors.OpError):
        list(strict)
    assert len(strict.errors) == 1 and not skip.errors and not clean.errors
    # other sizes of the same columns (vocabulary, embedding): the same parser
    make_native_dataset(good, [CategoricalFeature("user", vocabulary_size=99, embedding_dim=3),
                               NumericFeature("price", embedding_dim=4)])  # fmt: skip
    assert list(native._PARSERS) == new
    # another layout (column order) or another schema: a parser of its own
    make_native_dataset(write(tmp_path, "b.csv", "price,label,user\n0.5,1,3\n"), spec)
    make_native_dataset(good, spec[:1] + [SequenceFeature("price", vocabulary_size=9)])
    assert len(native._PARSERS) == 3

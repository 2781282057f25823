"""ReadOptions: every field checked (the error names it), lists made tuples, from_config /
to_config, `options=` gives what the keyword arguments give in every reader, and a field
given both ways is an error; the deprecated `readers` module still re-exports every name."""

from __future__ import annotations

import dataclasses
import importlib
import json

import numpy as np
import pytest
from reader_cases import CSV, SPECS, write

from keras_rankmixer.data import ReadOptions, check_files, make_dataset, read_arrays
from keras_rankmixer.features import CategoricalFeature

FIELDS = (
    "format",
    "column_names",
    "delimiter",
    "hash_columns",
    "ignore_columns",
    "on_bad_rows",
    "sequence_delimiter",
    "shard_index",
    "num_shards",
    "compression",
    "chunk_rows",
)


def test_fields_and_defaults():
    assert ReadOptions.fields() == FIELDS
    o = ReadOptions()
    assert (o.format, o.column_names, o.delimiter, o.on_bad_rows) == (None, None, None, "raise")
    assert (o.hash_columns, o.ignore_columns, o.sequence_delimiter) == ((), (), "|")
    assert (o.shard_index, o.num_shards, o.compression, o.chunk_rows) == (0, 1, None, 65536)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("format", "xls", "`format` must be one of ('csv', 'tsv', 'parquet', 'tfrecord'), got"),
        ("column_names", "label", "`column_names` must be a list of column names"),
        ("column_names", ["label", 3], "`column_names` must hold column names (strings), got 3"),
        ("delimiter", ";;", "`delimiter` must be one character, got delimiter=';;'."),
        ("delimiter", "", "`delimiter` must be one character"),
        ("hash_columns", "C1", "did you mean hash_columns=['C1']?"),
        ("ignore_columns", 5, "`ignore_columns` must be a list of column names"),
        ("on_bad_rows", "drop", "`on_bad_rows` must be 'raise' or 'skip', got 'drop'."),
        ("sequence_delimiter", "", "`sequence_delimiter` must be a non-empty string"),
        ("shard_index", 2, "`shard_index` must be in [0, 2), got shard_index=2."),
        ("shard_index", -1, "`shard_index` must be in [0, 2)"),
        ("num_shards", 0, "`num_shards` must be a positive int, got num_shards=0."),
        ("compression", "gzip", "`compression` must be None, 'GZIP' or 'ZLIB'"),
        ("chunk_rows", 0, "`chunk_rows` must be a positive int, got chunk_rows=0."),
        ("chunk_rows", 1.5, "`chunk_rows` must be a positive int"),
        ("chunk_rows", True, "`chunk_rows` must be a positive int"),
    ],
)
def test_a_bad_field_is_a_value_error_naming_it(field, value, message):
    kwargs = {field: value}
    if field == "shard_index":
        kwargs["num_shards"] = 2
    with pytest.raises(ValueError) as err:
        ReadOptions(**kwargs)
    assert f"`{field}`" in str(err.value) and message in str(err.value)


def test_values_are_normalised_and_frozen():
    o = ReadOptions(column_names=["label", "user"], hash_columns={"b", "a"}, ignore_columns=None)
    assert o.column_names == ("label", "user") and o.hash_columns == ("a", "b")
    assert o.ignore_columns == ()
    assert hash(o) == hash(ReadOptions(column_names=("label", "user"), hash_columns=["a", "b"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.on_bad_rows = "skip"
    assert o.replace(on_bad_rows="skip").on_bad_rows == "skip" and o.on_bad_rows == "raise"
    with pytest.raises(ValueError, match="`num_shards`"):
        o.replace(num_shards=0)
    sharded = ReadOptions(shard_index=1, num_shards=2)  # a given field changes too
    assert sharded.replace(shard_index=0, num_shards=1) == ReadOptions()
    assert o.replace(column_names=["x"]).column_names == ("x",)
    with pytest.raises(TypeError, match="unknown option"):
        o.replace(epochs=1)
    for value in (None, "", "GZIP", "ZLIB"):
        assert ReadOptions(compression=value).compression == value


def _train_defaults() -> dict:
    for name in ("keras_rankmixer.commands.train", "keras_rankmixer.training"):
        try:
            return dict(importlib.import_module(name).DEFAULTS)
        except (ImportError, AttributeError):
            continue
    pytest.skip("no train DEFAULTS to compare with")


def test_from_config_reads_the_train_config():
    defaults = _train_defaults()
    assert ReadOptions.from_config(defaults) == ReadOptions()  # the CLI's defaults agree
    config = dict(
        defaults,
        train=["a.tsv"],
        format="tsv",
        column_names=["label", "user"],
        hash_columns=["user"],
        on_bad_rows="skip",
        shard_index=1,
        num_shards=2,
    )
    o = ReadOptions.from_config(config)
    assert (o.format, o.column_names, o.hash_columns) == ("tsv", ("label", "user"), ("user",))
    assert (o.on_bad_rows, o.shard_index, o.num_shards) == ("skip", 1, 2)
    # overrides win (e.g. the validation split is never sharded)
    assert ReadOptions.from_config(config, shard_index=0, num_shards=1).num_shards == 1
    with pytest.raises(TypeError, match="unknown option"):
        ReadOptions.from_config(config, epochs=3)
    with pytest.raises(ValueError, match="`on_bad_rows`"):
        ReadOptions.from_config({"on_bad_rows": "ignore"})


def test_to_config_round_trips_through_json():
    o = ReadOptions(format="csv", column_names=["a", "b"], hash_columns=["b"], chunk_rows=7)
    config = json.loads(json.dumps(o.to_config()))
    assert config["column_names"] == ["a", "b"] and config["hash_columns"] == ["b"]
    assert ReadOptions.from_config(config) == o


def _tsv(tmp_path):
    text = "".join(line.replace(",", "\t") + "\n" for line in CSV.splitlines()[1:])
    return write(tmp_path, "a.tsv", text + "2\t4\t\t\t\n")  # a bad label (skipped)


KEYWORDS = dict(
    column_names=["label", "user", "city", "hist", "price"],
    on_bad_rows="skip",
    sequence_delimiter="|",
    chunk_rows=2,
)


def _same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_options_equal_the_keywords_in_every_reader(tmp_path):
    path = _tsv(tmp_path)
    options = ReadOptions(**KEYWORDS)
    want = read_arrays(path, SPECS, **KEYWORDS)
    got = read_arrays(path, SPECS, options=options)
    _same_arrays(got.features, want.features)
    _same_arrays(got.labels, want.labels)
    assert got.report == want.report and got.report.rows_kept == 3
    assert check_files(path, SPECS, options=options) == check_files(path, SPECS, **KEYWORDS)
    assert check_files(path, SPECS, options=options) == want.report
    # some fields in options, the others as keywords: the same
    partial = ReadOptions(column_names=KEYWORDS["column_names"], on_bad_rows="skip")
    assert read_arrays(path, SPECS, options=partial, chunk_rows=2).report == want.report

    batches = {}
    for name, kw in (("options", dict(options=options)), ("keywords", KEYWORDS)):
        ds = make_dataset(path, SPECS, batch_size=2, **kw)
        batches[name] = [(x["user"].numpy().tolist(), y["label"].numpy().tolist()) for x, y in ds]
        assert ds.report == want.report
    assert batches["options"] == batches["keywords"] == [([3, -1], [1, 0]), ([7], [1])]


@pytest.mark.parametrize("reader", ["read_arrays", "check_files", "make_dataset"])
def test_a_field_given_both_ways_is_an_error(tmp_path, reader):
    fn = {"read_arrays": read_arrays, "check_files": check_files, "make_dataset": make_dataset}
    path = write(tmp_path, "a.csv", "label,user\n1,3\n")
    spec = [CategoricalFeature("user", vocabulary_size=10)]
    options = ReadOptions(on_bad_rows="skip")
    with pytest.raises(TypeError) as err:
        fn[reader](path, spec, options=options, on_bad_rows="skip")  # even the same value
    assert str(err.value) == (
        f"{reader}() got 'on_bad_rows' both in options= and as a keyword argument; give it "
        "once (options.replace(on_bad_rows=...) changes a field)."
    )
    with pytest.raises(TypeError, match="'on_bad_rows' both"):  # given, though the default
        fn[reader](path, spec, options=ReadOptions(on_bad_rows="raise"), on_bad_rows="skip")
    with pytest.raises(TypeError, match="'chunk_rows' both"):  # replace keeps what was given
        fn[reader](path, spec, options=options.replace(chunk_rows=9), chunk_rows=9)
    with pytest.raises(TypeError, match=rf"{reader}\(\) got an unexpected keyword argument"):
        fn[reader](path, spec, on_bad_row="skip")
    with pytest.raises(TypeError, match="`options` must be a ReadOptions, got dict"):
        fn[reader](path, spec, options={"on_bad_rows": "skip"})
    with pytest.raises(ValueError, match="`chunk_rows` must be a positive int"):
        fn[reader](path, spec, chunk_rows=0)  # the keywords are checked as ReadOptions


def test_accepts_options_adds_options_to_a_keyword_signature():
    import inspect

    from keras_rankmixer.data.options import accepts_options

    @accepts_options
    def reader(paths, *, batch_size=1, on_bad_rows="raise", chunk_rows=65536, **extra):
        return batch_size, on_bad_rows, chunk_rows, extra

    assert reader("p", on_bad_rows="skip") == (1, "skip", 65536, {})
    options = ReadOptions(on_bad_rows="skip", chunk_rows=5)
    got = reader("p", batch_size=3, options=options)
    assert got[:3] == (3, "skip", 5) and got[3]["format"] is None  # every field is passed
    with pytest.raises(TypeError, match="'chunk_rows' both in options="):
        reader("p", options=options, chunk_rows=5)
    params = list(inspect.signature(reader).parameters)
    assert params == ["paths", "batch_size", "on_bad_rows", "chunk_rows", "options", "extra"]


def test_readers_module_still_reexports_every_name():
    import keras_rankmixer.data as data
    from keras_rankmixer.data import datasets, pipeline, readers, schema, sources

    for name in set(data.__all__) - {"SyntheticClickData", "make_click_data"}:
        assert getattr(readers, name) is getattr(data, name), name
    assert (
        readers.read_arrays is sources.read_arrays and readers.make_dataset is pipeline.make_dataset
    )
    assert (
        readers.DataError is schema.DataError and readers.FRAPPE_COLUMNS is datasets.FRAPPE_COLUMNS
    )
    assert readers.check_files is data.check_files
    for name in ("_common", "_FORMATS", "_MISSING_TEXT", "_check_example", "_np_dtype"):
        assert hasattr(readers, name), name  # what data/native.py reads today


def test_the_native_path_takes_options_too(tmp_path):
    from keras_rankmixer.data.native import check_native_files, make_native_dataset

    path = _tsv(tmp_path)
    options = ReadOptions(**KEYWORDS)
    want = read_arrays(path, SPECS, options=options)
    for kw in (dict(options=options), KEYWORDS):
        ds = make_native_dataset(path, SPECS, batch_size=2, **kw)
        assert ds.engine == "native"
        users = [x["user"].numpy().tolist() for x, _ in ds]
        assert users == [[3, -1], [7]] and ds.report.rows_kept == want.report.rows_kept
        assert ds.report.skipped == want.report.skipped
        assert check_native_files(path, SPECS, **kw).skipped == want.report.skipped
    with pytest.raises(TypeError, match=r"make_native_dataset\(\) got 'on_bad_rows' both"):
        make_native_dataset(path, SPECS, options=options, on_bad_rows="skip")

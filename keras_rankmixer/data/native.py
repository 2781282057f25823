"""Native `tf.data` input path: CSV/TSV and TFRecord parsed by TensorFlow ops, in parallel.

`make_native_dataset` is a drop-in for `make_dataset` (same arguments, same output
structure, dtypes, shapes, padding, missing-value conventions, hashing, report counts and
errors) that never runs Python per row: files are read by `tf.data.TextLineDataset` /
`TFRecordDataset`, cut into blocks of `block_rows` lines (records), and every block is
parsed and checked by TF ops in a `map` with `num_parallel_calls=AUTOTUNE`, so the work
spreads over the cores and overlaps with training. `check_native_files` is the fast
equivalent of `check_files` (a validation pass that returns the `ReadReport`).

**What is native.** CSV/TSV (also `.gz`; header line or `column_names`) and TFRecord of
`tf.Example` (`compression=`), every feature kind (int64 / string categorical, hashed
`hash_columns`, int64 / string / hashed sequences, numeric), `on_bad_rows="raise"` and
`"skip"`, sharding, shuffling. Parquet, and a CSV header with a quoted newline, fall back to
`make_dataset` (the returned dataset then has `engine == "python"`).

**Same values.** Every cell goes through the Python reader's rules, re-implemented as
vectorised TF string ops: the missing-value texts (`schema._MISSING_TEXT`, after stripping
ASCII whitespace), integer ids (exact int64; `"12.0"`-style floats accepted when integral),
floats with Python's `float()` grammar (checked by an RE2 pattern before
`tf.strings.to_number`, which alone would also accept hex floats), labels in {0, 1},
sequences (split on `sequence_delimiter`, blank items dropped, truncated to `max_length`
and counted, ids through float64 as in the Python reader), hashing with the very op
`hash_strings` uses (`tf.strings.to_hash_bucket_fast(x, HASH_SPACE)`, bit for bit) and its
exact-text missing rule. A block whose cells all have the common plain form (one RE2 match
over the whole block: plain integers, plain decimals, 0/1 labels, no quotes, the right field
count) takes a fast path without per-cell checks, its cells typed by one `tf.io.decode_csv`.
Known differences, all corner cases: ids above 2**53 written as integers are exact here,
while the Python reader rounds them through float64 when another cell of its 65,536-row
chunk is float-formatted; non-ASCII digits and whitespace (which Python's
`int()`/`float()`/`strip()` accept) are not numbers here; a lone CR inside a line is a line
break for Python, not for `TextLineDataset`.

**Bad rows.** Each block computes the Python reader's bad-row masks (malformed field
count, unparsable value, bad label) in the graph. With `on_bad_rows="skip"` the bad rows
are dropped and counted under the Python reader's reasons and locations (`report.skipped`,
`report.examples`, in the Python reader's order: by chunk of `chunk_rows` rows, then
column, then line; exact unless malformed rows shift its chunk boundaries). With `"raise"`, the first block holding a bad row re-reads that
file with the Python reader (`check_files`), so the `DataError` is the Python
reader's own (file, line, column, value), appended to `dataset.errors`; that re-read runs at
the Python reader's speed, up to the bad row. Schema problems (unknown / missing columns,
an empty or header-only file) are checked per file when the dataset is built, with the
Python reader's messages. A quoted field spanning lines, a `tf.Example` with more than one
value in a scalar column raise a `DataError`; a `tf.Example` value of the wrong type raises
TensorFlow's `InvalidArgumentError` (the Python reader wraps it in a `DataError`).

**Report.** `dataset.report` is a `ReadReport` filled as blocks are parsed (one small
`tf.py_function` call per block of `block_rows` rows carries the block's counts to
Python): rows read and kept, skipped by reason, missing cells and truncations per column.

**Order.** With `shuffle=False` and `num_parallel_reads=None` the rows come in file order,
exactly as from `make_dataset`. `shuffle=True` permutes the file order every epoch
and the rows inside windows of `shuffle_chunks * chunk_rows` rows, deterministically for a
`seed`, with TF's RNG (so a different permutation than the Python reader's).

Example:

>>> import os, tempfile
>>> from keras_rankmixer.features import CategoricalFeature
>>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
>>> _ = open(path, "w").write("label,user\\n1,3\\n0,\\n1,5\\n")
>>> ds = make_native_dataset(path, [CategoricalFeature("user", vocabulary_size=10)],
...                          batch_size=2)
>>> [x["user"].numpy().tolist() for x, _ in ds]
[[3, -1], [5]]
>>> ds.report.rows_kept, ds.report.missing
(3, {'user': 1})
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import heapq
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_rankmixer.data import pipeline, schema, sources
from keras_rankmixer.data.options import ReadOptions, resolve_options
from keras_rankmixer.data.schema import HASH_SPACE, DataError, ReadReport
from keras_rankmixer.data.sources import detect_format, list_files
from keras_rankmixer.features import Feature

__all__ = ["check_native_files", "make_native_dataset"]

# RE2 patterns for Python's int() / float() grammar (ASCII digits and whitespace).
_WS = r"[\t\n\v\f\r ]"
_DIG = r"[0-9](?:_?[0-9])*"
_INT_RE = rf"{_WS}*[+-]?{_DIG}{_WS}*"
_FLOAT_RE = (
    rf"{_WS}*[+-]?(?:(?:(?:{_DIG})?\.{_DIG}|{_DIG}\.?)(?:[eE][+-]?{_DIG})?"
    rf"|(?i:inf|infinity|nan)){_WS}*"
)
_MISSING_RE = "(?:" + "|".join(re.escape(t) for t in sorted(schema._MISSING_TEXT)) + ")"
# Fast-path cell forms (one match over a whole block).
_FAST_INT = "(?:-?[0-9]{1,18})?"
_FAST_NUM = r"(?:-?[0-9]{1,17}(?:\.[0-9]{1,17})?)?"
_FAST_LABEL = "[01]"
_FAST_TEXT = '[^{sep}"\\n]*'

_REASON_ID = "not an integer id"
_REASON_NUM = "not a number"
_REASON_LABEL = "label must be 0 or 1"


# ---------------------------------------------------------------------------------------------
# Cell conversion (TF ops): each mirrors a `schema._Converter` method.


def _plain(fn):
    """`fn` traced as plain TF code (no autograph conversion: much faster to build)."""
    return _tf().autograph.experimental.do_not_convert(fn)


def _tf():
    import tensorflow as tf

    return tf


# The parsers' graphs, reused by every dataset of the same schema and file layout: tracing one
# is hundreds of ops (what caching saves is measured in benchmarks/RESULTS.md), and a run
# builds several datasets (the check pass, then train, valid and test) over the same columns.
# Only the schema-dependent part is cached (a `tf.function`, traced once per key,
# inlined where it is called); the per-dataset report (`_Tracker`, a `py_function`) is called
# outside it, on its outputs.
_PARSERS: collections.OrderedDict = collections.OrderedDict()
_PARSERS_LOCK = threading.Lock()
_MAX_PARSERS = 32


def _schema_key(converter) -> tuple:
    """What a parser's graph depends on: each feature's name, kind, dtype, shape and
    sequence length (not its vocabulary: lookups are the model's), the expected columns,
    the hashed ones and the sequence delimiter."""
    specs = tuple(
        (f.name, f.kind, str(f.dtype), tuple(f.input_shape), getattr(f, "max_length", None))
        for f in converter.specs
    )
    return (specs, tuple(converter.expected), tuple(sorted(converter.hash_columns)),
            converter.delimiter)  # fmt: skip


def _cached_parser(key: tuple, parse):
    """`parse(lines, file_index, first, bom)` as a `tf.function` shared by every dataset
    with the same `key` (the last `_MAX_PARSERS` kept)."""
    tf = _tf()
    with _PARSERS_LOCK:
        fn = _PARSERS.get(key)
        if fn is None:
            spec = [tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int64),
                    tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool)]  # fmt: skip
            # inlined into the dataset's map function: as fast as the uncached graph
            fn = tf.function(parse, input_signature=spec, autograph=False,
                             experimental_attributes={"_noinline": False})  # fmt: skip
            _PARSERS[key] = fn
            while len(_PARSERS) > _MAX_PARSERS:
                _PARSERS.popitem(last=False)
        _PARSERS.move_to_end(key)
    return fn


def _strip(x):
    return _tf().strings.strip(x)


def _is_missing_text(c):
    """`_Converter._is_missing` on text: the stripped cell is a missing-value text."""
    return _tf().strings.regex_full_match(_strip(c), _MISSING_RE)


def _parse_float(c):
    """(float64 value, ok): Python's `float()` on each cell; value 0 where not ok."""
    tf = _tf()
    ok = tf.strings.regex_full_match(c, _FLOAT_RE)
    norm = tf.strings.regex_replace(_strip(c), "_", "")
    return tf.strings.to_number(tf.where(ok, norm, "0"), tf.float64), ok


def _parse_int(c):
    """(int64 value, ok): Python's `int()` on each cell, exact for any int64."""
    tf = _tf()
    ok = tf.strings.regex_full_match(c, _INT_RE)
    norm = tf.where(ok, tf.strings.regex_replace(_strip(c), "_", ""), "0")
    neg = tf.strings.substr(norm, 0, 1) == "-"
    body = tf.strings.regex_replace(norm, "^[+-]?0*", "")
    digits = tf.strings.length(body)
    small = digits <= 18
    v_small = tf.strings.to_number(tf.where(small, norm, "0"), tf.int64)
    big = tf.where(small | (digits > 19), "0000000000000000000", body)
    hi = tf.strings.to_number(tf.strings.substr(big, 0, 10), tf.int64)
    lo = tf.strings.to_number(tf.strings.substr(big, 10, 9), tf.int64)
    limit = tf.where(neg, tf.constant(854775808, tf.int64), 854775807)
    fits = (hi < 9223372036) | ((hi == 9223372036) & (lo <= limit))
    mag = hi * 1_000_000_000
    v_big = tf.where(neg, -mag - lo, mag + lo)
    ok = ok & (small | ((digits == 19) & fits))
    return tf.where(small, v_small, tf.where(ok, v_big, 0)), ok


def _ids_slow(c):
    """`_Converter._ids` on text cells: (ids, bad, missing)."""
    tf = _tf()
    missing_text = _is_missing_text(c)
    iv, iok = _parse_int(c)
    fv, fok = _parse_float(c)
    integral = fok & tf.math.is_finite(fv) & tf.equal(tf.math.floor(fv), fv)
    ids = tf.where(
        missing_text,
        tf.constant(-1, tf.int64),
        tf.where(
            iok,
            iv,
            tf.where(integral, tf.cast(tf.where(integral, fv, tf.zeros_like(fv)), tf.int64), -1),
        ),
    )
    bad = ~missing_text & ~iok & ~integral
    return ids, bad, missing_text | (ids < 0)


def _numeric_slow(c):
    """`_Converter._numeric` on text cells: (float64 value, bad, missing)."""
    tf = _tf()
    missing_text = _is_missing_text(c)
    fv, fok = _parse_float(c)
    bad = ~missing_text & ~fok
    nan = tf.constant(np.nan, tf.float64)
    value = tf.where(missing_text | bad, nan, fv)
    return value, bad, missing_text | (~bad & tf.math.is_inf(value))


def _label(value, bad_num, missing):
    tf = _tf()
    bad = bad_num | missing | ~(tf.equal(value, 0.0) | tf.equal(value, 1.0))
    return tf.cast(tf.where(bad, tf.zeros_like(value), value), tf.int64), bad


def _text(c):
    """`_Converter._text`: missing texts become ""."""
    missing = _is_missing_text(c)
    return _tf().where(missing, "", c), missing


def _hash(c):
    """`schema.hash_strings`: FarmHash64 bucket in [0, HASH_SPACE), exact missing text -> -1."""
    tf = _tf()
    missing = tf.strings.regex_full_match(c, _MISSING_RE)
    ids = tf.strings.to_hash_bucket_fast(c, HASH_SPACE)
    return tf.where(missing, tf.constant(-1, tf.int64), ids), missing


def _sequence_from_ragged(f, tok, hashed: bool, from_text: bool):
    """Ragged items of a sequence column -> (padded [n, L], bad, missing, truncated)."""
    tf = _tf()
    length = f.max_length
    if from_text:
        keep = _strip(tok.flat_values) != ""
        tok = tf.ragged.boolean_mask(tok, tok.with_flat_values(keep))
        first = tok[:, :1].to_tensor("", shape=[None, 1])[:, 0]
        single_missing = tf.equal(tok.row_lengths(), 1) & _is_missing_text(first)
        tok = tf.ragged.boolean_mask(
            tok, tok.with_flat_values(tf.repeat(~single_missing, tok.row_lengths()))
        )
    count = tok.row_lengths()
    missing = tf.equal(count, 0)
    truncated = count > length
    tok = tok[:, :length]
    n = tf.shape(count)[0]
    if f.dtype == "string":
        out = tok.to_tensor("", shape=[None, length])
        return out, tf.zeros([n], tf.bool), missing, truncated
    if hashed:
        ids, _ = _hash(tok.flat_values)
        return (
            tok.with_flat_values(ids).to_tensor(-1, shape=[None, length]),
            tf.zeros([n], tf.bool),
            missing,
            truncated,
        )
    if from_text:
        fv, fok = _parse_float(tok.flat_values)
        ok = fok & tf.math.is_finite(fv) & tf.equal(tf.math.floor(fv), fv)
        bad = tf.reduce_any(tok.with_flat_values(~ok), axis=1)
        vals = tf.cast(tf.where(ok, fv, tf.zeros_like(fv)), tf.int64)
    else:  # TFRecord int64 lists go through float64 in the Python reader too
        vals = tf.cast(tf.cast(tok.flat_values, tf.float64), tf.int64)
        bad = tf.zeros([n], tf.bool)
    return tok.with_flat_values(vals).to_tensor(-1, shape=[None, length]), bad, missing, truncated


# ---------------------------------------------------------------------------------------------
# The per-block report: counts go to Python once per block.


class _Tracker:
    """Collects the blocks' counts into a `ReadReport`, raises the Python reader's errors."""

    def __init__(self, files, unit, names, reasons, specs, explain, on_bad_rows):
        self.files = files
        self.unit = unit  # "line" or "record"
        self.names = names  # expected columns: features then labels
        self.reasons = reasons
        self.specs = specs
        self.explain = explain
        self.on_bad_rows = on_bad_rows
        self.report = ReadReport()
        self.errors: list[DataError] = []
        self.lock = threading.Lock()
        self.passes: dict[tuple[int, int], int] = {}
        self.candidates: list = []  # max-heap (negated keys) of the 20 first examples
        self.seen_files: set[int] = set()

    def where(self, file_index: int, location: int) -> str:
        return f"{self.files[file_index]}, {self.unit} {location}"

    def fail(self, file_index: int, location: int, detail: str):
        path = self.files[file_index]
        error = self.explain(path) if detail is None else None
        if error is None:
            error = DataError(detail or f"{self.where(file_index, location)}: bad row (native).")
        self.errors.append(error)
        raise error

    def __call__(self, file_index, first, n, kept, mal_rows, mal_fields, bad_rows, bad_cols,
                 missing, truncated, fatal_row, fatal_kind, fatal_col):  # fmt: skip
        file_index, first, n, kept = int(file_index), int(first), int(n), int(kept)
        fatal_row, fatal_kind = int(fatal_row), int(fatal_kind)
        mal_rows, mal_fields = mal_rows.numpy(), mal_fields.numpy()
        bad_rows, bad_cols = bad_rows.numpy(), bad_cols.numpy()
        if fatal_kind:
            loc = first + fatal_row
            if fatal_kind == 1:
                detail = (
                    f"{self.where(file_index, loc)}: a quoted field continues on the next line; "
                    "the native reader reads one record per line (use keras_rankmixer.data.make_dataset)."
                )
            else:
                detail = None  # the Python reader's "expected one value" error
            self.fail(file_index, loc, detail)
        if self.on_bad_rows == "raise" and (len(mal_rows) or len(bad_rows)):
            loc = first + int(min(list(mal_rows) + list(bad_rows)))
            self.fail(file_index, loc, None)
        with self.lock:
            self._record(file_index, first, n, kept, mal_rows, mal_fields, bad_rows, bad_cols,
                         missing.numpy(), truncated.numpy())  # fmt: skip
        return np.int64(0)

    def _record(self, file_index, first, n, kept, mal_rows, mal_fields, bad_rows, bad_cols,
                missing, truncated):  # fmt: skip
        report = self.report
        block = (file_index, first)
        npass = self.passes.get(block, 0)
        self.passes[block] = npass + 1
        if file_index not in self.seen_files:
            self.seen_files.add(file_index)
            report.files = [f for i, f in enumerate(self.files) if i in self.seen_files]
        report.rows_read += n
        report.rows_kept += kept
        examples = []
        for row, fields in zip(mal_rows.tolist(), mal_fields.tolist(), strict=True):
            detail = f"expected {self._width(file_index)} fields, saw {fields}" + (
                " (blank line)" if fields == 0 else ""
            )
            examples.append(
                (self._key(npass, file_index, first + row, -1), f"malformed row ({detail})")
            )
        for row, col in zip(bad_rows.tolist(), bad_cols.tolist(), strict=True):
            reason = f"{self.reasons[col]} in column {self.names[col]!r}"
            examples.append((self._key(npass, file_index, first + row, col), reason))
        for key, reason in examples:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            item = (tuple(-k for k in key), f"{self.where(file_index, key[-1])}: {reason}")
            if len(self.candidates) < 20:
                heapq.heappush(self.candidates, item)
            elif item > self.candidates[0]:
                heapq.heapreplace(self.candidates, item)
        if examples:
            report.examples = [text for _, text in sorted(self.candidates, reverse=True)]
        for f, m, t in zip(self.specs, missing.tolist(), truncated.tolist(), strict=False):
            report.count(report.missing, f.name, m)
            report.count(report.truncated, f.name, t)

    def _key(self, npass, file_index, location, column):
        """The Python reader's example order: chunk by chunk (`chunk_rows` rows), malformed
        rows first, then column by column, line by line (exact when no malformed row
        shifts the chunk boundaries)."""
        chunk = (location - self.starts.get(file_index, 0)) // self.chunk_rows
        return (npass, file_index, chunk, column, location)

    def _width(self, file_index):
        return self.widths[file_index]


# ---------------------------------------------------------------------------------------------
# Files: headers, layouts, schema checks (Python, once per file, when the dataset is built).


@dataclasses.dataclass
class _TextFile:
    path: str
    names: tuple
    skip: int
    bom: bool
    has_data: bool


def _open_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _scan_text(path, sep, column_names):
    """Header and layout of one text file; None when the native reader cannot read it."""
    with _open_text(path) as fh:
        if column_names is None:
            header = fh.readline()
            if not header.strip("\r\n") or header.count('"') % 2:
                return None  # empty file / quoted newline in the header: the Python reader
            names = tuple(next(csv.reader([header.rstrip("\r\n")], delimiter=sep)))
            skip = 1
        else:
            names, skip = tuple(column_names), 0
        has_data = bool(fh.readline())
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as raw:
        bom = raw.read(3) == b"\xef\xbb\xbf" and column_names is not None
    return _TextFile(path, names, skip, bom, has_data)


# ---------------------------------------------------------------------------------------------
# The dataset.


def make_native_dataset(
    paths: str | Sequence[str],
    specs: Sequence[Feature],
    label_columns: Sequence[str] | str = ("label",),
    *,
    batch_size: int = 4096,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    cache: bool = False,
    shuffle_chunks: int = 1,
    block_rows: int = 8192,
    whole_file_bytes: int = 64 * 2**20,
    num_parallel_calls: int | None = None,
    num_parallel_reads: int | None = None,
    num_threads: int | None = None,
    deterministic: bool = True,
    autotune: bool = False,
    options: ReadOptions | None = None,
    **keywords: Any,
):
    """`make_dataset` with the parsing and checks in TF ops, mapped in parallel.

    Args:
        paths, specs, label_columns, batch_size, shuffle, seed, repeat, drop_remainder,
            cache, shuffle_chunks: As in `make_dataset` (see the module docstring for what
            differs).
        options: How to read the files (a `ReadOptions`: format ... chunk_rows; None: the
            defaults). With `shuffle`, rows are permuted inside windows of
            `shuffle_chunks * chunk_rows` rows (as the Python reader's chunks).
        **keywords: The `ReadOptions` fields as keyword arguments, merged with `options` as
            in `make_dataset` (a field given both ways is a `TypeError`).
        block_rows: Lines (records) parsed per call of the parallel map: the unit of
            parallelism and of the report's updates.
        whole_file_bytes: Text files up to this size (not `.gz`) are read by one op and
            split into lines by another (several times less CPU per line than
            `TextLineDataset`, the file held in memory while it is parsed); larger and
            compressed files are streamed line by line.
        num_parallel_calls: Blocks parsed at once (default `tf.data.AUTOTUNE`).
        num_parallel_reads: Files read at once (interleaved, so rows of several files mix);
            None reads the files one after the other, in order.
        num_threads: Size of the dataset's private thread pool (None: TF's default, all
            cores).
        deterministic: Keep the block order under parallel parsing (default True).
        autotune: Turn on tf.data's autotuning model. Off by default
            (`pipeline.reader_options` says why): the parallel calls are then the thread
            pool's size.

    Returns:
        A `tf.data.Dataset` of `(features dict, labels dict)` with `report` (a `ReadReport`),
        `files`, `errors` and `engine` (`"native"`, or `"python"` where it fell back)
        attributes.
    """
    import tensorflow as tf

    from keras_rankmixer.layers._checks import check_positive

    options = resolve_options(options, keywords, "make_native_dataset")
    format, column_names, delimiter = options.format, options.column_names, options.delimiter
    hash_columns, ignore_columns = options.hash_columns, options.ignore_columns
    on_bad_rows, sequence_delimiter = options.on_bad_rows, options.sequence_delimiter
    shard_index, num_shards = options.shard_index, options.num_shards
    compression, chunk_rows = options.compression, options.chunk_rows
    kwargs = dict(
        batch_size=batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
        drop_remainder=drop_remainder, cache=cache, shuffle_chunks=shuffle_chunks,
        autotune=autotune, options=options,
    )  # fmt: skip
    for name, value in (("batch_size", batch_size), ("shuffle_chunks", shuffle_chunks),
                        ("chunk_rows", chunk_rows), ("block_rows", block_rows)):  # fmt: skip
        check_positive(name, value, integer=True)
    converter = schema._common(
        specs, label_columns, hash_columns, ignore_columns, on_bad_rows, sequence_delimiter
    )
    files = list_files(paths, shard_index, num_shards)
    kinds = {format or detect_format(f) for f in files}
    bad_kind = sorted(k for k in kinds if k not in sources._FORMATS)
    if bad_kind:
        raise ValueError(f"`format` must be one of {sources._FORMATS}, got {bad_kind[0]!r}.")

    def fallback():
        ds = pipeline.make_dataset(paths, specs, label_columns, **kwargs)
        ds.engine = "python"
        return ds

    if "parquet" in kinds or (len(kinds) > 1 and "tfrecord" in kinds):
        return fallback()
    # one file at a time, every row, stopping at the first error
    check_options = options.replace(on_bad_rows="raise", shard_index=0, num_shards=1)

    def explain(path):
        """The Python reader's error for one file (None if it reads the file cleanly)."""
        try:
            sources.check_files(
                path, converter.specs, converter.label_columns, options=check_options
            )
        except DataError as e:
            return e
        return None

    spec_by_name = {f.name: f for f in converter.specs}
    names = converter.expected
    schema_key = _schema_key(converter)
    reasons = [_REASON_NUM if f.kind == "numeric" else _REASON_ID for f in converter.specs] + [
        _REASON_LABEL
    ] * len(converter.label_columns)
    text = kinds <= {"csv", "tsv"}
    active: list[int] = []  # indices (into files) the pipeline reads
    tracker = _Tracker(files, "line" if text else "record", names, reasons, converter.specs,
                       explain, on_bad_rows)  # fmt: skip
    tracker.widths, tracker.starts, tracker.chunk_rows = {}, {}, chunk_rows
    if text:
        layouts: list[tuple] = []
        meta = []
        for i, path in enumerate(files):
            kind = format or detect_format(path)
            sep = delimiter or ("\t" if kind == "tsv" else ",")
            if len(sep) != 1:
                raise ValueError(f"`delimiter` must be one character, got delimiter={sep!r}.")
            info = _scan_text(path, sep, column_names)
            if info is None:
                if explain(path) is not None:
                    raise explain(path)
                return fallback()
            converter.check_columns(list(info.names), path)
            tracker.widths[i] = len(info.names)
            if not info.has_data:  # header-only / empty: whatever the Python reader says
                error = explain(path)
                if error is not None:
                    raise error
                tracker.seen_files.add(i)
                continue
            key = (info.names, sep)
            if key not in layouts:
                layouts.append(key)
            meta.append((i, layouts.index(key), info.skip, info.bom))
            tracker.starts[i] = info.skip + 1
            active.append(i)
        tracker.report.files = [f for i, f in enumerate(files) if i in tracker.seen_files]
    else:
        for i, path in enumerate(files):
            first = next(iter(tf.data.TFRecordDataset(path, compression or "").take(1)), None)
            if first is not None:
                sources._check_example(converter, tf.train.Example.FromString(first.numpy()), path)
            active.append(i)

    feature_spec = {
        f.name: tf.TensorSpec((None,) + tuple(f.input_shape),
                              tf.string if f.dtype == "string" else tf.as_dtype(schema._np_dtype(f)))
        for f in converter.specs
    }  # fmt: skip

    # Columns of one kind are converted together, as one [rows, columns] matrix, so the
    # graph (and its set-up time per iterator) does not grow with the number of columns.
    def kind_of(name):
        f = spec_by_name.get(name)
        if f is None:
            return "label"
        if f.kind == "sequence":
            return "seq:" + name
        if f.kind == "numeric":
            return "num"
        if f.dtype == "string":
            return "text"
        return "hash" if name in converter.hash_columns else "id"

    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(kind_of(name), []).append(name)
    group_order = [name for members in groups.values() for name in members]
    perm = [group_order.index(name) for name in names]  # group order -> expected order
    num_features = len(converter.specs)

    def convert_text(kind, m):
        """[n, k] text cells of one group -> (value, bad, missing, truncated)."""
        no = tf.zeros(tf.shape(m), tf.bool)
        if kind.startswith("seq:"):
            f = spec_by_name[kind[4:]]
            tok = tf.strings.split(m[:, 0], sep=converter.delimiter)
            value, bad, miss, trunc = _sequence_from_ragged(
                f, tok, f.name in converter.hash_columns, from_text=True
            )
            return value, bad[:, None], miss[:, None], trunc[:, None]
        if kind == "label":
            value, bad = _label(*_numeric_slow(m))
            return value, bad, no, no
        if kind == "num":
            return (*_numeric_slow(m), no)
        if kind == "text":
            value, miss = _text(m)
            return value, no, miss, no
        if kind == "hash":
            value, miss = _hash(m)
            return value, no, miss, no
        return (*_ids_slow(m), no)

    def finish(file_index, first, conv, wellformed, fields, fatal_row, fatal_kind):
        """Common tail of a parser: bad masks -> the block's counts (the tracker's arguments),
        the groups' values, the kept rows."""
        n = tf.shape(wellformed)[0]
        wf = wellformed[:, None]
        bad = tf.concat([b for _, b, _, _ in conv], 1) & wf
        miss = tf.concat([m for _, _, m, _ in conv], 1) & ~bad & wf
        trunc = tf.concat([t for _, _, _, t in conv], 1) & wf
        bad_e = tf.gather(bad, perm, axis=1)
        missing = tf.gather(tf.reduce_sum(tf.cast(miss, tf.int64), 0), perm)[:num_features]
        truncs = tf.gather(tf.reduce_sum(tf.cast(trunc, tf.int64), 0), perm)[:num_features]
        keep = wellformed & ~tf.reduce_any(bad, axis=1)
        kept = tf.where(keep)[:, 0]
        where_bad = tf.where(bad_e)
        mal = tf.where(~wellformed)[:, 0]
        counts = [file_index, first, tf.cast(n, tf.int64), tf.size(kept, out_type=tf.int64), mal,
                  tf.gather(tf.cast(fields, tf.int64), mal), where_bad[:, 0], where_bad[:, 1],
                  missing, truncs, fatal_row, fatal_kind, tf.constant(-1, tf.int64)]  # fmt: skip
        every = tf.equal(tf.size(kept), n)  # no row dropped: no gather (a copy) needed
        values = [tf.cast(value, tf.float32) if kind == "num" else value
                  for kind, (value, _, _, _) in zip(groups, conv, strict=True)]  # fmt: skip
        return counts, values, kept, every

    def report_and_keep(counts, values, kept, every):
        """This dataset's part of a parser: the block's counts to Python (its tracker), then
        the kept rows of every group."""
        token = tf.py_function(tracker, counts, tf.int64)
        feats, labels = {}, {}
        with tf.control_dependencies([token]):
            for (kind, members), value in zip(groups.items(), values, strict=True):
                value = tf.cond(every, lambda v=value: tf.identity(v),
                                lambda v=value: tf.gather(v, kept))  # fmt: skip
                if kind.startswith("seq:"):
                    feats[members[0]] = value
                    continue
                for j, name in enumerate(members):
                    (labels if kind == "label" else feats)[name] = value[:, j]
        return feats, labels

    def text_parser(layout):
        file_names, sep = layout
        width = len(file_names)
        cols_of = {kind: [file_names.index(name) for name in members]
                   for kind, members in groups.items()}  # fmt: skip
        esc = f"\\x{ord(sep):02x}" if ord(sep) < 128 else None
        fast_re = None
        if esc is not None:
            parts = []
            for col in file_names:
                kind = kind_of(col) if col in names else "text"
                parts.append({"label": _FAST_LABEL, "num": _FAST_NUM, "id": _FAST_INT}.get(
                    kind, _FAST_TEXT.format(sep=esc)))  # fmt: skip
            line = esc.join(f"(?:{p})" for p in parts)
            fast_re = f"(?:{line}\\n)*{line}"

        used = sorted(j for members in cols_of.values() for j in members)
        fast_defaults = {"label": tf.constant(0, tf.int64), "id": tf.constant(-1, tf.int64),
                         "num": tf.constant(np.nan, tf.float64)}  # fmt: skip

        def fast_conv(lines):
            """A block every line of which has the fast form: typed cells by one op."""
            cols = tf.io.decode_csv(
                lines,
                [fast_defaults.get(kind_of(file_names[j]), "") for j in used],
                field_delim=sep,
                use_quote_delim=False,
                select_cols=used,
            )
            at = {j: c for j, c in zip(used, cols, strict=True)}
            out = []
            for kind in groups:
                m = tf.stack([at[j] for j in cols_of[kind]], 1)
                no = tf.zeros(tf.shape(m), tf.bool)
                if kind == "label":
                    out.append((m, no, no, no))
                elif kind == "id":
                    out.append((m, no, m < 0, no))
                elif kind == "num":
                    out.append((m, no, tf.math.is_nan(m), no))
                else:
                    out.append(convert_text(kind, m))
            return out

        def slow_path(lines):
            n = tf.shape(lines)[0]
            lengths = tf.strings.length(lines)
            quotes = lengths - tf.strings.length(tf.strings.regex_replace(lines, '"', ""))
            has_quote = quotes > 0
            odd = tf.math.floormod(quotes, 2) == 1
            plain = tf.strings.split(lines, sep=sep)
            unquoted = tf.strings.regex_replace(lines, '"[^"]*"', "")
            fields = tf.where(
                has_quote,
                tf.cast(tf.strings.split(unquoted, sep=sep).row_lengths(), tf.int32),
                tf.cast(plain.row_lengths(), tf.int32),
            )
            fields = tf.where(tf.equal(lengths, 0), 0, fields)
            wellformed = tf.equal(fields, width) & ~odd

            def quoted():
                dummy = tf.fill([n], sep * (width - 1))
                return tf.stack(
                    tf.io.decode_csv(
                        tf.where(wellformed, lines, dummy), [""] * width, field_delim=sep,
                        use_quote_delim=True,
                    ), 1,
                )  # fmt: skip

            cells = tf.cond(
                tf.reduce_any(has_quote & wellformed),
                quoted,
                lambda: plain.to_tensor("", shape=[None, width]),
            )
            fatal = tf.where(odd)[:, 0]
            fatal_row = tf.cond(
                tf.size(fatal) > 0, lambda: fatal[0], lambda: tf.constant(-1, tf.int64)
            )
            return cells, wellformed, fields, fatal_row

        def parse(lines, file_index, first, bom):
            lines = tf.cond(
                bom & tf.equal(first, 1),
                lambda: tf.concat([tf.strings.regex_replace(lines[:1], "^\ufeff", ""),
                                   lines[1:]], 0),
                lambda: lines,
            )  # fmt: skip

            def slow():
                cells, wellformed, fields, fatal_row = slow_path(lines)
                conv = [convert_text(kind, tf.gather(cells, cols_of[kind], axis=1))
                        for kind in groups]  # fmt: skip
                return conv, wellformed, fields, fatal_row

            def fast():
                n = tf.shape(lines)[0]
                no_fatal_row = tf.constant(-1, tf.int64)
                return fast_conv(lines), tf.ones([n], tf.bool), tf.fill([n], width), no_fatal_row

            if fast_re is None:
                conv, wellformed, fields, fatal_row = slow()
            else:
                ok = tf.strings.regex_full_match(
                    tf.strings.reduce_join(lines, separator="\n"), fast_re
                ) & tf.reduce_all(tf.strings.length(lines) > 0)
                conv, wellformed, fields, fatal_row = tf.cond(ok, fast, slow)
            fatal_kind = tf.where(fatal_row >= 0, tf.constant(1, tf.int64), 0)
            return finish(file_index, first, conv, wellformed, fields, fatal_row, fatal_kind)

        return _cached_parser(("text", layout, schema_key), parse)

    def record_parser():
        dtypes = {}
        for name in names:
            kind = kind_of(name)
            f = spec_by_name.get(name)
            if kind in ("label", "num"):
                dtypes[name] = tf.float32
            elif kind in ("text", "hash") or (f is not None and (
                    f.dtype == "string" or name in converter.hash_columns)):  # fmt: skip
                dtypes[name] = tf.string
            else:
                dtypes[name] = tf.int64
        features = {name: tf.io.RaggedFeature(dt, row_splits_dtype=tf.int64)
                    for name, dt in dtypes.items()}  # fmt: skip
        defaults = {tf.float32: np.nan, tf.string: "", tf.int64: -1}

        def parse(records, file_index, first, bom):
            del bom
            parsed = tf.io.parse_example(records, features)
            n = tf.shape(records)[0]
            conv, multi = [], []
            for kind, members in groups.items():
                if kind.startswith("seq:"):
                    f = spec_by_name[members[0]]
                    value, bad, miss, trunc = _sequence_from_ragged(
                        f, parsed[f.name], f.name in converter.hash_columns, from_text=False
                    )
                    conv.append((value, bad[:, None], miss[:, None], trunc[:, None]))
                    continue
                heads = []
                for name in members:
                    rt = parsed[name]
                    multi.append(rt.row_lengths() > 1)
                    heads.append(rt.to_tensor(defaults[dtypes[name]], shape=[None, 1]))
                m = tf.concat(heads, 1)
                no = tf.zeros(tf.shape(m), tf.bool)
                if kind in ("label", "num"):
                    m = tf.cast(m, tf.float64)
                    missing = ~tf.math.is_finite(m)
                    if kind == "label":
                        value, bad = _label(m, no, missing)
                        conv.append((value, bad, no, no))
                    else:
                        conv.append((m, no, missing, no))
                elif kind == "text":
                    value, miss = _text(m)
                    conv.append((value, no, miss, no))
                elif kind == "hash":
                    value, miss = _hash(m)
                    conv.append((value, no, miss, no))
                else:
                    conv.append((m, no, m < 0, no))
            many = tf.reduce_any(tf.stack(multi, 1), axis=1) if multi else tf.zeros([n], tf.bool)
            bad_at = tf.where(many)[:, 0]
            fatal_row = tf.cond(
                tf.size(bad_at) > 0, lambda: bad_at[0], lambda: tf.constant(-1, tf.int64)
            )
            fatal_kind = tf.where(fatal_row >= 0, tf.constant(2, tf.int64), 0)
            return finish(file_index, first, conv, tf.ones([n], tf.bool), tf.zeros([n], tf.int32),
                          fatal_row, fatal_kind)  # fmt: skip

        return _cached_parser(("record", schema_key), parse)

    # Per-file block streams.
    paths_t = tf.constant(files)
    if text:
        skip_t = tf.constant([0] * len(files), tf.int64)
        bom_t = tf.constant([False] * len(files))
        layout_t = tf.constant([0] * len(files), tf.int64)
        skips, boms, lays = [0] * len(files), [False] * len(files), [0] * len(files)
        for i, lay, skip, bom in meta:
            skips[i], boms[i], lays[i] = skip, bom, lay
        skip_t, bom_t, layout_t = (
            tf.constant(skips, tf.int64),
            tf.constant(boms),
            tf.constant(lays, tf.int64),
        )
        comp_t = tf.constant(["GZIP" if f.endswith(".gz") else "" for f in files])
        parsers = [text_parser(layout) for layout in layouts]

        whole_t = tf.constant(
            [not f.endswith(".gz") and os.path.getsize(f) <= whole_file_bytes for f in files]
        )

        def in_one_piece(i, skip, bom):
            """A whole file read by one op and split into lines as TextLineDataset does."""
            content = tf.io.read_file(tf.gather(paths_t, i))
            # CRLF -> LF on the whole text (one op), a final CR dropped: TextLineDataset's
            # lines without per-line work.
            content = tf.cond(
                tf.strings.regex_full_match(content, "[^\r]*"),
                lambda: content,
                lambda: tf.strings.regex_replace(
                    tf.strings.regex_replace(content, "\r\n", "\n"), "\r$", ""
                ),
            )
            lines = tf.strings.split(content, "\n")
            ends_nl = tf.strings.length(content) > 0
            last = tf.strings.substr(tf.where(ends_nl, content, "x"), -1, 1)
            ends_nl = ends_nl & tf.equal(last, "\n")
            lines = lines[: tf.size(lines) - tf.cast(ends_nl, tf.int32)]
            lines = lines[skip:]
            count = tf.cast(tf.size(lines), tf.int64)
            blocks = (count + block_rows - 1) // block_rows
            return tf.data.Dataset.range(blocks).map(
                _plain(lambda k: (lines[k * block_rows : (k + 1) * block_rows], i,
                                  skip + 1 + k * block_rows, bom))
            )  # fmt: skip

        def blocks_of(i):
            whole = tf.gather(whole_t, i)
            skip = tf.gather(skip_t, i)
            bom = tf.gather(bom_t, i)
            by_line = (
                tf.data.TextLineDataset(tf.gather(paths_t, i), tf.gather(comp_t, i))
                .take(tf.where(whole, tf.constant(0, tf.int64), -1))
                .skip(skip)
                .batch(block_rows)
                .enumerate()
                .map(_plain(lambda k, lines: (lines, i, skip + 1 + k * block_rows, bom)))
            )
            one = tf.data.Dataset.from_tensors(i).take(tf.where(whole, tf.constant(1, tf.int64), 0))
            return one.flat_map(_plain(lambda i: in_one_piece(i, skip, bom))).concatenate(by_line)

        if len(parsers) == 1:
            core = parsers[0]
        else:

            def core(lines, file_index, first, bom):
                branches = [lambda p=p: p(lines, file_index, first, bom) for p in parsers]
                return tf.switch_case(tf.gather(layout_t, file_index), branches)

    else:
        comp = compression or ""
        core = record_parser()

        def blocks_of(i):
            ds = tf.data.TFRecordDataset(tf.gather(paths_t, i), comp)
            return (
                ds.batch(block_rows)
                .enumerate()
                .map(_plain(lambda k, recs: (recs, i, k * block_rows, tf.constant(False))))
            )

    auto = tf.data.AUTOTUNE
    if not active:
        empty = {k: np.zeros((0,) + tuple(s.shape[1:]), s.dtype.as_numpy_dtype)
                 for k, s in feature_spec.items()}  # fmt: skip
        empty = {k: (v.astype(object) if feature_spec[k].dtype == tf.string else v)
                 for k, v in empty.items()}  # fmt: skip
        ds = tf.data.Dataset.from_tensors(
            (empty, {c: np.zeros(0, np.int64) for c in converter.label_columns})
        ).take(0)
    else:
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(active, tf.int64))
        if shuffle:
            ds = ds.shuffle(len(active), seed=seed, reshuffle_each_iteration=True)
        reads = num_parallel_reads or 1
        ds = ds.interleave(
            _plain(blocks_of),
            cycle_length=reads,
            block_length=1,
            **({} if reads == 1 else dict(num_parallel_calls=auto, deterministic=deterministic)),
        )

        def parse(lines, file_index, first, bom):
            return report_and_keep(*core(lines, file_index, first, bom))

        ds = ds.map(_plain(parse), num_parallel_calls=num_parallel_calls or auto,
                    deterministic=deterministic)  # fmt: skip
    if shuffle:
        ds = ds.rebatch(shuffle_chunks * chunk_rows)
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def permute(element, r):
            feats, labels = element
            n = tf.shape(next(iter(labels.values())))[0]
            order = tf.argsort(
                tf.random.stateless_uniform([n], seed=tf.stack([r, tf.constant(seed, tf.int64)]))
            )
            return ({k: tf.gather(v, order) for k, v in feats.items()},
                    {k: tf.gather(v, order) for k, v in labels.items()})  # fmt: skip

        ds = tf.data.Dataset.zip(ds, noise).map(_plain(permute), num_parallel_calls=auto)
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder).prefetch(auto)
    ds = ds.with_options(pipeline.reader_options(autotune=autotune, num_threads=num_threads))
    ds.report = tracker.report
    ds.files = files
    ds.errors = tracker.errors
    ds.engine = "native"
    return ds


def check_native_files(paths, specs, label_columns=("label",), **kwargs) -> ReadReport:
    """`check_files` by the native path: read and check every row, return the report.

    Takes the keyword arguments of `make_native_dataset`; raises the same `DataError`.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n2,4\\n")
    >>> report = check_native_files(path, [CategoricalFeature("user", vocabulary_size=10)],
    ...                             on_bad_rows="skip")
    >>> report.rows_read, report.rows_kept, report.skipped
    (2, 1, {"label must be 0 or 1 in column 'label'": 1})
    """
    kwargs.setdefault("batch_size", kwargs.get("block_rows", 8192))
    ds = make_native_dataset(paths, specs, label_columns, **kwargs)
    if ds.engine != "native":
        return sources.check_files(paths, specs, label_columns, **_python_kwargs(kwargs))
    try:
        for _ in ds:
            pass
    except Exception:
        if ds.errors:
            raise ds.errors[-1] from None
        raise
    return ds.report


def _python_kwargs(kwargs):
    drop = {"batch_size", "shuffle", "seed", "repeat", "drop_remainder", "cache",
            "shuffle_chunks", "block_rows", "num_parallel_calls", "num_parallel_reads",
            "num_threads", "deterministic", "autotune"}  # fmt: skip
    return {k: v for k, v in kwargs.items() if k not in drop}

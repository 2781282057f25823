"""File sources: CSV/TSV, Parquet and TFRecord (`tf.Example`) files -> checked arrays.

Files are listed (paths, directories, globs; `list_files`), sharded, their format told from
the name (`detect_format`) or `ReadOptions.format`, and read chunk by chunk (`chunk_rows`
rows) by one iterator per format; every chunk goes through the schema's converter
(`keras_rankmixer.data.schema`: values, checks, `DataError`, `ReadReport`). Two entry points:

- `read_arrays(paths, specs, ...)` loads everything into memory and returns
  `ReadResult(features, labels, report)` (dicts of NumPy arrays) — fine for data that fits
  in memory (Frappe, validation splits, tests).
- `check_files(paths, specs, ...)` reads and checks every row and keeps none: the
  `ReadReport` of a validation pass, in constant memory.

The streaming `tf.data.Dataset` for `model.fit` is `keras_rankmixer.data.pipeline.make_dataset`.
How to read (format, layout, hashing, bad rows, sharding, ...) is one `ReadOptions`, passed
as `options=` (or, for compatibility, as keyword arguments).

**Sharding.** `shard_index=i, num_shards=n` keeps files `sorted(files)[i::n]` (for multi-process
/ multi-host input, e.g. `process_index` of `process_count`). Files are the unit: when the file
count is not a multiple of n, the first `len(files) % n` shards get one file more; fewer files
than shards is an error (some process would get no data). Split large data into many files.

**Parquet** needs pyarrow, an optional extra: `pip install "keras-rankmixer[parquet]"`.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_rankmixer.data.options import FORMATS, ReadOptions, check_shards, resolve_options
from keras_rankmixer.data.schema import (
    DataError,
    ReadReport,
    ReadResult,
    _np_dtype,
    make_converter,
)
from keras_rankmixer.features import Feature

_FORMATS = FORMATS  # the old private name (`data.native` reads it)
#: How to install the optional Parquet support.
PARQUET_EXTRA = 'pip install "keras-rankmixer[parquet]"'


def list_files(paths: str | Sequence[str], shard_index: int = 0, num_shards: int = 1) -> list[str]:
    """Expand paths, directories and globs into a sorted file list; keep shard `i` of `n`.

    Shard i keeps `files[i::n]`: when the count is not a multiple of n the first
    `len(files) % n` shards get one file more. Fewer files than shards raises `DataError`.

    Example:

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     open(os.path.join(d, f"part{i}.csv"), "w").close()
    >>> [os.path.basename(f) for f in list_files(d, shard_index=0, num_shards=2)]
    ['part0.csv', 'part2.csv']
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    check_shards(shard_index, num_shards)
    files: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, f)
                for f in os.listdir(p)
                if not f.startswith((".", "_")) and os.path.isfile(os.path.join(p, f))
            )
        else:
            found = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not found:
            raise DataError(f"no files match {p!r}.")
        for f in found:
            if not os.path.isfile(f):
                raise DataError(f"file not found: {f!r}.")
        files.extend(found)
    files = sorted(dict.fromkeys(files))
    if len(files) < num_shards:
        raise DataError(
            f"{len(files)} file(s) cannot feed {num_shards} shards (shard {shard_index} would get "
            "no data); split the data into at least as many files as shards."
        )
    return files[shard_index::num_shards]


def detect_format(path: str) -> str:
    """`csv`, `tsv`, `parquet` or `tfrecord` from the file name (`.gz` allowed for text)."""
    name = path.lower().removesuffix(".gz")
    if name.endswith((".tsv", ".txt")):
        return "tsv" if name.endswith(".tsv") else "csv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".tfrecord", ".tfrecords", ".tfr")):
        return "tfrecord"
    raise DataError(
        f"cannot tell the format of {path!r} from its name; pass format= one of {FORMATS}."
    )


# ---------------------------------------------------------------------------------------------
# Per-format chunk iterators: yield (columns dict, where list).


def _iter_text(path, fmt, converter, report, options):
    """Chunks of a CSV/TSV file with exact 1-based line numbers.

    Every record's fields are counted before pandas parses the chunk: a row with more or
    fewer fields than the header is malformed (raised, or skipped and counted with its line
    under on_bad_rows="skip"); pandas alone pads short rows with empty cells silently.
    """
    sep = options.delimiter or ("\t" if fmt == "tsv" else ",")  # checked by ReadOptions
    chunk_rows = options.chunk_rows
    with _open_text(path) as fh:
        lineno = 0
        names = options.column_names
        if names is None:
            header = _read_record(fh)
            if header is None or not header[0].strip("\r\n"):
                raise DataError(f"{path}: empty file (expected a header line).")
            lineno = header[1]
            names = next(csv.reader([header[0].rstrip("\r\n")], delimiter=sep))
        names = list(names)
        converter.check_columns(names, path)
        width = len(names)
        lines: list[str] = []
        where: list[str] = []
        while True:
            record = _read_record(fh)
            if record is None:
                break
            text, used = record
            start, lineno = lineno + 1, lineno + used
            fields = _count_fields(text, sep)
            if fields != width:
                detail = f"expected {width} fields, saw {fields}" + (
                    " (blank line)" if fields == 0 else ""
                )
                if converter.on_bad_rows == "raise":
                    if lines:  # earlier rows first, so the first bad row is the one reported
                        yield _parse_lines(lines, names, sep, converter), where
                        lines, where = [], []
                    raise DataError(
                        f"{path}, line {start}: malformed row: {detail} (columns: {names})."
                    )
                report.rows_read += 1
                report.skip(f"malformed row ({detail})", f"{path}, line {start}")
                continue
            lines.append(text if text.endswith("\n") else text + "\n")
            where.append(f"{path}, line {start}")
            if len(lines) >= chunk_rows:
                yield _parse_lines(lines, names, sep, converter), where
                lines, where = [], []
        if lines:
            yield _parse_lines(lines, names, sep, converter), where


def _read_record(fh) -> tuple[str, int] | None:
    """The next record (one line, or several when a quoted field holds newlines) and the
    number of lines it spans; None at the end of the file."""
    line = fh.readline()
    if not line:
        return None
    used = 1
    while line.count('"') % 2:  # an open quote: the field goes on on the next line
        more = fh.readline()
        if not more:
            break
        line += more
        used += 1
    return line, used


def _count_fields(text: str, sep: str) -> int:
    body = text.rstrip("\r\n")
    if not body:
        return 0
    if '"' not in body:
        return body.count(sep) + 1
    return len(next(csv.reader([body], delimiter=sep)))


def _parse_lines(lines, names, sep, converter) -> dict:
    import io

    import pandas as pd

    frame = pd.read_csv(
        io.StringIO("".join(lines)),
        sep=sep,
        header=None,
        names=names,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skip_blank_lines=False,
        quoting=csv.QUOTE_MINIMAL,
    )
    return {c: frame[c].to_numpy() for c in converter.expected}


def _open_text(path):
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _iter_parquet(path, converter, chunk_rows):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{path}: reading Parquet files needs pyarrow, an optional extra: {PARQUET_EXTRA}"
        ) from None

    pf = pq.ParquetFile(path)
    converter.check_columns(pf.schema_arrow.names, path)
    start = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=converter.expected):
        cols = {}
        for c in converter.expected:
            arr = batch.column(c)
            if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or arr.null_count:
                cols[c] = _as_column(arr.to_pylist())
            else:
                cols[c] = _as_column(arr.to_numpy(zero_copy_only=False))
        n = batch.num_rows
        where = [f"{path}, row {start + i}" for i in range(n)]
        start += n
        yield cols, where


def _as_column(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values
    values = list(values)
    if values and any(isinstance(v, list | tuple | np.ndarray) for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=object)


def _iter_tfrecord(path, converter, chunk_rows, compression):
    import tensorflow as tf

    specs = {f.name: f for f in converter.specs}
    features = {}
    for name in converter.expected:
        f = specs.get(name)
        if f is None:  # label
            features[name] = tf.io.VarLenFeature(tf.float32)
        elif f.kind == "numeric":
            features[name] = tf.io.VarLenFeature(tf.float32)
        elif f.dtype == "string" or name in converter.hash_columns:
            features[name] = tf.io.VarLenFeature(tf.string)
        else:
            features[name] = tf.io.VarLenFeature(tf.int64)
    ds = tf.data.TFRecordDataset(path, compression_type=compression or None)
    first = True
    start = 0
    for raw in ds.batch(chunk_rows):
        if first:
            example = tf.train.Example.FromString(raw[0].numpy())
            _check_example(converter, example, path)
            first = False
        try:
            parsed = tf.io.parse_example(raw, features)
        except tf.errors.InvalidArgumentError as e:
            raise DataError(
                f"{path}, records {start}-{start + len(raw) - 1}: cannot parse tf.Example: "
                f"{e.message.splitlines()[0]}"
            ) from None
        n = int(raw.shape[0])
        cols = {}
        for name, sp in parsed.items():
            f = specs.get(name)
            dense = tf.sparse.to_dense(
                sp, default_value=b"" if sp.dtype == tf.string else 0
            ).numpy()
            lengths = np.bincount(sp.indices[:, 0].numpy(), minlength=n) if n else np.zeros(0)
            if f is not None and f.kind == "sequence":
                col = np.empty(n, dtype=object)
                for i in range(n):
                    items = dense[i, : lengths[i]]
                    col[i] = [x.decode() if isinstance(x, bytes) else x for x in items]
            else:
                if np.any(lengths > 1):
                    i = int(np.flatnonzero(lengths > 1)[0])
                    raise DataError(
                        f"{path}, record {start + i}, column {name!r}: expected one value, "
                        f"got {int(lengths[i])}."
                    )
                first_col = dense[:, 0] if dense.shape[1] else np.zeros(n, dense.dtype)
                if sp.dtype == tf.string:
                    col = np.array([x.decode() for x in first_col], dtype=object)
                    col[lengths == 0] = ""
                elif sp.dtype == tf.int64:
                    col = first_col.astype(object)
                    col[lengths == 0] = None
                else:
                    col = first_col.astype("float64")
                    col[lengths == 0] = np.nan
            cols[name] = col
        where = [f"{path}, record {start + i}" for i in range(n)]
        start += n
        yield cols, where


def _check_example(converter, example, path):
    keys = list(example.features.feature.keys())
    converter.check_unknown_columns(sorted(keys), f"{path}, record 0")
    missing = [c for c in converter.label_columns if c not in keys]
    if missing:
        raise DataError(f"{path}, record 0: missing label column(s) {missing}.")


def _iter_chunks(files, converter, report, options: ReadOptions):
    """(features, labels) of every chunk of `files`, converted and checked."""
    for path in files:
        kind = options.format or detect_format(path)  # ReadOptions checked `format`
        if kind in ("csv", "tsv"):
            it = _iter_text(path, kind, converter, report, options)
        elif kind == "parquet":
            it = _iter_parquet(path, converter, options.chunk_rows)
        else:
            it = _iter_tfrecord(path, converter, options.chunk_rows, options.compression)
        if path not in report.files:
            report.files.append(path)
        for cols, where in it:
            yield converter.convert(cols, where, report)


def read_arrays(
    paths: str | Sequence[str],
    specs: Sequence[Feature],
    label_columns: Sequence[str] | str = ("label",),
    *,
    options: ReadOptions | None = None,
    **keywords: Any,
) -> ReadResult:
    """Read files fully into memory: `ReadResult(features, labels, report)`.

    Args:
        paths: File(s), directories or globs.
        specs: Feature specs; each names a column.
        label_columns: Label column name(s) (one per task), values in {0, 1}.
        options: How to read the files: a `ReadOptions` (format, column_names, delimiter,
            hash_columns, ignore_columns, on_bad_rows, sequence_delimiter, shard_index,
            num_shards, compression, chunk_rows); None: the defaults.
        **keywords: The same fields as keyword arguments (compatibility), merged with
            `options`; a field given both ways is a `TypeError`.

    Returns:
        A `ReadResult`; `result.features[name]` has the dtype the model input expects.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,\\n")
    >>> out = read_arrays(path, [CategoricalFeature("user", vocabulary_size=10)])
    >>> out.features["user"].tolist(), out.labels["label"].tolist(), out.report.missing
    ([3, -1], [1, 0], {'user': 1})
    """
    options, converter, files, report = _start(
        paths, specs, label_columns, options, keywords, "read_arrays"
    )
    parts_f: dict[str, list] = {f.name: [] for f in converter.specs}
    parts_l: dict[str, list] = {c: [] for c in converter.label_columns}
    for feats, labels in _iter_chunks(files, converter, report, options):
        for k, v in feats.items():
            parts_f[k].append(v)
        for k, v in labels.items():
            parts_l[k].append(v)
    features = {
        k: _concat(v, f) for (k, v), f in zip(parts_f.items(), converter.specs, strict=True)
    }
    labels = {k: np.concatenate(v) if v else np.zeros(0, "int64") for k, v in parts_l.items()}
    return ReadResult(features, labels, report)


def check_files(
    paths: str | Sequence[str],
    specs: Sequence[Feature],
    label_columns: Sequence[str] | str = ("label",),
    *,
    options: ReadOptions | None = None,
    **keywords: Any,
) -> ReadReport:
    """Read and check every row of the files without keeping them; returns the `ReadReport`.

    The same conversion and checks as `read_arrays` (so the same `DataError`, naming file,
    line and column), in constant memory: `rankmixer train` / `evaluate` run it over every
    split before training, so bad data fails fast, before a model is built, instead of
    inside a `tf.data` pipeline after an epoch. `options` / `**keywords`: as in `read_arrays`.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,-1\\n")
    >>> report = check_files(path, [CategoricalFeature("user", vocabulary_size=10)])
    >>> report.rows_kept, report.missing
    (2, {'user': 1})
    """
    options, converter, files, report = _start(
        paths, specs, label_columns, options, keywords, "check_files"
    )
    for _ in _iter_chunks(files, converter, report, options):
        pass
    return report


def _start(paths, specs, label_columns, options, keywords, caller):
    """Every reader's first steps: the options (merged with the keywords), the converter,
    this shard's files and an empty report."""
    options = resolve_options(options, keywords, caller)
    converter = make_converter(specs, label_columns, options)
    files = list_files(paths, options.shard_index, options.num_shards)
    return options, converter, files, ReadReport()


def _concat(parts, spec):
    if parts:
        return np.concatenate(parts)
    shape = (0,) + tuple(spec.input_shape)
    return np.zeros(shape, dtype=_np_dtype(spec))

"""File readers: CSV/TSV, Parquet and TFRecord (`tf.Example`) -> arrays or a `tf.data.Dataset`.

The schema comes from the feature specs (`keras_rankmixer.features`): every spec names one
column; `label_columns` name the label columns (one per task). Two entry points share one
row-conversion and checking path:

- `read_arrays(paths, specs, ...)` loads everything into memory and returns
  `ReadResult(features, labels, report)` (dicts of NumPy arrays) — fine for data that fits
  in memory (Frappe, validation splits, tests).
- `make_dataset(paths, specs, ...)` streams the files chunk by chunk and returns a batched,
  prefetched `tf.data.Dataset` of `(features dict, labels dict)` for `model.fit`.

**Column conversion.** Integer-id columns (`CategoricalFeature`/`SequenceFeature` with
`dtype="int64"`) must hold integers (`"12"` or `"12.0"`); string features keep the text;
numeric features are parsed as float32. Sequence columns hold ids joined by
`sequence_delimiter` (default `"|"`), padded with -1 (or "") to `max_length`; longer lists are
truncated to `max_length` and the truncations are counted in the report. Columns listed in
`hash_columns` hold raw strings (e.g. Criteo's hex ids) that are hashed to int64 ids in
`[0, 2**62)` by `hash_strings` (`tf.strings.to_hash_bucket_fast`, FarmHash); declare those
features as `CategoricalFeature(name, num_hash_bins=M)` with the default `dtype="int64"`: the
model then reduces the id modulo M and stays XLA-compilable (a `dtype="string"` feature would
hash inside the model, which XLA cannot compile). At serving time apply the same
`hash_strings` to the raw strings.

**Missing values** (a documented safe default, counted per column in `report.missing`): an
empty cell (or `nan`/`NaN`/`null` text, or an absent `tf.Example` key) in an id column becomes
-1 (the reserved missing slot), in a string column "", in a numeric column NaN (the numeric
embedding's own learned "missing" vector).

**Bad data** raises `DataError` naming the file, the line (CSV/TSV: the 1-based line number in
the file; Parquet: the 1-based row; TFRecord: the 0-based record index) and the column:

- a malformed row (wrong number of fields), an unparsable value (`"abc"` in an id column, a
  non-integer id), a label that is missing, NaN or not in {0, 1};
- an unknown column (in the header, or in a `tf.Example`, which is checked on the first
  record of each file) that is neither a feature, a label nor listed in `ignore_columns`;
- a missing column (a spec or label without a column).

With `on_bad_rows="skip"` the row-level problems (malformed rows, unparsable values, bad
labels) skip the row instead and are counted in `report.skipped` by reason (with the first
few locations in `report.examples`); schema problems (unknown / missing columns) always raise.
Nothing is dropped silently: `ReadResult.report` (and, for datasets, the `report` attribute of
the returned dataset, filled as it is iterated) says how many rows were read, kept and skipped.

**Sharding.** `shard_index=i, num_shards=n` keeps files `sorted(files)[i::n]` (for multi-process
/ multi-host input, e.g. `process_index` of `process_count`). Files are the unit: when the file
count is not a multiple of n, the first `len(files) % n` shards get one file more; fewer files
than shards is an error (some process would get no data). Split large data into many files.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from keras_rankmixer.features import Feature, check_features

#: Column names of the raw Criteo layout (label, 13 integer counts, 26 hashed categoricals).
CRITEO_COLUMNS: tuple[str, ...] = (
    ("label",) + tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))
)
#: Column names of Frappe_x1 (BARS): label and 10 categorical fields (integer ids).
FRAPPE_COLUMNS: tuple[str, ...] = (
    "label",
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
#: Ids produced by `hash_strings` lie in `[0, HASH_SPACE)`.
HASH_SPACE = 2**62
_MISSING_TEXT = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A"}
_FORMATS = ("csv", "tsv", "parquet", "tfrecord")


class DataError(ValueError):
    """Bad input data; the message names the file, the line/row/record and the column."""


@dataclasses.dataclass
class ReadReport:
    """Counts of what a reader did: rows read/kept, skipped by reason, missing cells by column.

    For a `make_dataset` dataset the counts are cumulative over every pass of its generator,
    including a partial one: Keras' JAX-backend `fit` reads one batch through a pass of its
    own before training (one extra chunk per `fit` call).
    """

    files: list[str] = dataclasses.field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    missing: dict[str, int] = dataclasses.field(default_factory=dict)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {reason}")

    def count(self, table: dict, column: str, n: int) -> None:
        if n:
            table[column] = table.get(column, 0) + int(n)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        text = f"{self.rows_read:,} rows read, {self.rows_kept:,} kept"
        if self.skipped:
            text += ", skipped: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.skipped.items()))
        if self.missing:
            text += "; missing cells: " + ", ".join(f"{k} x{v}" for k, v in self.missing.items())
        return text


@dataclasses.dataclass
class ReadResult:
    """Features and labels (dicts of NumPy arrays) and the `ReadReport`."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    report: ReadReport

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))


def hash_strings(values: Any) -> np.ndarray:
    """Hash raw strings to int64 ids in `[0, HASH_SPACE)`; missing (empty/NaN text) -> -1.

    Uses `tf.strings.to_hash_bucket_fast` (FarmHash64), so the ids are stable across runs and
    machines. Apply the same function to raw values at serving time.

    Example:

    >>> ids = hash_strings(["05db9164", "", "05db9164"])
    >>> bool(ids[0] == ids[2]), int(ids[1])
    (True, -1)
    """
    import tensorflow as tf

    text = np.asarray(values, dtype=object).astype(str)
    ids = tf.strings.to_hash_bucket_fast(text, HASH_SPACE).numpy().astype("int64")
    missing = np.isin(text, list(_MISSING_TEXT))
    return np.where(missing, -1, ids)


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
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be a positive int, got num_shards={num_shards!r}.")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"`shard_index` must be in [0, {num_shards}), got shard_index={shard_index!r}."
        )
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
        f"cannot tell the format of {path!r} from its name; pass format= one of {_FORMATS}."
    )


# ---------------------------------------------------------------------------------------------
# Column conversion shared by all formats.


class _Converter:
    """Turns one chunk of raw columns into checked feature/label arrays."""

    def __init__(
        self,
        specs: Sequence[Feature],
        label_columns: Sequence[str],
        hash_columns: Sequence[str],
        ignore_columns: Sequence[str],
        on_bad_rows: str,
        sequence_delimiter: str,
    ) -> None:
        self.specs = check_features(specs)
        self.label_columns = list(label_columns)
        if not self.label_columns:
            raise ValueError("`label_columns` must name at least one label column.")
        names = [f.name for f in self.specs]
        clash = sorted(set(names) & set(self.label_columns))
        if clash:
            raise ValueError(f"column(s) {clash} are both a feature and a label.")
        self.hash_columns = set(hash_columns)
        unknown_hash = sorted(self.hash_columns - set(names))
        if unknown_hash:
            raise ValueError(f"`hash_columns` names unknown feature(s) {unknown_hash}.")
        for f in self.specs:
            if f.name in self.hash_columns and (f.kind == "numeric" or f.dtype != "int64"):
                raise ValueError(
                    f"`hash_columns` feature {f.name!r} must be an int64 categorical/sequence "
                    "feature (declare it with num_hash_bins=...)."
                )
        self.ignore_columns = set(ignore_columns)
        if on_bad_rows not in ("raise", "skip"):
            raise ValueError(f"`on_bad_rows` must be 'raise' or 'skip', got {on_bad_rows!r}.")
        self.on_bad_rows = on_bad_rows
        self.delimiter = sequence_delimiter
        self.expected = names + self.label_columns

    def check_columns(self, columns: Sequence[str], file: str) -> None:
        columns = list(columns)
        unknown = [c for c in columns if c not in self.expected and c not in self.ignore_columns]
        if unknown:
            raise DataError(
                f"{file}: unknown column(s) {unknown}; expected features "
                f"{[f.name for f in self.specs]} and labels {self.label_columns} (pass "
                "ignore_columns=[...] to drop extra columns)."
            )
        missing = [c for c in self.expected if c not in columns]
        if missing:
            raise DataError(f"{file}: missing column(s) {missing}; the file has columns {columns}.")

    def _bad(self, bad: np.ndarray, reason: str, column: str, where: list[str], values, report):
        """Raise for the first bad row, or mark rows to skip."""
        if not bad.any():
            return
        rows = np.flatnonzero(bad)
        if self.on_bad_rows == "raise":
            i = rows[0]
            raise DataError(f"{where[i]}, column {column!r}: {reason} (value {values[i]!r}).")
        for i in rows:
            report.skip(f"{reason} in column {column!r}", where[i])

    def convert(
        self, columns: Mapping[str, np.ndarray], where: list[str], report: ReadReport
    ) -> tuple[dict, dict]:
        """`columns`: raw object/str/number arrays; `where`: a location string per row."""
        n = len(where)
        keep = np.ones(n, bool)
        out_f: dict[str, np.ndarray] = {}
        for f in self.specs:
            raw = np.asarray(columns[f.name])
            if f.kind == "sequence":
                arr, bad, missing, trunc = self._sequence(f, raw)
                report.count(report.truncated, f.name, trunc)
            elif f.kind == "numeric":
                arr, bad, missing = self._numeric(raw)
            elif f.dtype == "string":
                arr, missing = self._text(raw)
                bad = np.zeros(n, bool)
            elif f.name in self.hash_columns:
                arr = hash_strings(raw)
                missing = arr < 0
                bad = np.zeros(n, bool)
            else:
                arr, bad, missing = self._ids(raw)
            reason = "not a number" if f.kind == "numeric" else "not an integer id"
            self._bad(bad, reason, f.name, where, raw, report)
            keep &= ~bad
            report.count(report.missing, f.name, int(np.sum(missing & ~bad)))
            out_f[f.name] = arr
        out_l: dict[str, np.ndarray] = {}
        for c in self.label_columns:
            raw = np.asarray(columns[c])
            value, bad_num, missing = self._numeric(raw)
            bad = bad_num | missing | ~np.isin(value, (0.0, 1.0))
            self._bad(bad, "label must be 0 or 1", c, where, raw, report)
            keep &= ~bad
            out_l[c] = np.where(bad, 0, value).astype("int64")
        report.rows_read += n
        if not keep.all():
            out_f = {k: v[keep] for k, v in out_f.items()}
            out_l = {k: v[keep] for k, v in out_l.items()}
        report.rows_kept += int(keep.sum())
        return out_f, out_l

    @staticmethod
    def _is_missing(raw: np.ndarray) -> np.ndarray:
        if raw.dtype.kind == "f":
            return np.isnan(raw)
        if raw.dtype.kind in "iub":
            return np.zeros(raw.shape, bool)
        return np.array([v is None or str(v).strip() in _MISSING_TEXT for v in raw], bool)

    def _numeric(self, raw):
        if raw.dtype.kind in "iubf":
            value = raw.astype("float64")
            return value, np.zeros(len(raw), bool), ~np.isfinite(value)
        missing = self._is_missing(raw)
        text = np.where(missing, "nan", raw.astype(str))
        value = np.full(len(raw), np.nan)
        bad = np.zeros(len(raw), bool)
        try:
            value = text.astype("float64")
        except ValueError:
            for i, t in enumerate(text):
                try:
                    value[i] = float(t)
                except ValueError:
                    bad[i] = True
        # NaN and +-inf both mean missing (documented), and are counted as such.
        return value, bad, missing | (~bad & np.isinf(value))

    def _ids(self, raw):
        # Negative ids mean missing (the reserved row 0) and are counted as missing.
        if raw.dtype.kind in "iu":
            ids = raw.astype("int64")
            return ids, np.zeros(len(raw), bool), ids < 0
        if raw.dtype.kind != "f":
            missing = self._is_missing(raw)
            text = np.where(missing, "-1", raw.astype(str))
            try:  # exact for any int64 (hashed ids exceed float64's 2**53)
                ids = text.astype("int64")
                return ids, np.zeros(len(raw), bool), missing | (ids < 0)
            except (ValueError, OverflowError):
                pass
        value, bad, missing = self._numeric(raw)
        inf = np.isinf(value)
        missing = missing & ~inf  # inf is not a missing id but a bad one
        ok = ~(bad | missing | inf)
        frac = np.zeros(len(value), bool)
        frac[ok] = value[ok] != np.round(value[ok])
        bad = bad | inf | frac
        ids = np.where(ok & ~frac, value, -1).astype("int64")
        return ids, bad, missing | (ids < 0)

    def _text(self, raw):
        missing = self._is_missing(raw)
        return np.where(missing, "", raw.astype(str)).astype(object), missing

    def _sequence(self, f, raw):
        n, length = len(raw), f.max_length
        pad = "" if f.dtype == "string" else -1
        out = np.full((n, length), pad, dtype=object if f.dtype == "string" else "int64")
        bad = np.zeros(n, bool)
        missing = np.zeros(n, bool)
        trunc = 0
        for i, cell in enumerate(raw):
            if isinstance(cell, list | tuple | np.ndarray):
                items = list(cell)
            elif cell is None or (isinstance(cell, float) and np.isnan(cell)):
                items = []
            else:
                items = [t for t in str(cell).split(self.delimiter) if t.strip() != ""]
                if len(items) == 1 and items[0].strip() in _MISSING_TEXT:
                    items = []
            if not items:
                missing[i] = True
                continue
            if len(items) > length:
                trunc += 1
                items = items[:length]
            if not items:
                continue
            if f.dtype == "string":
                out[i, : len(items)] = [str(t) for t in items]
            elif f.name in self.hash_columns:
                out[i, : len(items)] = hash_strings(items)
            else:
                try:
                    vals = np.asarray(items, dtype="float64")
                except (TypeError, ValueError):
                    bad[i] = True
                    continue
                if not np.all(np.isfinite(vals)) or np.any(vals != np.round(vals)):
                    bad[i] = True
                    continue
                out[i, : len(items)] = vals.astype("int64")
        return out, bad, missing, trunc


# ---------------------------------------------------------------------------------------------
# Per-format chunk iterators: yield (columns dict, where list).


def _iter_text(path, fmt, converter, report, chunk_rows, column_names, delimiter):
    """Chunks of a CSV/TSV file with exact 1-based line numbers.

    Every record's fields are counted before pandas parses the chunk: a row with more or
    fewer fields than the header is malformed (raised, or skipped and counted with its line
    under on_bad_rows="skip"); pandas alone pads short rows with empty cells silently.
    """
    sep = delimiter or ("\t" if fmt == "tsv" else ",")
    if len(sep) != 1:
        raise ValueError(f"`delimiter` must be one character, got delimiter={sep!r}.")
    with _open_text(path) as fh:
        lineno = 0
        names = column_names
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
    import pyarrow as pa
    import pyarrow.parquet as pq

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
    unknown = [k for k in keys if k not in converter.expected and k not in converter.ignore_columns]
    if unknown:
        raise DataError(
            f"{path}, record 0: unknown column(s) {sorted(unknown)}; expected features "
            f"{[f.name for f in converter.specs]} and labels {converter.label_columns} (pass "
            "ignore_columns=[...] to drop extra columns)."
        )
    missing = [c for c in converter.label_columns if c not in keys]
    if missing:
        raise DataError(f"{path}, record 0: missing label column(s) {missing}.")


def _iter_chunks(files, fmt, converter, report, chunk_rows, column_names, delimiter, compression):
    for path in files:
        kind = fmt or detect_format(path)
        if kind not in _FORMATS:
            raise ValueError(f"`format` must be one of {_FORMATS}, got {kind!r}.")
        if kind in ("csv", "tsv"):
            it = _iter_text(path, kind, converter, report, chunk_rows, column_names, delimiter)
        elif kind == "parquet":
            it = _iter_parquet(path, converter, chunk_rows)
        else:
            it = _iter_tfrecord(path, converter, chunk_rows, compression)
        if path not in report.files:
            report.files.append(path)
        for cols, where in it:
            yield converter.convert(cols, where, report)


def _common(specs, label_columns, hash_columns, ignore_columns, on_bad_rows, delimiter):
    if isinstance(label_columns, str):
        label_columns = [label_columns]
    return _Converter(
        specs, label_columns, hash_columns or (), ignore_columns or (), on_bad_rows, delimiter
    )


def read_arrays(
    paths: str | Sequence[str],
    specs: Sequence[Feature],
    label_columns: Sequence[str] | str = ("label",),
    *,
    format: str | None = None,
    column_names: Sequence[str] | None = None,
    delimiter: str | None = None,
    hash_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    on_bad_rows: str = "raise",
    sequence_delimiter: str = "|",
    shard_index: int = 0,
    num_shards: int = 1,
    compression: str | None = None,
    chunk_rows: int = 65536,
) -> ReadResult:
    """Read files fully into memory: `ReadResult(features, labels, report)`.

    Args:
        paths: File(s), directories or globs.
        specs: Feature specs; each names a column.
        label_columns: Label column name(s) (one per task), values in {0, 1}.
        format: `"csv"`, `"tsv"`, `"parquet"` or `"tfrecord"`; None detects from the name.
        column_names: For header-less text files (e.g. raw Criteo TSV: `CRITEO_COLUMNS`).
        delimiter: Field separator for text files (default `,` for csv, tab for tsv).
        hash_columns: Features whose raw strings are hashed to int64 ids (`hash_strings`).
        ignore_columns: Extra columns to drop instead of raising "unknown column".
        on_bad_rows: `"raise"` (default) or `"skip"` (skip and count in the report).
        sequence_delimiter: Separator of ids inside a sequence cell.
        shard_index, num_shards: Keep only shard i of n of the files (see `list_files`).
        compression: TFRecord compression (`"GZIP"`, `"ZLIB"` or None).
        chunk_rows: Rows converted at a time.

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
    converter = _common(
        specs, label_columns, hash_columns, ignore_columns, on_bad_rows, sequence_delimiter
    )
    files = list_files(paths, shard_index, num_shards)
    report = ReadReport()
    parts_f: dict[str, list] = {f.name: [] for f in converter.specs}
    parts_l: dict[str, list] = {c: [] for c in converter.label_columns}
    for feats, labels in _iter_chunks(
        files, format, converter, report, chunk_rows, column_names, delimiter, compression
    ):
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
    format: str | None = None,
    column_names: Sequence[str] | None = None,
    delimiter: str | None = None,
    hash_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    on_bad_rows: str = "raise",
    sequence_delimiter: str = "|",
    shard_index: int = 0,
    num_shards: int = 1,
    compression: str | None = None,
    chunk_rows: int = 65536,
) -> ReadReport:
    """Read and check every row of the files without keeping them; returns the `ReadReport`.

    The same conversion and checks as `read_arrays` (so the same `DataError`, naming file,
    line and column), in constant memory: `rankmixer train` / `evaluate` run it over every
    split before training, so bad data fails fast, before a model is built, instead of
    inside a `tf.data` pipeline after an epoch.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,-1\\n")
    >>> report = check_files(path, [CategoricalFeature("user", vocabulary_size=10)])
    >>> report.rows_kept, report.missing
    (2, {'user': 1})
    """
    converter = _common(
        specs, label_columns, hash_columns, ignore_columns, on_bad_rows, sequence_delimiter
    )
    files = list_files(paths, shard_index, num_shards)
    report = ReadReport()
    for _ in _iter_chunks(
        files, format, converter, report, chunk_rows, column_names, delimiter, compression
    ):
        pass
    return report


def _concat(parts, spec):
    if parts:
        return np.concatenate(parts)
    shape = (0,) + tuple(spec.input_shape)
    return np.zeros(shape, dtype=_np_dtype(spec))


def _np_dtype(spec) -> Any:
    if spec.kind == "numeric":
        return "float32"
    return object if spec.dtype == "string" else "int64"


def _finalize(features: dict, specs) -> dict:
    out = {}
    for f in specs:
        x = features[f.name]
        out[f.name] = x.astype("float32") if f.kind == "numeric" else x
    return out


def make_dataset(
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
    format: str | None = None,
    column_names: Sequence[str] | None = None,
    delimiter: str | None = None,
    hash_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    on_bad_rows: str = "raise",
    sequence_delimiter: str = "|",
    shard_index: int = 0,
    num_shards: int = 1,
    compression: str | None = None,
    chunk_rows: int = 65536,
    shuffle_chunks: int = 1,
):
    """A batched, prefetched `tf.data.Dataset` of `(features dict, labels dict)` from files.

    Files are read chunk by chunk (`chunk_rows` rows) in a Python generator, converted and
    checked exactly as in `read_arrays`, and re-batched to `batch_size`. With `shuffle`, the
    file order and the rows inside each window of `shuffle_chunks` consecutive chunks are
    permuted, differently every epoch but deterministically for a given `seed` (a window
    spans files, so rows of different files mix; it holds up to `shuffle_chunks * chunk_rows`
    rows in memory). The returned dataset has a `report` attribute (a `ReadReport`,
    cumulative over epochs), a `files` attribute (this shard's files) and an `errors` list:
    a `DataError` raised while iterating reaches the caller wrapped by tf.data as an
    `InvalidArgumentError`, and the original is appended to `errors`.

    Args:
        paths, specs, label_columns, format, column_names, delimiter, hash_columns,
            ignore_columns, on_bad_rows, sequence_delimiter, shard_index, num_shards,
            compression, chunk_rows: As in `read_arrays`.
        batch_size: Rows per batch.
        shuffle: Shuffle file order and rows within each window of `shuffle_chunks` chunks.
        shuffle_chunks: Chunks per shuffle window (1: rows mix only inside a chunk).
        seed: Shuffle seed.
        repeat: Repeat forever.
        drop_remainder: Drop the last partial batch (static batch shapes).
        cache: Cache the converted rows in memory after the first pass.

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,4\\n1,5\\n")
    >>> ds = make_dataset(path, [CategoricalFeature("user", vocabulary_size=10)], batch_size=2)
    >>> [len(y["label"]) for _, y in ds]
    [2, 1]
    """
    import tensorflow as tf

    from keras_rankmixer.layers._checks import check_positive

    check_positive("batch_size", batch_size, integer=True)
    check_positive("shuffle_chunks", shuffle_chunks, integer=True)
    converter = _common(
        specs, label_columns, hash_columns, ignore_columns, on_bad_rows, sequence_delimiter
    )
    files = list_files(paths, shard_index, num_shards)
    report = ReadReport()
    errors: list[DataError] = []
    epoch = [0]

    def permuted(window: list, rng) -> tuple[dict, dict]:
        """The window's chunks as one block of rows in a random order."""
        feats, labels = (
            {k: np.concatenate([part[i][k] for part in window]) for k in window[0][i]}
            for i in (0, 1)
        )
        perm = rng.permutation(len(next(iter(labels.values()))))
        return {k: v[perm] for k, v in feats.items()}, {k: v[perm] for k, v in labels.items()}

    def generate() -> Iterator:
        # tf.data runs this in its own thread and re-raises an error as an opaque
        # InvalidArgumentError ("... [[{{node PyFunc}}]]"); keep the DataError itself so the
        # caller can report it (`dataset.errors`).
        try:
            yield from rows()
        except DataError as e:
            errors.append(e)
            raise

    def rows() -> Iterator:
        rng = np.random.default_rng([seed, epoch[0]])
        epoch[0] += 1
        order = list(files)
        if shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        window = []
        for feats, labels in _iter_chunks(
            order, format, converter, report, chunk_rows, column_names, delimiter, compression
        ):
            if not len(next(iter(labels.values()))):
                continue
            feats = _finalize(feats, converter.specs)
            if not shuffle:
                yield feats, labels
                continue
            window.append((feats, labels))
            if len(window) == shuffle_chunks:
                yield permuted(window, rng)
                window = []
        if window:
            yield permuted(window, rng)

    signature = (
        {
            f.name: tf.TensorSpec(
                (None,) + tuple(f.input_shape),
                tf.string if f.dtype == "string" else tf.as_dtype(_np_dtype(f)),
            )
            for f in converter.specs
        },
        {c: tf.TensorSpec((None,), tf.int64) for c in converter.label_columns},
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    ds.report = report
    ds.files = files
    ds.errors = errors
    return ds


def adapt_vocabularies(
    specs: Sequence[Feature],
    features: Mapping[str, np.ndarray],
    min_count: int = 1,
    names: Sequence[str] | None = None,
) -> list[Feature]:
    """Specs whose categorical vocabularies come from `features` (e.g. the training split).

    Each int64/string `CategoricalFeature`/`SequenceFeature` (all of them, or only those in
    `names`) that is not hashed gets `vocabulary=` the sorted values seen at least `min_count`
    times (missing values -1 / "" excluded); values not seen in training then map to the
    reserved OOV row. Numeric specs get mean/std (`features.adapt_features`).

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> spec = adapt_vocabularies([CategoricalFeature("a", vocabulary_size=9999)],
    ...                           {"a": np.array([5, 7, 5, -1])})
    >>> spec[0].vocabulary, spec[0].vocabulary_size
    ((5, 7), None)
    """
    from keras_rankmixer.features import adapt_features

    out = []
    for f in adapt_features(specs, features):
        if f.kind != "numeric" and not f.num_hash_bins and (names is None or f.name in names):
            x = np.asarray(features[f.name]).reshape(-1)
            x = x[x != ""] if f.dtype == "string" else x[x >= 0]
            values, counts = np.unique(x, return_counts=True)
            values = values[counts >= min_count]
            if not len(values):
                raise DataError(f"feature {f.name!r}: no values to build a vocabulary from.")
            vocab = (
                tuple(str(v) for v in values)
                if f.dtype == "string"
                else tuple(int(v) for v in values)
            )
            f = dataclasses.replace(f, vocabulary=vocab, vocabulary_size=None)
        out.append(f)
    return out


def frappe_features(embedding_dim: int = 10, vocabulary_size: int = 5500) -> list[Feature]:
    """Specs for Frappe_x1's 10 categorical fields (integer ids), one semantic group each.

    The BARS files number all fields' values in one id space (below 5500); adapt the
    vocabularies from the training split with `adapt_vocabularies` to get compact tables.
    """
    from keras_rankmixer.features import CategoricalFeature

    groups = {"user": "user", "item": "item"}
    return [
        CategoricalFeature(
            name,
            vocabulary_size=vocabulary_size,
            embedding_dim=embedding_dim,
            group=groups.get(name, name),
        )
        for name in FRAPPE_COLUMNS[1:]
    ]


def criteo_features(
    embedding_dim: int = 16, num_hash_bins: int = 100_000
) -> tuple[list[Feature], list[str]]:
    """Specs for the raw Criteo layout and the list of columns to hash.

    I1-I13 are `NumericFeature(transform="log1p")` (adapt mean/std on the training split);
    C1-C26 are hex strings, hashed in the reader (`hash_columns`) to int64 ids and declared
    `CategoricalFeature(num_hash_bins=...)` int64, so the model stays XLA-compilable.
    """
    from keras_rankmixer.features import CategoricalFeature, NumericFeature

    numeric = [
        NumericFeature(c, transform="log1p", embedding_dim=embedding_dim, group="dense")
        for c in CRITEO_COLUMNS[1:14]
    ]
    cats = [
        CategoricalFeature(
            c, num_hash_bins=num_hash_bins, embedding_dim=embedding_dim, group="sparse"
        )
        for c in CRITEO_COLUMNS[14:]
    ]
    return numeric + cats, list(CRITEO_COLUMNS[14:])

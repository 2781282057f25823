"""The data schema: raw columns -> checked feature/label arrays, by the feature specs.

The schema comes from the feature specs (`keras_rankmixer.features`): every spec names one
column; `label_columns` name the label columns (one per task). Every reader (`sources`:
CSV/TSV, Parquet, TFRecord; `pipeline`: the `tf.data` stream) turns its chunks of raw
columns into arrays through the one converter here, so the values, the checks and the
`ReadReport` counts are the same whatever the format. Also here: `DataError`, `ReadReport`,
`ReadResult`, `hash_strings` and `adapt_vocabularies`.

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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_rankmixer.data.options import ReadOptions, check_on_bad_rows
from keras_rankmixer.features import Feature, check_features

#: Ids produced by `hash_strings` lie in `[0, HASH_SPACE)`.
HASH_SPACE = 2**62
_MISSING_TEXT = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A"}


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
        check_on_bad_rows(on_bad_rows)
        self.on_bad_rows = on_bad_rows
        self.delimiter = sequence_delimiter
        self.expected = names + self.label_columns

    def check_unknown_columns(self, columns: Sequence[str], where: str) -> None:
        """`DataError` (at `where`) naming the `columns` neither expected nor ignored."""
        unknown = [c for c in columns if c not in self.expected and c not in self.ignore_columns]
        if unknown:
            raise DataError(
                f"{where}: unknown column(s) {unknown}; expected features "
                f"{[f.name for f in self.specs]} and labels {self.label_columns} (pass "
                "ignore_columns=[...] to drop extra columns)."
            )

    def check_columns(self, columns: Sequence[str], file: str) -> None:
        columns = list(columns)
        self.check_unknown_columns(columns, file)
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


def _common(specs, label_columns, hash_columns, ignore_columns, on_bad_rows, delimiter):
    if isinstance(label_columns, str):
        label_columns = [label_columns]
    return _Converter(
        specs, label_columns, hash_columns or (), ignore_columns or (), on_bad_rows, delimiter
    )


def make_converter(
    specs: Sequence[Feature], label_columns: Sequence[str] | str, options: ReadOptions
) -> _Converter:
    """The converter of `specs` and `label_columns` under `options` (every reader's first step)."""
    return _common(
        specs,
        label_columns,
        options.hash_columns,
        options.ignore_columns,
        options.on_bad_rows,
        options.sequence_delimiter,
    )


def _np_dtype(spec) -> Any:
    if spec.kind == "numeric":
        return "float32"
    return object if spec.dtype == "string" else "int64"


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

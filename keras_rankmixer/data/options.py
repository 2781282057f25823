"""`ReadOptions`: how to read the data files, one object for every reader and command.

The same eleven settings (the file format and layout, hashing, the bad-row policy, sharding,
compression and chunk size) drive `read_arrays`, `check_files`, `make_dataset` and the native
path's `make_native_dataset`; each takes `options=ReadOptions(...)`. The readers still accept
the settings as keyword arguments, merged with `options`: a keyword fills a field that
`options` was not given, and a field given both ways is a `TypeError`.
`ReadOptions.from_config` picks the settings out of a `rankmixer train` config dict.

Every field is checked when the object is made: a bad value raises a `ValueError` that names
the field and the value, before any file is opened. Lists become tuples, so an options object
is immutable and hashable; `replace` returns a changed (and re-checked) copy.

Example:

>>> import os, tempfile
>>> from keras_rankmixer.data import ReadOptions, check_files, read_arrays
>>> from keras_rankmixer.features import CategoricalFeature
>>> path = os.path.join(tempfile.mkdtemp(), "clicks.tsv")
>>> _ = open(path, "w").write("1\\t3\\n2\\t4\\n0\\t5\\n")
>>> options = ReadOptions(column_names=["label", "user"], on_bad_rows="skip")
>>> spec = [CategoricalFeature("user", vocabulary_size=10)]
>>> read_arrays(path, spec, options=options).features["user"].tolist()
[3, 5]
>>> check_files(path, spec, options=options).skipped
{"label must be 0 or 1 in column 'label'": 1}
>>> ReadOptions.from_config({"on_bad_rows": "skip", "epochs": 3}).on_bad_rows
'skip'
>>> ReadOptions(on_bad_rows="drop")
Traceback (most recent call last):
...
ValueError: `on_bad_rows` must be 'raise' or 'skip', got 'drop'.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The file formats the readers know (`format=`; None detects it from the file name).
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "tfrecord")
#: TFRecord compressions (`compression=`); "" is the same as None.
COMPRESSIONS: tuple[str | None, ...] = (None, "", "GZIP", "ZLIB")


def check_on_bad_rows(on_bad_rows: Any) -> None:
    if on_bad_rows not in ("raise", "skip"):
        raise ValueError(f"`on_bad_rows` must be 'raise' or 'skip', got {on_bad_rows!r}.")


def check_shards(shard_index: Any, num_shards: Any) -> None:
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be a positive int, got num_shards={num_shards!r}.")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"`shard_index` must be in [0, {num_shards}), got shard_index={shard_index!r}."
        )


def check_delimiter(delimiter: Any) -> None:
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"`delimiter` must be one character, got delimiter={delimiter!r}.")


def _names(field: str, value: Any, allow_none: bool) -> tuple[str, ...] | None:
    """A list of column names as a tuple (a lone string is a mistake, not one name)."""
    if value is None:
        return None if allow_none else ()
    if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
        raise ValueError(
            f"`{field}` must be a list of column names, got {field}={value!r}"
            + (f" (did you mean {field}=[{value!r}]?)." if isinstance(value, str) else ".")
        )
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"`{field}` must hold column names (strings), got {bad[0]!r}.")
    return tuple(sorted(value) if isinstance(value, set | frozenset) else value)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How to read the data files (shared by `read_arrays`, `check_files`, `make_dataset`).

    Attributes:
        format: `"csv"`, `"tsv"`, `"parquet"` or `"tfrecord"`; None detects it from each
            file's name (`detect_format`).
        column_names: For header-less text files (e.g. raw Criteo TSV: `CRITEO_COLUMNS`);
            None reads the header line.
        delimiter: Field separator of text files, one character (None: `,` for csv, tab for
            tsv).
        hash_columns: Features whose raw strings are hashed to int64 ids (`hash_strings`).
        ignore_columns: Extra columns to drop instead of raising "unknown column".
        on_bad_rows: `"raise"` (default) or `"skip"` (skip the row and count it in the
            report).
        sequence_delimiter: Separator of the ids inside a sequence cell (non-empty).
        shard_index, num_shards: Keep only shard i of n of the files (see `list_files`).
        compression: TFRecord compression: None (or ""), `"GZIP"` or `"ZLIB"`.
        chunk_rows: Rows converted at a time (a positive int).
    """

    format: str | None = None
    column_names: tuple[str, ...] | None = None
    delimiter: str | None = None
    hash_columns: tuple[str, ...] = ()
    ignore_columns: tuple[str, ...] = ()
    on_bad_rows: str = "raise"
    sequence_delimiter: str = "|"
    shard_index: int = 0
    num_shards: int = 1
    compression: str | None = None
    chunk_rows: int = 65536

    def __new__(cls, *args: Any, **kwargs: Any) -> ReadOptions:
        # Remember which fields were given (not left at their defaults): a reader merging
        # `options` with keyword arguments refuses a field given both ways.
        self = super().__new__(cls)
        names = cls.fields()
        object.__setattr__(self, "_given", frozenset(names[: len(args)]) | frozenset(kwargs))
        return self

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"`format` must be one of {FORMATS}, got {self.format!r}.")
        set_ = functools.partial(object.__setattr__, self)
        set_("column_names", _names("column_names", self.column_names, allow_none=True))
        if self.delimiter is not None:
            check_delimiter(self.delimiter)
        set_("hash_columns", _names("hash_columns", self.hash_columns, allow_none=False))
        set_("ignore_columns", _names("ignore_columns", self.ignore_columns, allow_none=False))
        check_on_bad_rows(self.on_bad_rows)
        if not isinstance(self.sequence_delimiter, str) or not self.sequence_delimiter:
            raise ValueError(
                "`sequence_delimiter` must be a non-empty string, got "
                f"sequence_delimiter={self.sequence_delimiter!r}."
            )
        check_shards(self.shard_index, self.num_shards)
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                "`compression` must be None, 'GZIP' or 'ZLIB' (TFRecord files), got "
                f"compression={self.compression!r}."
            )
        rows = self.chunk_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"`chunk_rows` must be a positive int, got chunk_rows={rows!r}.")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> ReadOptions:
        """The options in a config dict (e.g. `rankmixer train`'s), then `overrides`.

        Keys that are not option names (`train`, `epochs`, ...) are ignored; missing ones keep
        their defaults. A `None` `hash_columns` / `ignore_columns` means none.

        Example:

        >>> config = {"train": "a.csv", "format": "tsv", "hash_columns": ["C1"], "seed": 0}
        >>> ReadOptions.from_config(config, on_bad_rows="skip")
        ReadOptions(format='tsv', column_names=None, delimiter=None, hash_columns=('C1',), \
ignore_columns=(), on_bad_rows='skip', sequence_delimiter='|', shard_index=0, num_shards=1, \
compression=None, chunk_rows=65536)
        """
        unknown = sorted(set(overrides) - set(cls.fields()))
        if unknown:
            raise TypeError(f"ReadOptions.from_config() got unknown option(s) {unknown}.")
        values = {k: config[k] for k in cls.fields() if k in config}
        return cls(**{**values, **overrides})

    def to_config(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (lists, not tuples); `from_config` reads it back."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    def replace(self, **changes: Any) -> ReadOptions:
        """A copy with `changes` (checked again), e.g. `options.replace(num_shards=1)`.

        The copy counts as given the fields this one was given and the changed ones.
        """
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"ReadOptions.replace() got unknown option(s) {unknown}.")
        return type(self)(**{**{k: getattr(self, k) for k in self._given}, **changes})


def resolve_options(
    options: ReadOptions | None, keywords: Mapping[str, Any], caller: str
) -> ReadOptions:
    """`options` merged with the option `keywords` a reader got (the compatibility path).

    The keywords fill the fields `options` was not given (left at their defaults). A keyword
    that is no option name is a `TypeError` (as Python's own), and so is a field given both
    in `options` and as a keyword, even with the same value.
    """
    names = ReadOptions.fields()
    unknown = [k for k in keywords if k not in names]
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    if options is None:
        return ReadOptions(**keywords)
    if not isinstance(options, ReadOptions):
        raise TypeError(
            f"{caller}(): `options` must be a ReadOptions, got {type(options).__name__} "
            "(ReadOptions.from_config(...) makes one from a dict)."
        )
    both = [k for k in names if k in keywords and k in options._given]
    if both:
        raise TypeError(
            f"{caller}() got {both[0]!r} both in options= and as a keyword argument; give it "
            f"once (options.replace({both[0]}=...) changes a field)."
        )
    return options.replace(**keywords) if keywords else options


def accepts_options(fn: Callable) -> Callable:
    """Let a reader whose signature lists the option fields as keywords take `options=` too.

    The wrapped function is called with the merged fields as keywords (`resolve_options`:
    a field given both ways is a `TypeError`); its other arguments pass through unchanged.
    """
    names = set(ReadOptions.fields())

    @functools.wraps(fn)
    def wrapper(*args, options: ReadOptions | None = None, **kwargs):
        if options is None:
            return fn(*args, **kwargs)
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        merged = resolve_options(options, given, fn.__name__)
        return fn(*args, **kwargs, **{k: getattr(merged, k) for k in names})

    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    extra = inspect.Parameter(
        "options", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="ReadOptions | None"
    )
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    wrapper.__signature__ = signature.replace(parameters=params[:at] + [extra] + params[at:])
    return wrapper

"""Deprecated: the old home of the file readers, split by job (#17); import from the new modules.

Everything public is importable from `keras_rankmixer.data`. Where each name moved:

- `keras_rankmixer.data.options`: `ReadOptions` (the reading options every reader shares).
- `keras_rankmixer.data.schema`: `DataError`, `ReadReport`, `ReadResult`, `HASH_SPACE`,
  `hash_strings`, `adapt_vocabularies` and the row/column converter (`_Converter`,
  `_common`, `make_converter`, `_np_dtype`, `_MISSING_TEXT`).
- `keras_rankmixer.data.sources`: `list_files`, `detect_format`, `read_arrays`,
  `check_files`, the CSV/TSV, Parquet and TFRecord chunk iterators (`_check_example`,
  `_FORMATS`).
- `keras_rankmixer.data.pipeline`: `make_dataset` (the `tf.data` stream), `repeat_epochs`.
- `keras_rankmixer.data.datasets`: `FRAPPE_COLUMNS`, `CRITEO_COLUMNS`, `frappe_features`,
  `criteo_features` (beside the Census schema).

This module only re-exports those names (and the private ones `keras_rankmixer.data.native`
used to read through it), for code written against the old layout, and warns
(`DeprecationWarning`) when imported; it will go. Nothing in the package imports it
(`tests/test_architecture.py`).
"""

# ruff: noqa: F401

import warnings

from keras_rankmixer.data.datasets import (
    CRITEO_COLUMNS,
    FRAPPE_COLUMNS,
    criteo_features,
    frappe_features,
)
from keras_rankmixer.data.options import ReadOptions
from keras_rankmixer.data.pipeline import make_dataset, repeat_epochs
from keras_rankmixer.data.schema import (
    _MISSING_TEXT,
    HASH_SPACE,
    DataError,
    ReadReport,
    ReadResult,
    _common,
    _Converter,
    _np_dtype,
    adapt_vocabularies,
    hash_strings,
)
from keras_rankmixer.data.sources import (
    _FORMATS,
    _check_example,
    check_files,
    detect_format,
    list_files,
    read_arrays,
)

warnings.warn(
    "keras_rankmixer.data.readers is deprecated (#17) and will be removed; "
    "import from keras_rankmixer.data",
    DeprecationWarning,
    stacklevel=2,
)

"""Data: file readers (CSV/TSV, Parquet, TFRecord) and the synthetic click-log generator.

One module per job: `options` (`ReadOptions`, how to read), `schema` (columns -> checked
arrays by the feature specs, `DataError`, `ReadReport`), `sources` (files and formats:
`read_arrays`, `check_files`), `pipeline` (`make_dataset`, the `tf.data` stream), `native`
(the same stream parsed by TF ops), `datasets` (named schemas: Frappe, Criteo, Census) and
`synthetic` (generated clicks).
"""

from keras_rankmixer.data.datasets import (
    CRITEO_COLUMNS,
    FRAPPE_COLUMNS,
    census_features,  # noqa: F401
    criteo_features,
    frappe_features,
    load_census,  # noqa: F401
    prepare_census,  # noqa: F401
)
from keras_rankmixer.data.options import ReadOptions
from keras_rankmixer.data.pipeline import make_dataset, repeat_epochs
from keras_rankmixer.data.schema import (
    HASH_SPACE,
    DataError,
    ReadReport,
    ReadResult,
    adapt_vocabularies,
    hash_strings,
)
from keras_rankmixer.data.sources import check_files, detect_format, list_files, read_arrays
from keras_rankmixer.data.synthetic import SyntheticClickData, make_click_data

__all__ = [
    "CRITEO_COLUMNS",
    "FRAPPE_COLUMNS",
    "HASH_SPACE",
    "DataError",
    "ReadOptions",
    "ReadReport",
    "ReadResult",
    "SyntheticClickData",
    "adapt_vocabularies",
    "check_files",
    "criteo_features",
    "detect_format",
    "frappe_features",
    "hash_strings",
    "list_files",
    "make_click_data",
    "make_dataset",
    "read_arrays",
    "repeat_epochs",
]

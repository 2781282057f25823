"""Data: file readers (CSV/TSV, Parquet, TFRecord) and the synthetic click-log generator."""

from keras_rankmixer.data.datasets import census_features, load_census, prepare_census  # noqa: F401
from keras_rankmixer.data.readers import (
    CRITEO_COLUMNS,
    FRAPPE_COLUMNS,
    HASH_SPACE,
    DataError,
    ReadReport,
    ReadResult,
    adapt_vocabularies,
    criteo_features,
    detect_format,
    frappe_features,
    hash_strings,
    list_files,
    make_dataset,
    read_arrays,
)
from keras_rankmixer.data.synthetic import SyntheticClickData, make_click_data

__all__ = [
    "CRITEO_COLUMNS",
    "FRAPPE_COLUMNS",
    "HASH_SPACE",
    "DataError",
    "ReadReport",
    "ReadResult",
    "SyntheticClickData",
    "adapt_vocabularies",
    "criteo_features",
    "detect_format",
    "frappe_features",
    "hash_strings",
    "list_files",
    "make_click_data",
    "make_dataset",
    "read_arrays",
]

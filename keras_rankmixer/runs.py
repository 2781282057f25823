"""Deprecated: run directories moved to `keras_rankmixer.training` (issue #17).

This module only re-exports the old names; import them from where they live now:

- `keras_rankmixer.training.metrics`: `roc_auc`, `logloss`, `predict_with_labels`,
  `evaluate_exact`;
- `keras_rankmixer.training.callbacks`: `ExactAUC`, `KeepBest`, `HistoryLogger`,
  `training_callbacks`;
- `keras_rankmixer.training.run_dir`: the file names (`CONFIG_FILE`, `FEATURES_FILE`,
  `HISTORY_FILE`, `METRICS_FILE`, `MODEL_FILE`, `PLOT_FILE`, `BACKUP_DIR`,
  `BEST_WEIGHTS_FILE`), `write_json`, `load_history`, `best_epoch`, `plot_history`.

Importing it warns (`DeprecationWarning`); nothing in the package imports it
(`tests/test_architecture.py`).
"""

import warnings

from keras_rankmixer.training.callbacks import (
    ExactAUC,
    HistoryLogger,
    KeepBest,
    training_callbacks,
)
from keras_rankmixer.training.metrics import (
    evaluate_exact,
    logloss,
    predict_with_labels,
    roc_auc,
)
from keras_rankmixer.training.run_dir import (
    BACKUP_DIR,
    BEST_WEIGHTS_FILE,
    CONFIG_FILE,
    FEATURES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOT_FILE,
    best_epoch,
    load_history,
    plot_history,
    write_json,
)

__all__ = [
    "BACKUP_DIR",
    "BEST_WEIGHTS_FILE",
    "CONFIG_FILE",
    "FEATURES_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "PLOT_FILE",
    "ExactAUC",
    "HistoryLogger",
    "KeepBest",
    "best_epoch",
    "evaluate_exact",
    "load_history",
    "logloss",
    "plot_history",
    "predict_with_labels",
    "roc_auc",
    "training_callbacks",
    "write_json",
]

warnings.warn(
    "keras_rankmixer.runs is deprecated (#17) and will be removed; "
    "import from keras_rankmixer.training",
    DeprecationWarning,
    stacklevel=2,
)

"""Training support: compile defaults, exact metrics, callbacks, run directories, the runner.

- `compile`: `compile_for_ranking`, `ranking_compile_arguments` (the one copy of the
  defaults `Ranker.compile()` uses);
- `metrics`: exact `roc_auc`, `logloss`, `evaluate_exact`;
- `callbacks`: `ExactAUC` (exact validation AUC for early stopping), `KeepBest`,
  `HistoryLogger`, `training_callbacks` (with `BackupAndRestore`: resumable runs);
- `run_dir`: the run directory's file names, `write_json`, `load_history`, `best_epoch`,
  `plot_history`, `load_run_model` (model and specs from a `.keras` file or a run dir);
- `moe_monitor`: `MoEMonitor`, `find_moe_layers`, `plot_active_ratio` (SparseMoE, Fig. 4);
- `runner`: `build_and_train` / `evaluate_run`, what `rankmixer train` / `evaluate` call
  (a config dict in, a run directory and a metrics dict out).

Example:

>>> from keras_rankmixer.training import ranking_compile_arguments
>>> sorted(ranking_compile_arguments(["click"])["metrics"])
['click']
"""

from keras_rankmixer.training.callbacks import (
    ExactAUC,
    HistoryLogger,
    KeepBest,
    training_callbacks,
)
from keras_rankmixer.training.compile import (
    DEFAULT_JIT_COMPILE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_OPTIMIZER,
    compile_for_ranking,
    ranking_compile_arguments,
)
from keras_rankmixer.training.metrics import evaluate_exact, logloss, roc_auc
from keras_rankmixer.training.moe_monitor import MoEMonitor, find_moe_layers, plot_active_ratio
from keras_rankmixer.training.run_dir import (
    best_epoch,
    load_history,
    load_run_model,
    plot_history,
    write_json,
)
from keras_rankmixer.training.runner import DEFAULTS, build_and_train, evaluate_run

__all__ = [
    "DEFAULTS",
    "DEFAULT_JIT_COMPILE",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OPTIMIZER",
    "ExactAUC",
    "HistoryLogger",
    "KeepBest",
    "MoEMonitor",
    "best_epoch",
    "build_and_train",
    "compile_for_ranking",
    "evaluate_exact",
    "evaluate_run",
    "find_moe_layers",
    "load_history",
    "load_run_model",
    "logloss",
    "plot_active_ratio",
    "plot_history",
    "ranking_compile_arguments",
    "roc_auc",
    "training_callbacks",
    "write_json",
]

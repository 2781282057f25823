"""Deprecated: the SparseMoE monitor moved to `keras_rankmixer.training.moe_monitor` (#17).

This module only re-exports `find_moe_layers`, `MoEMonitor` and `plot_active_ratio` from
there; import them from `keras_rankmixer.training.moe_monitor` (or `keras_rankmixer.training`).

Importing it warns (`DeprecationWarning`); nothing in the package imports it
(`tests/test_architecture.py`).
"""

import warnings

from keras_rankmixer.training.moe_monitor import MoEMonitor, find_moe_layers, plot_active_ratio

__all__ = ["MoEMonitor", "find_moe_layers", "plot_active_ratio"]

warnings.warn(
    "keras_rankmixer.moe_callbacks is deprecated (#17) and will be removed; "
    "import from keras_rankmixer.training.moe_monitor",
    DeprecationWarning,
    stacklevel=2,
)

"""Deprecated: the SparseMoE monitor moved to `keras_rankmixer.training.moe_monitor` (#17).

This module only re-exports `find_moe_layers`, `MoEMonitor` and `plot_active_ratio` from
there; import them from `keras_rankmixer.training.moe_monitor` (or `keras_rankmixer.training`).
"""

from keras_rankmixer.training.moe_monitor import MoEMonitor, find_moe_layers, plot_active_ratio

__all__ = ["MoEMonitor", "find_moe_layers", "plot_active_ratio"]

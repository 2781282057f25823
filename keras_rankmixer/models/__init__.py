"""Model builders and presets."""

from keras_rankmixer.models.presets import PRESETS, get_preset
from keras_rankmixer.models.rankmixer import add_task_towers, build_from_preset, build_rankmixer

__all__ = ["PRESETS", "add_task_towers", "build_from_preset", "build_rankmixer", "get_preset"]

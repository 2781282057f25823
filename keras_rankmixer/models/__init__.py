"""Backbones (registered by name), the `Ranker` task, presets, and the builder functions.

Importing this package registers every backbone below (`backbone_names()`).
"""

from keras_rankmixer.models.backbone import (
    Backbone,
    backbone_names,
    get_backbone_class,
    model_features,
    register_backbone,
)
from keras_rankmixer.models.dcnv2_backbone import DCNv2Backbone
from keras_rankmixer.models.dnn_backbone import DNNBackbone
from keras_rankmixer.models.presets import (
    BACKBONE_PRESETS,
    PRESETS,
    BackbonePreset,
    get_backbone_preset,
    get_preset,
    preset_names,
)
from keras_rankmixer.models.ranker import Ranker, add_task_towers
from keras_rankmixer.models.rankmixer import build_from_preset, build_rankmixer
from keras_rankmixer.models.rankmixer_backbone import RankMixerBackbone
from keras_rankmixer.models.tokenmixer_large_backbone import (
    TokenMixerLargeBackbone,
    TokenMixerLargeRanker,
)

__all__ = [
    "BACKBONE_PRESETS",
    "PRESETS",
    "Backbone",
    "BackbonePreset",
    "DCNv2Backbone",
    "DNNBackbone",
    "RankMixerBackbone",
    "Ranker",
    "TokenMixerLargeBackbone",
    "TokenMixerLargeRanker",
    "add_task_towers",
    "backbone_names",
    "build_from_preset",
    "build_rankmixer",
    "get_backbone_class",
    "get_backbone_preset",
    "get_preset",
    "model_features",
    "preset_names",
    "register_backbone",
]

"""keras_rankmixer: the RankMixer ranking model (arXiv 2507.15551) for Keras 3.

Public API:

- `keras_rankmixer.layers`: `FeatureTokenizer`, `TokenMixing`, `PerTokenFFN`,
  `RankMixerBlock` (and the feature embedding layers).
- `Backbone` (raw features -> representation; `RankMixerBackbone`, `DNNBackbone`,
  `DCNv2Backbone`, a registry: `register_backbone`, `get_backbone_class`, `backbone_names`)
  and the `Ranker` task (one tower per task, default `compile()`); `model_features`.
- `build_rankmixer`, `build_from_preset`, `PRESETS`, `BACKBONE_PRESETS`: builders and presets.
- `CategoricalFeature`, `SequenceFeature`, `NumericFeature`: feature specs.
- `count_model`, `count_config`: parameter and FLOP counters.
- `export_saved_model`: SavedModel for TF Serving (`keras_rankmixer.export`; clients in
  `keras_rankmixer.serving`).
- `keras_rankmixer.distribution`: data / token-parallel model parallel set-ups, multi-host.
"""

from keras_rankmixer import distribution, layers
from keras_rankmixer.export import export_saved_model
from keras_rankmixer.features import (
    CategoricalFeature,
    FeatureError,
    NumericFeature,
    SequenceFeature,
    validate_features,
)
from keras_rankmixer.flops import count_config, count_model, eq12
from keras_rankmixer.models import (
    BACKBONE_PRESETS,
    PRESETS,
    Backbone,
    DCNv2Backbone,
    DNNBackbone,
    Ranker,
    RankMixerBackbone,
    backbone_names,
    build_from_preset,
    build_rankmixer,
    get_backbone_class,
    get_preset,
    model_features,
    register_backbone,
)

__version__ = "0.1.0"

__all__ = [
    "BACKBONE_PRESETS",
    "PRESETS",
    "Backbone",
    "CategoricalFeature",
    "DCNv2Backbone",
    "DNNBackbone",
    "FeatureError",
    "NumericFeature",
    "RankMixerBackbone",
    "Ranker",
    "SequenceFeature",
    "backbone_names",
    "build_from_preset",
    "build_rankmixer",
    "count_config",
    "count_model",
    "distribution",
    "eq12",
    "export_saved_model",
    "get_backbone_class",
    "get_preset",
    "layers",
    "model_features",
    "register_backbone",
    "validate_features",
]

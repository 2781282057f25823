"""keras_rankmixer: the RankMixer ranking model (arXiv 2507.15551) for Keras 3.

Public API:

- `keras_rankmixer.layers`: `FeatureTokenizer`, `TokenMixing`, `PerTokenFFN`,
  `RankMixerBlock` (and the feature embedding layers).
- `build_rankmixer`, `build_from_preset`, `PRESETS`: the functional model.
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
from keras_rankmixer.models import PRESETS, build_from_preset, build_rankmixer, get_preset

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CategoricalFeature",
    "FeatureError",
    "NumericFeature",
    "SequenceFeature",
    "build_from_preset",
    "build_rankmixer",
    "count_config",
    "count_model",
    "distribution",
    "eq12",
    "export_saved_model",
    "get_preset",
    "layers",
    "validate_features",
]

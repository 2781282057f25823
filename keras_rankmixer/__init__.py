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

`import keras_rankmixer` imports the whole public API, which also registers every layer and
model with Keras' serialization (so `keras.saving.load_model` finds them). The one exception is
the `rankmixer` console script's own process: there the names load on first use, so `--help`
and argument errors do not wait for TensorFlow; the CLI imports everything (`load_all()`)
before it runs a command.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

#: Public name -> the module it comes from (`keras_rankmixer.<module>`).
_EXPORTS: dict[str, str] = {
    "distribution": "",
    "layers": "",
    "export_saved_model": "export",
    "CategoricalFeature": "features",
    "FeatureError": "features",
    "NumericFeature": "features",
    "SequenceFeature": "features",
    "validate_features": "features",
    "count_config": "flops",
    "count_model": "flops",
    "eq12": "flops",
    **{
        name: "models"
        for name in (
            "BACKBONE_PRESETS",
            "PRESETS",
            "Backbone",
            "DCNv2Backbone",
            "DNNBackbone",
            "Ranker",
            "RankMixerBackbone",
            "TokenMixerLargeBackbone",
            "TokenMixerLargeRanker",
            "backbone_names",
            "build_from_preset",
            "build_rankmixer",
            "get_backbone_class",
            "get_preset",
            "model_features",
            "register_backbone",
        )
    },
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """PEP 562: a public name (or submodule) is imported when first used."""
    if name in _EXPORTS:
        module = _EXPORTS[name]
        value = (
            importlib.import_module(f"{__name__}.{name}")
            if not module
            else getattr(importlib.import_module(f"{__name__}.{module}"), name)
        )
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_all() -> None:
    """Import every public name now (and so register every layer and model with Keras)."""
    for name in __all__:
        __getattr__(name)


def _console_script_process() -> bool:
    """Whether this process is `rankmixer ...` or `python -m keras_rankmixer.cli ...`."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("rankmixer", "rankmixer.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == [
        "keras_rankmixer.cli"
    ]


if not _console_script_process():
    load_all()

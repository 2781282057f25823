"""benchmarks/serving.py's model table: the TokenMixer-Large shape variants (issue #20) are the
`tokenmixer_large_small` preset with fewer, wider blocks at the same block FLOPs, built with
their overrides applied (a variant that silently built the preset would time the wrong model)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import serving  # noqa: E402
from keras_rankmixer.models import TokenMixerLargeBackbone  # noqa: E402
from keras_rankmixer.models.presets import get_backbone_preset  # noqa: E402


@pytest.mark.parametrize(
    ("name", "layers", "hidden"),
    [("tokenmixer_large_small_l2", 2, 256), ("tokenmixer_large_small_l1", 1, 512)],
)
def test_tokenmixer_large_shape_variants_keep_the_preset_flops(name, layers, hidden):
    kind, kwargs = serving.MODELS[name]
    preset = get_backbone_preset("tokenmixer_large_small")
    assert kind == "rankmixer" and kwargs["preset"] == preset.name
    config = dict(preset.config, **{k: v for k, v in kwargs.items() if k != "preset"})
    assert config["num_layers"] == layers
    assert round(config["hidden_ratio"] * config["token_dim"]) == hidden
    counts = TokenMixerLargeBackbone.block_counts(**config)
    assert counts["block_flops_per_sample"] == preset.block_flops_per_sample
    assert abs(counts["block_params"] - preset.block_params) / preset.block_params < 0.01


def test_build_applies_the_variant_overrides():
    from benchmarks._common import synthetic_features

    model = serving.build("tokenmixer_large_small_l1@all", synthetic_features())
    assert model.name == "tokenmixer_large_small_l1"
    assert model.backbone.num_layers == 1
    ffn = model.get_layer("block_0").mix_ffn
    assert tuple(ffn.gate_up_kernel.shape) == (16, 192, 2 * 512)

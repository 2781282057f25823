"""Presets are data: their stated counts match the counters, and the README table is the data."""

from __future__ import annotations

import inspect
import os

import keras
import pytest

import keras_rankmixer as kr
from keras_rankmixer.models.presets import (
    BACKBONE_PRESETS,
    BackbonePreset,
    get_backbone_preset,
    preset_names,
    preset_table,
)
from keras_rankmixer.models.ranker import ranker_arguments

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
SPECS = [kr.CategoricalFeature("a", vocabulary_size=10, embedding_dim=8)]


@pytest.mark.parametrize("name", sorted(BACKBONE_PRESETS))
def test_stated_counts_match_the_backbone_counter(name):
    preset = get_backbone_preset(name)
    counts = kr.get_backbone_class(preset.backbone).block_counts(**preset.count_config())
    assert counts == {
        "block_params": preset.block_params,
        "block_flops_per_sample": preset.block_flops_per_sample,
    }
    if preset.paper_params:
        assert abs(preset.block_params - preset.paper_params) / preset.paper_params < 0.10
    if preset.count_tokens is None:  # the config fixes T: the counts are of the config itself
        assert preset.count_config() == dict(preset.config)


def test_counts_of_a_preset_whose_features_decide_t():
    """`tokenmixer_large_base` leaves T to the features (group tokenizer: groups + 1), so its
    counts are stated at the reference T `count_tokens` = 8; `count_tokens` is required exactly
    when `num_tokens` is None."""
    base = get_backbone_preset("tokenmixer_large_base")
    assert base.config["num_tokens"] is None and base.count_tokens == 8
    assert base.count_config() == {**base.config, "num_tokens": 8}
    assert (base.block_params, base.block_flops_per_sample) == (796_928, 1_572_864)
    assert all(
        get_backbone_preset(n).count_tokens is None for n in BACKBONE_PRESETS if n != base.name
    )
    with pytest.raises(ValueError, match="count_tokens"):
        BackbonePreset("x", "tokenmixer_large", {"num_tokens": None}, "d", 1, 1)
    with pytest.raises(ValueError, match="count_tokens"):
        BackbonePreset("x", "rankmixer", {"num_tokens": 4}, "d", 1, 1, count_tokens=4)


def test_rankmixer_counts_are_the_config_counter():
    for name in preset_names("rankmixer"):
        preset = get_backbone_preset(name)
        counts = kr.count_config(**preset.config)
        assert counts["block_params"] == preset.block_params
        assert counts["block_flops_per_sample"] == preset.block_flops_per_sample


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_stated_counts_match_a_built_backbone(name):
    preset = get_backbone_preset(name)
    backbone = kr.Backbone.from_preset(name, features=SPECS)
    last = backbone.get_layer(f"block_{preset.config['num_layers'] - 1}")
    blocks = keras.Model(backbone.get_layer("tokenizer").output, last.output)
    counts = kr.count_model(blocks)
    assert counts["params"] == preset.block_params
    assert counts["flops_per_sample"] == preset.block_flops_per_sample
    # Eq. 12 (4kLTD^2 FLOPs) exactly; its 2kLTD^2 params leave out biases and LayerNorms
    c = preset.config
    eq = kr.eq12(c["num_tokens"], c["token_dim"], c["num_layers"], c["hidden_ratio"])
    assert eq["flops_per_sample"] == preset.block_flops_per_sample
    t, d, layers, h = c["num_tokens"], c["token_dim"], c["num_layers"], last.ffn.ffn_dim
    assert preset.block_params - eq["params"] == layers * (t * (h + d) + 4 * d)


@pytest.mark.parametrize("name", sorted(BACKBONE_PRESETS))
def test_preset_names_a_registered_backbone_and_its_arguments(name):
    preset = get_backbone_preset(name)
    cls = kr.get_backbone_class(preset.backbone)
    params = inspect.signature(cls.__init__).parameters
    assert set(preset.config) <= set(params), set(preset.config) - set(params)
    assert preset.description
    # the task's arguments, also those a subclass passes on to Ranker through **kwargs
    task = ranker_arguments(cls.task_class_of())
    assert set(preset.task) <= task, set(preset.task) - task


def test_the_validated_default_preset():
    """`rankmixer_base` is what validation favoured (#18; its values are checked on the built
    ranker in tests/models/test_ranker.py and tests/test_cli_defaults.py); the paper-shape
    presets (their shapes pinned by their stated counts) keep the plain head."""
    base = get_backbone_preset("rankmixer_base")
    assert base.backbone == "rankmixer" and base.task
    assert "validated default" in base.description
    for name in ("tiny", "small", "rankmixer_100m", "rankmixer_1b"):
        assert not get_backbone_preset(name).task


def test_readme_table_is_the_preset_data():
    with open(README) as f:
        readme = f.read()
    assert preset_table() in readme, (
        "README's preset table differs from the data: paste the output of "
        "`python -m keras_rankmixer.models.presets` into it"
    )
    # and every preset has its row, with the numbers of the data
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    for name, preset in BACKBONE_PRESETS.items():
        (row,) = [r for r in rows if r.startswith(f"| `{name}` |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == preset.backbone
        tokens = preset.config["num_tokens"]
        assert cells[2] == ("groups + 1" if tokens is None else str(tokens))
        assert [int(c) for c in cells[3:5]] == [
            preset.config[k] for k in ("token_dim", "num_layers")
        ]
        if preset.count_tokens is not None:  # the counts at the reference T, said so
            assert cells[6].endswith(f"(T={preset.count_tokens})")
            assert cells[7].endswith(f"(T={preset.count_tokens})")


def test_plain_dict_view_for_existing_callers():
    assert (
        set(kr.PRESETS)
        == set(preset_names("rankmixer"))
        >= {
            "tiny",
            "small",
            "rankmixer_100m",
            "rankmixer_1b",
        }
    )
    for name, config in kr.PRESETS.items():
        assert kr.get_preset(name) == config == dict(BACKBONE_PRESETS[name].config)
    copy = kr.get_preset("tiny")
    copy["num_layers"] = 99
    assert kr.get_preset("tiny")["num_layers"] == 2  # a copy
    with pytest.raises(TypeError):
        BACKBONE_PRESETS["tiny"].config["num_layers"] = 99  # the data is read-only
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; available: \["):
        kr.get_preset("huge")

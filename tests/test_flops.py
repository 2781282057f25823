import pytest

import keras_rankmixer as kr
from keras_rankmixer.layers import RankMixerBlock


def test_block_flops_match_eq12_exactly():
    t, d, k, layers = 4, 16, 3, 2
    import keras

    inp = keras.Input((t, d))
    x = inp
    for _ in range(layers):
        x = RankMixerBlock(hidden_ratio=k)(x)
    stats = kr.count_model(keras.Model(inp, x))
    eq = kr.eq12(t, d, layers, k)
    assert stats["flops_per_sample"] == eq["flops_per_sample"]
    # params: Eq. 12 plus the biases (T*(kD + D)) and 2 LayerNorms (4D) per layer.
    assert stats["params"] == eq["params"] + layers * (t * (k * d + d) + 4 * d)
    assert stats["embedding_params"] == 0


def test_model_counter_agrees_with_config_counter():
    specs = [
        kr.CategoricalFeature("a", vocabulary_size=10, embedding_dim=8),
        kr.NumericFeature("b", embedding_dim=5),
    ]
    model = kr.build_from_preset("tiny", specs, tasks=["x", "y"])
    stats = kr.count_model(model)
    cfg = kr.count_config(**kr.get_preset("tiny"), input_width=13, num_tasks=2)
    assert stats["flops_per_sample"] == cfg["flops_per_sample"]
    numeric_params = 3 * 5  # kernel, bias, missing of the numeric embedding
    assert stats["dense_params"] == cfg["dense_params"] + numeric_params
    assert stats["embedding_params"] == 11 * 8


@pytest.mark.parametrize("preset,paper", [("rankmixer_100m", 107e6), ("rankmixer_1b", 1.1e9)])
def test_large_presets_within_10_percent_of_the_paper(preset, paper):
    cfg = kr.count_config(**kr.get_preset(preset))
    assert abs(cfg["block_params"] - paper) / paper < 0.10

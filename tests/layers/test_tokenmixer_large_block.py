"""TokenMixerLargeBlock against a NumPy reference of mix-and-revert (H = T and H != T), each
ablation switch, small init, round trips, bfloat16 and a jit-compiled fit step.

Kept fast on JAX (every eager op compiles once per shape): tiny shapes shared by all tests
(B=2, T=2, D=4, hidden_ratio=2 unless a test needs otherwise), so compiled ops are reused, and
one reference case per switch with H != T covered by `num_heads=1` (H < T) and 4 (H > T)."""

import keras
import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import (
    assert_config_round_trip,
    assert_round_trips,
    copy_layer,
    jit_fit_layer,
    randomize,
)
from tokenmixer_reference import (
    gelu_ffn_layer,
    layer_norm,
    mix,
    moe_layer,
    revert,
    rms_norm,
    swiglu_layer,
)

from keras_rankmixer.layers import TokenMixerLargeBlock, TokenMixing
from keras_rankmixer.layers.initializers import per_token_glorot_uniform

B, T, D = 2, 2, 4


def reference(block, x):
    """The block's formula in NumPy from its weights; each switch read from the block."""
    eps = block.norm_epsilon

    def ffn(layer, v):
        if block.ffn == "swiglu":
            return swiglu_layer(layer, v)
        if block.ffn == "gelu":
            return gelu_ffn_layer(layer, v)
        return moe_layer(layer, v)

    def norm(layer, v):
        if block.norm == "pre_rms":
            return rms_norm(v, to_numpy(layer.scale), eps)
        return layer_norm(v, to_numpy(layer.gamma), to_numpy(layer.beta), eps)

    def branch(residual, v, layer, norm_layer):
        if block.norm == "pre_rms":
            return residual + ffn(layer, norm(norm_layer, v))
        return norm(norm_layer, residual + ffn(layer, v))

    heads = block.num_heads or x.shape[1]
    h = mix(x, heads)
    h = branch(h, h, block.mix_ffn, block.norm_1)
    x_rev = revert(h, x.shape[1]) if block.use_revert else h
    return branch(x, x_rev, block.revert_ffn, block.norm_2)


def built_block(x, **kwargs):
    block = TokenMixerLargeBlock(**kwargs)
    block.build(x.shape)
    randomize(block)
    return block


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # H = T
        {"num_heads": 1},  # H < T: 1 mixed token of width 8
        {"num_heads": 4},  # H > T: 4 mixed tokens of width 2
        {"use_revert": False},
        {"shared_ffn": True, "num_heads": 1},
        {"ffn": "gelu", "num_heads": 1},
        {"norm": "post_layer_norm", "num_heads": 1},
        {"small_init": False},
        {"ffn": "moe", "moe": {"num_experts": 2, "top_k": 1, "dispatch": "dense"}},
        {"ffn": "moe", "num_heads": 1, "moe": {"num_experts": 2, "top_k": 1}},  # sparse
    ],
)
def test_matches_numpy_reference(kwargs):
    x = random_tokens(B, T, D)
    block = built_block(x, hidden_ratio=2, **kwargs)
    assert_all_close(block(x), reference(block, x), atol=2e-4, rtol=2e-4)


def test_banks_have_the_mixed_and_the_original_layout():
    x = random_tokens(B, T, D)
    block = TokenMixerLargeBlock(num_heads=1, hidden_ratio=2)
    block(x)
    assert tuple(block.mix_ffn.gate_up_kernel.shape) == (1, 8, 32)  # H tokens, width T*D/H
    assert tuple(block.revert_ffn.gate_up_kernel.shape) == (2, 4, 16)  # T tokens, width D
    assert tuple(block.norm_1.scale.shape) == (8,) and tuple(block.norm_2.scale.shape) == (4,)


@pytest.mark.parametrize("heads", [1, 2, 4])  # H < T, H = T, H > T
def test_token_mixing_with_t_heads_reverts_any_h(heads):
    x = random_tokens(B, T, D)
    mixed = TokenMixing(num_heads=heads)(x)
    assert_all_close(mixed, mix(x, heads), atol=0, rtol=0)
    assert_all_close(TokenMixing(num_heads=T)(mixed), x, atol=0, rtol=0)
    assert_all_close(revert(mix(x, heads), T), x, atol=0, rtol=0)  # the reference's own check


def test_revert_matters_when_h_equals_t():
    """With H = T, use_revert=False is a different function (not a no-op of the switch)."""
    x = random_tokens(B, T, D)
    block = built_block(x, hidden_ratio=2)
    ablated = copy_layer(block, x.shape, use_revert=False)
    assert not np.allclose(to_numpy(block(x)), to_numpy(ablated(x)), atol=1e-3)


@pytest.mark.parametrize("ffn", ["swiglu", "gelu", "moe"])
def test_small_init_scales_every_down_projection(ffn):
    def make(small_init):
        block = TokenMixerLargeBlock(
            num_heads=1,
            hidden_ratio=2,
            ffn=ffn,
            moe={"num_experts": 2} if ffn == "moe" else None,
            small_init=small_init,
            down_init_scale=0.01,
            kernel_initializer=per_token_glorot_uniform(seed=11),
        )
        block.build((None, T, D))
        return block

    small, plain = make(True), make(False)
    names = {
        "swiglu": ["down_kernel"],
        "gelu": ["kernel_2"],
        "moe": ["expert_down_kernel", "shared_expert/down_kernel"],
    }[ffn]
    for bank in ("mix_ffn", "revert_ffn"):
        for name in names:
            a, b = (
                next(to_numpy(w) for w in blk.weights if w.path.endswith(f"{bank}/{name}"))
                for blk in (small, plain)
            )
            np.testing.assert_allclose(a, 0.01 * b, rtol=1e-5, atol=1e-9)
            assert np.abs(b).max() > 0.05


def test_small_init_block_starts_near_identity():
    x = random_tokens(B, T, D)
    y = to_numpy(TokenMixerLargeBlock(hidden_ratio=2)(x))
    y_plain = to_numpy(TokenMixerLargeBlock(hidden_ratio=2, small_init=False)(x))
    assert np.abs(y - x).max() < 0.1 * np.abs(y_plain - x).max()


@pytest.mark.parametrize("kwargs", [{}, {"num_heads": 1, "norm": "post_layer_norm"}])
def test_gradients_reach_every_weight(kwargs):
    assert_gradients_reach_all(
        TokenMixerLargeBlock(hidden_ratio=2, bias_initializer="ones", **kwargs),
        random_tokens(B, T, D),
    )


def test_dropout_only_in_training():
    x = random_tokens(B, T, D)
    block = TokenMixerLargeBlock(hidden_ratio=2, dropout=0.5, small_init=False)
    assert_all_close(block(x, training=False), to_numpy(block(x, training=False)))
    assert not np.allclose(to_numpy(block(x, training=True)), to_numpy(block(x, training=False)))


def test_config_and_keras_file_round_trip(tmp_path):
    x = random_tokens(B, T, D)
    kwargs = {
        "num_heads": 1,
        "hidden_ratio": 1.5,
        "dropout": 0.1,
        "ffn": "moe",
        "moe": {"num_experts": 2, "top_k": 1, "capacity_factor": 2.0},
        "down_init_scale": 0.05,
        "norm_epsilon": 1e-5,
        "name": "tml",
    }
    block = TokenMixerLargeBlock(**kwargs)
    clone = assert_round_trips(block, x, tmp_path)
    assert clone.moe == kwargs["moe"] and clone.num_heads == 1
    for flags in ({"use_revert": False, "num_heads": None}, {"ffn": "gelu", "moe": None}):
        assert_config_round_trip(TokenMixerLargeBlock.from_config({**block.get_config(), **flags}))


@pytest.mark.parametrize("ffn", ["swiglu", "moe"])
def test_mixed_bfloat16(ffn):
    moe = {"num_experts": 2} if ffn == "moe" else None
    block = TokenMixerLargeBlock(
        num_heads=1, hidden_ratio=2, ffn=ffn, moe=moe, dtype="mixed_bfloat16"
    )
    y = block(random_tokens(B, T, D), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert block.mix_ffn.dtype_policy.name == "mixed_bfloat16"
    assert block.norm_1.dtype_policy.name == "mixed_bfloat16"
    assert all(w.dtype == "float32" for w in block.trainable_weights)
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(y, "float32"))))


def test_jit_compiled_fit_step():
    """One jit fit (2 steps) covering both former cases at once: H != T and the sparse MoE."""
    moe = {"num_experts": 2, "top_k": 1}  # top_k=1: a third of the XLA compile time of k=2
    block = TokenMixerLargeBlock(hidden_ratio=1, num_heads=1, ffn="moe", moe=moe)
    jit_fit_layer(block, random_tokens(2 * B, T, D))
    assert block.mix_ffn.dispatch == "sparse"


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": 2.0}, "num_heads"),
        ({"hidden_ratio": 0}, "hidden_ratio"),
        ({"dropout": 1.0}, "dropout"),
        ({"ffn": "relu"}, "ffn"),
        ({"norm": "layer_norm"}, "norm"),
        ({"down_init_scale": 0}, "down_init_scale"),
        ({"norm_epsilon": 0}, "norm_epsilon"),
        ({"ffn": "moe", "moe": ["num_experts", 2]}, "moe"),
        ({"moe": {"num_experts": 2}}, "moe"),
        ({"ffn": "moe", "shared_ffn": True, "moe": {"num_experts": 2}}, "shared_ffn"),
        ({"ffn": "moe", "moe": {"num_experts": 2, "top_k": 3}}, "top_k"),
        ({"ffn": "moe"}, "moe"),
        ({"ffn": "moe", "moe": {"num_experts": 2, "bogus": 1}}, "moe"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TokenMixerLargeBlock(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="num_heads"):
        TokenMixerLargeBlock(num_heads=1, use_revert=False)(random_tokens(1, T, D))
    with pytest.raises(ValueError, match="divisible"):
        TokenMixerLargeBlock(num_heads=3)(random_tokens(1, T, D))
    with pytest.raises(ValueError, match="TokenMixerLargeBlock"):
        TokenMixerLargeBlock()(np.ones((2, 8), "float32"))

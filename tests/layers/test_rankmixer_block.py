import keras
import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import clone_with_weights

from keras_rankmixer.layers import PerTokenFFN, RankMixerBlock, TokenMixing


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_equals_post_ln_composition_of_its_parts():
    """X' = LN(PFFN(S) + S), S = LN(TokenMixing(X) + X), computed from the block's own weights."""
    x = random_tokens(3, 4, 8)
    block = RankMixerBlock(hidden_ratio=2)
    y = to_numpy(block(x))
    # Perturb LayerNorm parameters so the check sees them.
    for norm in (block.norm_1, block.norm_2):
        norm.gamma.assign(np.random.default_rng(0).uniform(0.5, 1.5, 8).astype("float32"))
        norm.beta.assign(np.random.default_rng(1).normal(size=8).astype("float32"))
    y = to_numpy(block(x))
    eps = block.layer_norm_epsilon
    mixed = to_numpy(TokenMixing()(x))
    s = layer_norm(mixed + x, to_numpy(block.norm_1.gamma), to_numpy(block.norm_1.beta), eps)
    v = to_numpy(block.ffn(s))
    expected = layer_norm(v + s, to_numpy(block.norm_2.gamma), to_numpy(block.norm_2.beta), eps)
    assert_all_close(y, expected, atol=1e-4)


@pytest.mark.parametrize(
    "flags",
    [
        {"use_token_mixing": False},
        {"use_residual": False},
        {"use_layer_norm": False},
        {"use_residual": False, "use_layer_norm": False},
    ],
)
def test_ablation_switches(flags):
    x = random_tokens(2, 4, 8)
    block = RankMixerBlock(hidden_ratio=2, **flags)
    y = to_numpy(block(x))
    eps = block.layer_norm_epsilon

    def sub(inp, out, norm):
        if flags.get("use_residual", True):
            out = out + inp
        if flags.get("use_layer_norm", True):
            out = layer_norm(out, to_numpy(norm.gamma), to_numpy(norm.beta), eps)
        return out

    mixed = to_numpy(TokenMixing()(x)) if flags.get("use_token_mixing", True) else x
    s = sub(x, mixed, block.norm_1)
    expected = sub(s, to_numpy(block.ffn(s)), block.norm_2)
    assert_all_close(y, expected, atol=1e-4)


def test_shared_ffn_ablation():
    block = RankMixerBlock(hidden_ratio=2, shared_ffn=True)
    block(random_tokens(2, 4, 8))
    assert tuple(block.ffn.kernel_1.shape) == (8, 16)


def test_custom_ffn_seam_and_serialization(tmp_path):
    ffn = PerTokenFFN(hidden_dim=3, name="custom")
    block = RankMixerBlock(ffn=ffn)
    x = random_tokens(2, 4, 8)
    y = block(x)
    assert block.ffn is ffn and tuple(ffn.kernel_1.shape) == (4, 8, 3)
    clone = clone_with_weights(block, x)
    assert clone.ffn.hidden_dim == 3
    assert_all_close(clone(x), y)


def test_gradients_reach_every_weight():
    assert_gradients_reach_all(RankMixerBlock(hidden_ratio=1), random_tokens(2, 4, 8))


def test_dropout_only_in_training():
    x = random_tokens(4, 4, 8)
    block = RankMixerBlock(hidden_ratio=1, dropout=0.5)
    assert_all_close(block(x, training=False), block(x, training=False))
    assert not np.allclose(to_numpy(block(x, training=True)), to_numpy(block(x, training=False)))


def test_mixed_precision_policy_reaches_sublayers():
    block = RankMixerBlock(hidden_ratio=1, dtype="mixed_bfloat16")
    y = block(random_tokens(2, 4, 8))
    assert block.ffn.dtype_policy.name == "mixed_bfloat16"
    assert block.ffn.kernel_1.dtype == "float32"
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"hidden_ratio": 0}, "hidden_ratio"),
        ({"ffn": "not a layer"}, "ffn"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankMixerBlock(**kwargs)


def test_heads_must_equal_tokens():
    with pytest.raises(ValueError, match="num_heads"):
        RankMixerBlock(num_heads=2)(random_tokens(1, 4, 8))


@pytest.mark.parametrize(
    "levers", ["ffn", "ffn,residual", "layer_norm", "residual", "all"], ids=lambda s: s
)
def test_serving_spellings_equal_the_block(levers):
    """The `cpu_serving_graph` spellings (fused FFN epilogues, residual in the FFN, the
    FusedBatchNorm LayerNorm) give the block's output with its own weights, eagerly and in a
    function traced with a dynamic batch (the SavedModel case); off TensorFlow a no-op."""
    import keras

    from keras_rankmixer.layers.per_token_ffn import cpu_serving_graph

    x = random_tokens(6, 4, 8)
    block = RankMixerBlock(hidden_ratio=2, bias_initializer="random_normal", dropout=0.5)
    block(x)
    rng = np.random.default_rng(1)
    for norm in (block.norm_1, block.norm_2):
        norm.gamma.assign(rng.normal(1.0, 0.3, norm.gamma.shape).astype("float32"))
        norm.beta.assign(rng.normal(0.0, 0.3, norm.beta.shape).astype("float32"))
    expected = to_numpy(block(x, training=False))
    with cpu_serving_graph(levers):
        assert_all_close(to_numpy(block(x, training=False)), expected, atol=1e-5)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            fn = tf.function(
                lambda v: block(v, training=False),
                input_signature=[tf.TensorSpec((None, 4, 8), tf.float32)],
            )
            assert_all_close(fn(tf.constant(x)).numpy(), expected, atol=1e-5)

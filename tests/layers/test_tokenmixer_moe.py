"""TokenMixerMoE: top-k softmax routing, alpha, shared expert against NumPy; sparse dispatch
== dense (outputs and gradients) with enough capacity; overflow; round trips; jit fit.

Tiny shapes shared by the tests (eager JAX compiles each op once per shape)."""

import math

import keras
import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import assert_round_trips, copy_layer, gradients, jit_fit_layer, randomize
from tokenmixer_reference import moe_experts, moe_gates, moe_layer, swiglu_layer, top_k_softmax

from keras_rankmixer.layers import TokenMixerMoE
from keras_rankmixer.layers.sparse_moe import expert_capacity, top_k_softmax_gates

B, T, D, E = 4, 2, 4, 4
H = 2 * D // E  # expert_dim at hidden_ratio=2: n D / E


def built(x=None, **kwargs):
    kwargs.setdefault("hidden_ratio", 2)
    layer = TokenMixerMoE(E, **kwargs)
    layer.build((None, T, D))
    randomize(layer, scale=0.5)
    return layer


def test_weights_and_shapes():
    layer = built(top_k=2)
    assert layer.expert_dim == H == 2  # n D / E = 2 * 4 / 4
    assert tuple(layer.expert_gate_up_kernel.shape) == (T, E, D, 2 * H)
    assert tuple(layer.expert_gate_up_bias.shape) == (T, E, 2 * H)
    assert tuple(layer.expert_down_kernel.shape) == (T, E, H, D)
    assert tuple(layer.expert_down_bias.shape) == (T, E, D)
    assert tuple(layer.router.router_kernel.shape) == (T, D, E)
    assert tuple(layer.shared_expert.gate_up_kernel.shape) == (T, D, 2 * H)
    assert layer.gate_scale_value == E / 2
    assert all(w.shape[0] == T for w in layer.trainable_weights)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 2, "dispatch": "dense"},
        {"top_k": 2},  # sparse, capacity 2 * 2/4 * B = B: nothing dropped
        {"top_k": 1, "capacity_factor": 4.0},
        {"top_k": 3, "gate_scale": 0.5, "use_shared_expert": False},
        {"top_k": 2, "expert_hidden_dim": 3, "shared_hidden_dim": 5, "use_bias": False},
    ],
)
def test_matches_numpy(kwargs):
    layer = built(**kwargs)
    x = random_tokens(B, T, D, seed=2)
    _, gates = moe_gates(layer, x)
    assert ((gates > 0).sum(-1) == layer.top_k).all()  # exactly k experts per token
    assert_all_close(layer(x), moe_layer(layer, x), atol=1e-4, rtol=1e-4)
    assert_all_close(layer(x, training=True), moe_layer(layer, x), atol=1e-4, rtol=1e-4)
    assert float(to_numpy(layer.dropped_ratio)) == 0.0


def test_gate_scale_default_is_e_over_k_and_shared_expert_always_on():
    layer = built(top_k=2, dispatch="dense")
    x = random_tokens(B, T, D, seed=4)
    _, gates = moe_gates(layer, x)
    routed = np.einsum("bte,bted->btd", gates, moe_experts(layer, x))
    no_shared = TokenMixerMoE.from_config({**layer.get_config(), "use_shared_expert": False})
    no_shared.build((None, T, D))
    source = {w.path.split("/", 1)[1]: w for w in layer.weights}
    for w in no_shared.weights:  # the same router and routed experts, no shared expert
        w.assign(source[w.path.split("/", 1)[1]])
    assert_all_close(no_shared(x), 2.0 * routed, atol=1e-4, rtol=1e-4)  # alpha = E / k = 2
    shared = to_numpy(layer(x)) - to_numpy(no_shared(x))
    assert_all_close(shared, swiglu_layer(layer.shared_expert, x), atol=1e-4, rtol=1e-4)


def test_sparse_training_gradients_equal_dense():
    dense = built(top_k=2, dispatch="dense", bias_initializer="ones")
    sparse = copy_layer(dense, (None, T, D), dispatch="sparse")
    x = random_tokens(B, T, D, seed=5)
    weight = np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")
    g_dense, g_sparse = gradients(dense, x, weight), gradients(sparse, x, weight)
    assert len(g_dense) == len(sparse.trainable_variables)
    for (path, a), b in zip(g_dense.items(), g_sparse.values(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=path)
        assert np.any(a != 0), path  # router, experts and shared expert all learn


def test_overflow_drops_the_smallest_gates_and_is_reported():
    layer = built(top_k=2, capacity_factor=0.5)
    x = random_tokens(16, T, D, seed=6)
    cap = layer.capacity(16)
    assert cap == math.ceil(0.5 * 2 / 4 * 16) == 4
    _, gates = moe_gates(layer, x)
    load = (gates > 0).sum(0)  # (T, E)
    expected_dropped = np.maximum(load - cap, 0).sum()
    assert expected_dropped > 0  # the case really overflows
    kept = np.zeros_like(gates)
    for t in range(T):
        for e in range(E):
            top = np.argsort(-gates[:, t, e], kind="stable")[:cap]
            kept[top, t, e] = gates[top, t, e]
    assert_all_close(layer(x), moe_layer(layer, x, gates=kept), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        float(to_numpy(layer.dropped_ratio)), expected_dropped / (gates > 0).sum(), rtol=1e-6
    )


def test_load_balance_loss_matches_numpy_and_is_float32():
    layer = built(top_k=2, load_balance_weight=0.1, dtype="mixed_bfloat16")
    x = random_tokens(B, T, D, seed=7)
    layer(x, training=False)
    assert not layer.losses  # inference adds nothing
    layer(x, training=True)
    (loss,) = layer.losses
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    ref = copy_layer(layer, (None, T, D), dtype="float32")
    logits, gates = moe_gates(ref, x)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    fraction = (gates > 0).mean(0) / 2
    expected = 0.1 * E * np.mean(np.sum(fraction * probs.mean(0), -1))
    np.testing.assert_allclose(float(to_numpy(loss)), expected, rtol=0.05)  # bf16 router


def test_shared_helpers_of_sparse_moe():
    logits = random_tokens(B, T, 5, seed=8)
    assert_all_close(top_k_softmax_gates(logits, 2), top_k_softmax(logits, 2), atol=1e-6)
    assert expert_capacity(100, 0.25) == 25 and expert_capacity(3, 5.0) == 3
    assert expert_capacity(10, 0.01) == 1


def test_gradients_reach_every_weight():
    layer = TokenMixerMoE(E, top_k=2, hidden_ratio=2, bias_initializer="ones")
    assert_gradients_reach_all(layer, random_tokens(B, T, D))


def test_flops_per_sample():
    layer = built(top_k=2)
    assert layer.flops_per_sample() == 6 * T * 2 * D * H + 2 * T * D * E
    assert layer.shared_expert.flops_per_sample() == 6 * T * D * H


def test_config_and_keras_file_round_trip(tmp_path):
    layer = TokenMixerMoE(
        E, top_k=1, hidden_ratio=1.5, gate_scale=3.0, down_init_scale=0.01, name="moe"
    )
    assert assert_round_trips(layer, random_tokens(B, T, D, seed=9), tmp_path).gate_scale == 3.0


def test_mixed_bfloat16_sparse():
    layer = TokenMixerMoE(E, top_k=2, hidden_ratio=2, dtype="mixed_bfloat16")
    y = layer(random_tokens(B, T, D), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert layer.router.compute_dtype == "bfloat16" and layer.expert_down_kernel.dtype == "float32"
    assert layer.dropped_ratio.dtype == "float32"
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(y, "float32"))))


def test_jit_compiled_fit_step_is_sparse():
    # 2 experts, top-1: the smallest sparse layer (XLA compile time grows with E and k)
    moe = TokenMixerMoE(2, top_k=1, hidden_ratio=1, load_balance_weight=0.01, name="moe")
    jit_fit_layer(moe, random_tokens(2 * B, T, D))
    assert moe.dispatch == "sparse"


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_experts": 0}, "num_experts"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 5}, "top_k"),
        ({"hidden_ratio": 0}, "hidden_ratio"),
        ({"expert_hidden_dim": 1.5}, "expert_hidden_dim"),
        ({"shared_hidden_dim": 0}, "shared_hidden_dim"),
        ({"gate_scale": 0}, "gate_scale"),
        ({"capacity_factor": -1}, "capacity_factor"),
        ({"dispatch": "fast"}, "dispatch"),
        ({"load_balance_weight": -0.1}, "load_balance_weight"),
        ({"down_init_scale": 0}, "down_init_scale"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TokenMixerMoE(**{"num_experts": E, **kwargs})

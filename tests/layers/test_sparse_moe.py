"""SparseMoE: numbers against NumPy, DTSI gradient properties (a)-(d), sparse == dense,
overflow counting, the adaptive lambda inside a jitted `fit`. Runs on TF and JAX, except the
tests marked `tensorflow_only` (sparse inference in an exported SavedModel, `build_rankmixer`
with an MoE end to end, the lambda update under a MirroredStrategy, the docstring examples),
which skip on other backends."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops
from layer_checks import copy_layer, gradients, randomize

from keras_rankmixer.layers import SparseMoE
from keras_rankmixer.training.moe_monitor import MoEMonitor, find_moe_layers, plot_active_ratio

B, T, D, E = 6, 3, 8, 4
BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow only")


def _x(seed=0, batch=B):
    return np.random.default_rng(seed).normal(size=(batch, T, D)).astype("float32")


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _layer(routing="relu", x=None, **kw):
    kw.setdefault("hidden_ratio", 0.5)
    layer = SparseMoE(E, routing=routing, **kw)
    layer.build((None, T, D))
    randomize(layer, seed=1, scale=0.5)  # non-zero biases so every term is exercised
    return layer


def _copy(src, **kw):
    return copy_layer(src, (None, T, D), **kw)


_erf = np.vectorize(math.erf)


def _gelu(v):
    return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))


def _gelu_tanh(v):
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def _reference(layer, x, gates, act=_gelu):
    """NumPy: out[b,t] = sum_j gates[b,t,j] * (gelu(x W1 + b1) W2 + b2)."""
    return np.einsum("bte,bted->btd", gates, _reference_experts(layer, x, act))


def _reference_experts(layer, x, act=_gelu):
    """NumPy: every expert's output `(B, T, E, D)`."""
    w1, b1, w2, b2 = (
        _np(getattr(layer, n))
        for n in ("expert_kernel_1", "expert_bias_1", "expert_kernel_2", "expert_bias_2")
    )
    return np.einsum("bteh,tehd->bted", act(np.einsum("btd,tedh->bteh", x, w1) + b1), w2) + b2


def _router_logits(router, x):
    return np.einsum("btd,tde->bte", x, _np(router.router_kernel)) + _np(router.router_bias)


# ---------------------------------------------------------------- contract and numbers


@pytest.mark.parametrize("routing", ["relu", "dtsi", "topk"])
def test_weight_naming_contract(routing):
    layer = _layer(routing)
    per_token = [w for w in layer.weights if w.name.startswith(("expert_", "router_"))]
    assert {w.name for w in per_token} >= {
        "expert_kernel_1",
        "expert_bias_1",
        "expert_kernel_2",
        "expert_bias_2",
        "router_kernel",
        "router_bias",
    }
    for w in per_token:
        assert w.shape[0] == T, (w.path, w.shape)
    assert tuple(layer.expert_kernel_1.shape) == (T, E, D, 4)
    assert tuple(layer.expert_kernel_2.shape) == (T, E, 4, D)
    assert not layer.l1_lambda.trainable and layer.l1_lambda.name == "l1_lambda"
    trainable = {w.path for w in layer.trainable_weights}
    assert all(w.name.startswith(("expert_", "router_")) for w in layer.trainable_weights)
    if routing == "dtsi":
        assert tuple(layer.train_router.router_kernel.shape) == (T, D, E)
        assert tuple(layer.infer_router.router_bias.shape) == (T, E)
        assert len(trainable) == 8
    else:
        assert len(trainable) == 6


@pytest.mark.parametrize("routing", ["relu", "dtsi"])
def test_relu_forward_matches_numpy(routing):
    layer = _layer(routing, inference_mode="dense")
    x = _x()
    router = layer.infer_router if routing == "dtsi" else layer.router
    gates = np.maximum(_router_logits(router, x), 0)
    assert 0 < (gates > 0).mean() < 1  # some gates on, some off
    expected = _reference(layer, x, gates)
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_np(layer(x, training=True)), expected, rtol=1e-4, atol=1e-4)


def test_gelu_tanh_experts_match_numpy_and_round_trip():
    layer = _layer("relu", inference_mode="dense", activation="gelu_tanh")
    x = _x()
    gates = np.maximum(_router_logits(layer.router, x), 0)
    np.testing.assert_allclose(
        _np(layer(x)), _reference(layer, x, gates, act=_gelu_tanh), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(_np(_copy(layer)(x)), _np(layer(x)), rtol=1e-6)


def test_topk_gates_and_load_balance_loss_match_numpy():
    layer = _layer("topk", top_k=2, load_balance_weight=0.5, inference_mode="dense")
    x = _x()
    logits = _router_logits(layer.router, x)
    top = np.argsort(-logits, axis=-1)[..., :2]
    mask = np.zeros_like(logits)
    np.put_along_axis(mask, top, 1.0, axis=-1)
    z = np.where(mask > 0, logits, -np.inf)
    gates = np.exp(z - z.max(-1, keepdims=True))
    gates = gates / gates.sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(layer(x)), _reference(layer, x, gates), rtol=1e-4, atol=1e-4)
    layer(x, training=True)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    balance = E * np.mean(np.sum(mask.mean(0) / 2 * probs.mean(0), axis=-1))
    (loss,) = layer.losses
    np.testing.assert_allclose(_np(loss), 0.5 * balance, rtol=1e-5)
    assert _np(layer.active_ratio) == pytest.approx(0.5)


@pytest.mark.parametrize("balance", [False, True])
def test_l1_loss_value_and_lambda_rule(balance):
    layer = _layer("relu", target_active_ratio=0.5, l1_init=0.01, balance_l1=balance)
    x = _x()
    gates = np.maximum(_router_logits(layer.router, x), 0)
    layer(x, training=True)
    weights = (gates > 0).mean(0) / 0.5 if balance else 1.0
    expected = 0.01 * np.mean(np.sum(gates * weights, axis=(1, 2)))
    (loss,) = layer.losses
    assert _np(loss).dtype == np.float32
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5)
    measured = (gates > 0).mean()
    np.testing.assert_allclose(_np(layer.active_ratio), measured, rtol=1e-6)
    np.testing.assert_allclose(_np(layer.router_active_ratio), (gates > 0).mean((0, 2)), rtol=1e-6)
    # ReMoE rule: sparsity (1 - measured) below target 0.5 -> multiply, else divide
    factor = 1.2 if 1 - measured < 0.5 else 1 / 1.2
    np.testing.assert_allclose(_np(layer.l1_lambda), 0.01 * factor, rtol=1e-6)
    # force every gate on (sparsity 0 < 0.5): lambda grows; every gate off: lambda shrinks
    bias = layer.router.router_bias
    bias.assign(np.full(bias.shape, 100.0, "float32"))
    before = _np(layer.l1_lambda)
    layer(x, training=True)
    np.testing.assert_allclose(_np(layer.l1_lambda), before * 1.2, rtol=1e-6)
    assert _np(layer.active_ratio) == 1.0
    bias.assign(np.full(bias.shape, -100.0, "float32"))
    layer(x, training=True)
    layer(x, training=True)
    np.testing.assert_allclose(_np(layer.l1_lambda), before * 1.2 / 1.44, rtol=1e-6)
    assert _np(layer.active_ratio) == 0.0


@pytest.mark.parametrize("routing", ["relu", "dtsi"])
def test_gate_gradient_leak_revives_switched_off_gates(routing):
    """A gate at 0 gets `leak * <e_j, dL/dy>` from the task loss; forward and L1 unchanged."""
    # the load controller off: training calls would move the gates' offsets between the calls
    layer = _layer(
        routing, inference_mode="dense", gate_gradient_leak=0.0, l1_init=0.05, load_bias_rate=0.0
    )
    leaky = _copy(layer, gate_gradient_leak=0.1)
    router = "infer_router" if routing == "dtsi" else "router"
    x, w = _x(), np.random.default_rng(7).normal(size=(B, T, D)).astype("float32")
    np.testing.assert_array_equal(_np(leaky(x, training=True)), _np(layer(x, training=True)))
    g0 = gradients(layer, x, w, training=True, with_losses=False)
    g1 = gradients(leaky, x, w, training=True, with_losses=False)
    # NumPy: d sum(y * w) / d logit_btj = <e_tj(x_b), w_bt> (times 1 on, times leak off)
    logits = _router_logits(getattr(layer, router), x)
    on = (logits > 0).astype("float32")
    assert 0 < on.mean() < 1
    dgate = np.einsum("bted,btd->bte", _reference_experts(layer, x), w)
    for leak, grads in ((0.0, g0), (0.1, g1)):
        dlogit = dgate * (on + leak * (1 - on))
        np.testing.assert_allclose(
            grads[f"{router}/router_bias"], dlogit.sum(0), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            grads[f"{router}/router_kernel"],
            np.einsum("btd,bte->tde", x, dlogit),
            rtol=1e-4,
            atol=1e-5,
        )
    # experts of switched-off gates still get nothing from the leak (their gate value is 0)
    for name in ("expert_kernel_1", "expert_kernel_2"):
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-5, atol=1e-7)
    # the L1 term's gradient is unchanged: it only ever pushes active gates down
    l0 = gradients(layer, x, np.zeros_like(w), training=True)
    l1 = gradients(leaky, x, np.zeros_like(w), training=True)
    np.testing.assert_allclose(l1[f"{router}/router_bias"], l0[f"{router}/router_bias"], rtol=1e-6)
    assert np.abs(l0[f"{router}/router_bias"]).max() > 0


@pytest.mark.parametrize("routing", ["relu", "dtsi"])
def test_load_controller_offsets_match_numpy_and_revive_a_dead_expert(routing):
    layer = _layer(routing, target_active_ratio=0.5, load_bias_rate=0.25, inference_mode="dense")
    router = layer.infer_router if routing == "dtsi" else layer.router
    bias = _np(router.router_bias)
    bias[0, 0] = -50.0  # token 0, expert 0: off for every sample
    router.router_bias.assign(bias)
    x = _x(2, batch=64)
    logits = _router_logits(router, x)
    layer(x, training=True)
    load = (logits > 0).mean(0)  # (T, E)
    assert load[0, 0] == 0.0
    np.testing.assert_allclose(_np(layer.gate_offset), 0.25 * np.sign(0.5 - load), atol=1e-7)
    # the served gates include the offset
    gates = np.maximum(logits + _np(layer.gate_offset), 0)
    np.testing.assert_allclose(_np(layer(x)), _reference(layer, x, gates), rtol=1e-4, atol=1e-4)
    # a dead expert comes back: its offset rises 0.25 a step until it is active for some
    # samples (no optimizer involved), whereas without the controller it stays dead
    frozen = _copy(layer, load_bias_rate=0.0)

    def per_expert(lyr, shift=0.0):
        offset = _np(lyr.gate_offset) + shift
        return (np.maximum(_router_logits(router, x) + offset, 0) > 0).mean(0)

    for _ in range(300):
        layer(x, training=True)
        frozen(x, training=True)
    assert per_expert(frozen)[0, 0] == 0.0
    assert per_expert(layer)[0, 0] > 0
    # every expert's offset now sits where its load crosses the target, to within the
    # +-rate oscillation of the sign steps: two steps down is at or below it, two up at or above
    assert (per_expert(layer, -0.5) <= 0.5).all() and (per_expert(layer, 0.5) >= 0.5).all()


def test_load_controller_is_off_for_topk_and_at_rate_zero():
    x = _x()
    for layer in (_layer("topk"), _layer("relu", load_bias_rate=0.0)):
        layer(x, training=True)
        assert np.abs(_np(layer.gate_offset)).max() == 0.0


# ---------------------------------------------------------------- DTSI (a)-(d)


def test_dtsi_a_infer_router_gets_task_gradient_only_from_task_loss():
    # leak 0: the gradient is exactly the served model's (the leak is tested on its own below)
    layer = _layer("dtsi", inference_mode="dense", gate_gradient_leak=0.0)
    layer.l1_lambda.assign(0.0)
    x, w = _x(), np.random.default_rng(5).normal(size=(B, T, D)).astype("float32")
    train = gradients(layer, x, w, training=True)
    infer = gradients(layer, x, w, training=False)
    g = train["infer_router/router_kernel"]
    assert np.abs(g).max() > 1e-3  # task gradient reaches h_infer with L1 weight zero
    # and it is the exact gradient of the served (inference) model
    np.testing.assert_allclose(g, infer["infer_router/router_kernel"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        train["infer_router/router_bias"], infer["infer_router/router_bias"], rtol=1e-4, atol=1e-6
    )
    # h_train also learns from the task loss
    assert np.abs(train["train_router/router_kernel"]).max() > 1e-3
    assert np.abs(infer["train_router/router_kernel"]).max() == 0.0


def test_dtsi_b_inactive_expert_still_trained_dense():
    layer = _layer("dtsi", dense_grad_weight=1.0)
    bias = _np(layer.infer_router.router_bias)
    bias[0, 0], bias[0, 1] = -100.0, 100.0  # token 0: expert 0 always off, expert 1 always on
    layer.infer_router.router_bias.assign(bias)
    relu = SparseMoE.from_config({**layer.get_config(), "routing": "relu", "name": "relu"})
    relu.build((None, T, D))
    relu.router.set_weights(layer.infer_router.get_weights())
    for name in ("expert_kernel_1", "expert_bias_1", "expert_kernel_2", "expert_bias_2"):
        getattr(relu, name).assign(getattr(layer, name))
    weak = _copy(layer, dense_grad_weight=0.1)  # before training calls move `gate_offset`
    x, w = _x(), np.random.default_rng(6).normal(size=(B, T, D)).astype("float32")
    gd = gradients(layer, x, w, training=True, with_losses=False)
    gr = gradients(relu, x, w, training=True, with_losses=False)
    for name in ("expert_kernel_1", "expert_kernel_2", "expert_bias_2"):
        # plain ReLU routing: an expert whose gate is zero gets no gradient at all ...
        assert np.abs(gr[name][0, 0]).max() == 0.0
        # ... DTSI trains it anyway (dense training through h_train)
        assert np.abs(gd[name][0, 0]).max() > 1e-4
        # an always-active expert gets exactly the served model's gradient
        np.testing.assert_allclose(gd[name][0, 1], gr[name][0, 1], rtol=1e-4, atol=1e-6)
    # dense_grad_weight scales only the switched-off experts' (surrogate) gradient
    gw = gradients(weak, x, w, training=True, with_losses=False)
    np.testing.assert_allclose(
        gw["expert_kernel_1"][0, 0], 0.1 * gd["expert_kernel_1"][0, 0], rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(gw["expert_kernel_2"][0, 1], gd["expert_kernel_2"][0, 1], rtol=1e-5)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_dtsi_c_inference_ignores_train_router(mode):
    layer = _layer("dtsi", inference_mode=mode, capacity_factor=4.0)
    x = _x()
    before = _np(layer(x))
    rng = np.random.default_rng(9)
    for v in layer.train_router.weights:
        v.assign(rng.normal(scale=3.0, size=v.shape).astype("float32"))
    np.testing.assert_array_equal(_np(layer(x)), before)
    # whereas the training forward's gradient path does use it (sanity: the change was real)
    assert not np.allclose(_np(layer.train_router.router_kernel), 0)


def test_dtsi_d_train_and_inference_forward_agree():
    layer = _layer("dtsi", inference_mode="dense")
    x = _x(3, batch=32)
    # inference first: a training call moves `gate_offset` (the load controller) after its
    # forward, so both forwards below see the same weights and state
    served = _np(layer(x, training=False))
    diff = np.abs(_np(layer(x, training=True)) - served).max()
    # measured 0.0 on TF and JAX (CPU): the straight-through terms are exactly z - z
    assert diff <= 1e-6, diff
    assert np.abs(_np(layer.gate_offset)).max() > 0  # ... and the training call did move it


# ---------------------------------------------------------------- sparse inference


@pytest.mark.parametrize("routing", ["relu", "dtsi", "topk"])
def test_sparse_equals_dense_with_enough_capacity(routing):
    kw = {"target_active_ratio": 0.25}
    dense = _layer(routing, inference_mode="dense", **kw)
    # capacity_factor * 0.25 >= 1: every non-zero gate fits
    sparse = _copy(dense, inference_mode="sparse", capacity_factor=4.0)
    x = _x(2, batch=16)
    np.testing.assert_allclose(_np(sparse(x)), _np(dense(x)), rtol=1e-5, atol=1e-5)
    stats = sparse.inference_stats()
    assert stats["overflow"] == 0 and stats["gates"] == 16 * T * E
    assert stats["active"] > 0


def test_sparse_overflow_is_counted_and_drops_smallest_gates():
    layer = _layer("relu", target_active_ratio=0.25, capacity_factor=1.0)
    x = _x(4, batch=16)
    gates = np.maximum(_router_logits(layer.router, x), 0)
    cap = math.ceil(0.25 * 16)
    assert layer.capacity(16) == cap
    load = (gates > 0).sum(0)  # (T, E)
    expected_overflow = np.maximum(load - cap, 0).sum()
    assert expected_overflow > 0  # the test case really overflows
    kept = np.zeros_like(gates)  # NumPy: keep the `cap` largest gates of each expert
    for t in range(T):
        for e in range(E):
            top = np.argsort(-gates[:, t, e])[:cap]
            kept[top, t, e] = gates[top, t, e]
    np.testing.assert_allclose(_np(layer(x)), _reference(layer, x, kept), rtol=1e-4, atol=1e-4)
    stats = layer.inference_stats()
    assert stats["overflow"] == expected_overflow
    assert stats["active"] == (gates > 0).sum()
    layer.reset_inference_stats()
    assert layer.inference_stats()["gates"] == 0


def test_capacity_and_flops():
    layer = _layer("relu", target_active_ratio=0.25, capacity_factor=1.25)
    assert layer.capacity(4096) == 1280
    assert layer.capacity(1) == 1
    assert layer.flops_per_sample() == 4 * T * E * 0.25 * D * 4 + 2 * T * D * E
    topk = _layer("topk", top_k=1, capacity_factor=2.0)
    assert topk.budget_ratio() == 0.25 and topk.capacity(10) == 5


# ---------------------------------------------------------------- training and config


def test_lambda_updates_inside_jitted_fit_and_reaches_history():
    inputs = keras.Input((T, D))
    moe = SparseMoE(E, hidden_ratio=0.5, target_active_ratio=0.25, name="moe")
    out = keras.layers.Dense(1)(keras.layers.Flatten()(moe(inputs)))
    model = keras.Model(inputs, out)
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=True)
    monitor = MoEMonitor(every_n_batches=1, per_token=True)
    history = model.fit(
        _x(0, batch=32), np.ones((32, 1)), batch_size=8, epochs=2, verbose=0, callbacks=[monitor]
    )
    lam = _np(moe.l1_lambda)
    steps = math.log(lam / 1e-8) / math.log(1.2)
    assert lam != pytest.approx(1e-8)
    assert abs(steps - round(steps)) < 1e-3 and abs(round(steps)) <= 8  # one update per step
    assert len(monitor.records) == 8
    assert history.history["moe/moe/l1_lambda"][-1] == pytest.approx(float(lam))
    ratios = history.history["moe/moe/active_ratio"]
    assert len(ratios) == 2 and all(0 <= r <= 1 for r in ratios)
    assert "moe/moe/token_2/active_ratio" in history.history
    np.testing.assert_allclose(
        monitor.records[-1]["moe"]["router_active_ratio"], _np(moe.router_active_ratio)
    )


def test_plot_active_ratio(tmp_path):
    records = [
        {"step": s, "m": {"router_active_ratio": [0.5 / s, 0.3], "l1_lambda": 1.0}}
        for s in (1, 2, 3)
    ]
    path = plot_active_ratio(records, str(tmp_path / "fig4.png"), target=0.25)
    assert (tmp_path / "fig4.png").stat().st_size > 1000 and path.endswith("fig4.png")
    with pytest.raises(ValueError, match="records"):
        plot_active_ratio([], str(tmp_path / "x.png"))


def test_mixed_precision_losses_are_float32():
    layer = SparseMoE(E, hidden_ratio=0.5, routing="dtsi", dtype="mixed_bfloat16")
    y = layer(_x(), training=True)
    dtype = keras.backend.standardize_dtype
    assert dtype(y.dtype) == "bfloat16"
    assert all(dtype(loss.dtype) == "float32" for loss in layer.losses) and layer.losses
    assert layer.l1_lambda.dtype == "float32"
    assert layer.infer_router.compute_dtype == "bfloat16"


def test_config_and_keras_file_round_trip(tmp_path):
    inputs = keras.Input((T, D))
    moe = SparseMoE(E, hidden_ratio=0.5, routing="dtsi", capacity_factor=3.0, name="moe")
    model = keras.Model(inputs, moe(inputs))
    model.get_layer("moe").l1_lambda.assign(0.125)
    config = moe.get_config()
    assert SparseMoE.from_config(config).get_config() == config
    path = str(tmp_path / "moe.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _x(7)
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-6)
    assert _np(loaded.get_layer("moe").l1_lambda) == pytest.approx(0.125)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_experts": 0}, "num_experts"),
        ({"target_active_ratio": 1.5}, "target_active_ratio"),
        ({"routing": "softmax"}, "routing"),
        ({"l1_multiplier": 1.0}, "l1_multiplier"),
        ({"top_k": 9}, "top_k"),
        ({"inference_mode": "fast"}, "inference_mode"),
        ({"capacity_factor": 0}, "capacity_factor"),
        ({"gate_gradient_leak": -0.1}, "gate_gradient_leak"),
        ({"load_bias_rate": -1}, "load_bias_rate"),
        ({"load_balance_weight": -1}, "load_balance_weight"),
        ({"activation": "bogus"}, "`activation` must be"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = {"num_experts": E, **kwargs}
    with pytest.raises(ValueError, match=name):
        SparseMoE(**args)


# ---------------------------------------------------------------- TensorFlow only


def _moe_model(mode, capacity_factor):
    inputs = keras.Input((T, D), name="tokens")
    moe = SparseMoE(
        E,
        hidden_ratio=0.5,
        target_active_ratio=0.25,
        routing="dtsi",
        inference_mode=mode,
        capacity_factor=capacity_factor,
        name="moe",
    )
    return keras.Model(inputs, moe(inputs))


@tensorflow_only  # SavedModel export
def test_sparse_inference_in_exported_savedmodel(tmp_path):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    keras.utils.set_random_seed(0)
    dense = _moe_model("dense", 1.0)
    sparse = _moe_model("sparse", 4.0)  # 4 * 0.25 >= 1: no overflow possible
    sparse.set_weights(dense.get_weights())
    path = str(tmp_path / "moe")
    sparse.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    for batch in (1, 5, 33):  # the batch axis stays dynamic in the SavedModel
        x = np.random.default_rng(batch).normal(size=(batch, T, D)).astype("float32")
        out = served.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(out, dense(x).numpy(), rtol=1e-5, atol=1e-5)
    # the served graph really is the sparse one: top_k over the batch, scatter back
    proto = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    graph_ops = {node.op for node in graph.node}
    for function in graph.library.function:
        graph_ops |= {node.op for node in function.node_def}
    assert {"TopKV2", "ScatterNd"} <= graph_ops


@tensorflow_only
def test_build_rankmixer_with_moe():
    from keras_rankmixer import CategoricalFeature, build_rankmixer

    keras.utils.set_random_seed(1)
    features = [
        CategoricalFeature("user", vocabulary_size=20, embedding_dim=8, group="user"),
        CategoricalFeature("item", vocabulary_size=30, embedding_dim=8, group="item"),
    ]
    moe = {"num_experts": 4, "hidden_ratio": 0.5, "routing": "dtsi", "capacity_factor": 4.0}
    model = build_rankmixer(features, num_tokens=2, token_dim=8, num_layers=2, moe=moe)
    layers = find_moe_layers(model)
    assert sorted(layers) == ["block_0/moe", "block_1/moe"]
    assert all(layer.routing == "dtsi" for layer in layers.values())
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, 20, 64), "item": rng.integers(0, 30, 64)}
    # training call: one L1 term per block reaches the model's losses, lambdas update
    model(x, training=True)
    assert len(model.losses) == 2
    assert all(float(layer.l1_lambda.numpy()) != 1e-8 for layer in layers.values())
    sparse = model(x, training=False)["click"].numpy()
    for layer in layers.values():
        layer.inference_mode = "dense"
    dense = model(x, training=False)["click"].numpy()
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ffn_factory"):
        build_rankmixer(features, 2, 8, 1, moe=moe, ffn_factory=lambda i: keras.layers.Identity())


_MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json, keras, numpy as np
from keras_rankmixer.layers import SparseMoE
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    inputs = keras.Input((3, 8))
    moe = SparseMoE(4, hidden_ratio=0.5, target_active_ratio=0.25, name="moe")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(moe(inputs))))
    model.compile("sgd", "mse", jit_compile=False)
x = np.random.default_rng(0).random((32, 3, 8)).astype("float32")
model.fit(x, np.ones((32, 1)), batch_size=8, epochs=1, verbose=0)
model.predict(x[:16], batch_size=16, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "lambda": float(moe.l1_lambda.numpy()),
                  "active": float(moe.active_ratio.numpy()),
                  "gates": moe.inference_stats()["gates"]}))
"""


@tensorflow_only  # tf.distribute
def test_lambda_update_under_mirrored_strategy(tmp_path):
    """Two CPU replicas: the in-call lambda update runs in replica context (fit, no XLA)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # 4 steps (32 rows / global batch 8): one x1.2 or /1.2 update per step, never per replica
    steps = np.log(result["lambda"] / 1e-8) / np.log(1.2)
    assert abs(steps - round(steps)) < 1e-3 and abs(round(steps)) <= 4 and round(steps) % 2 == 0
    assert 0.0 <= result["active"] <= 1.0
    assert result["gates"] == 16 * 3 * 4  # inference counters summed over replicas exactly once

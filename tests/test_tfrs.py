"""Tests of `keras_rankmixer.tfrs.wrap`: Keras 3 layers inside a `tfrs.Model` (tf_keras).

TFRS needs `TF_USE_LEGACY_KERAS=1`, which changes what `tf.keras` is for the whole process, so
the checks run in ONE child process (this file run as a script with the variable set; one
TensorFlow import keeps the suite fast). The child writes the measured numbers to a JSON file;
each test below asserts on its part. Only the import-error check runs in the pytest process.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

# Look the packages up without importing them: importing TFRS here would fail (or, with the
# variable set, switch this whole pytest process to legacy Keras).
if not all(importlib.util.find_spec(m) for m in ("tensorflow_recommenders", "tf_keras")):
    pytest.skip(
        "needs the tfrs extra: pip install 'keras-rankmixer[tfrs]'", allow_module_level=True
    )

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- the child process
def _child(out_path: str) -> None:  # noqa: C901 - one script, many small checks
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    from keras import ops

    from keras_rankmixer import build_rankmixer
    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.layers import RankMixerBlock
    from keras_rankmixer.tfrs import KerasLayer, wrap

    results: dict = {"tf_keras_is_legacy": tf.keras.__name__.startswith("tf_keras")}

    class GatedLinear(keras.layers.Layer):
        """Toy Keras 3 layer: `y = x @ kernel`, an L1 `add_loss` scaled by a non-trainable
        `lam` that doubles every training call (like SparseMoE's adaptive lambda), a
        non-trainable step counter, and a record of the last `training` flag."""

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 1), initializer="ones")
            self.lam = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(0.01), trainable=False
            )
            self.steps = self.add_weight(shape=(), initializer="zeros", trainable=False)
            self.seen_training = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(-1.0), trainable=False
            )

        def call(self, x, training=None):
            y = ops.matmul(x, self.kernel)
            self.add_loss(self.lam * ops.sum(ops.abs(self.kernel)))
            self.seen_training.assign(1.0 if training else 0.0)
            if training:
                self.steps.assign_add(1.0)
                self.lam.assign(self.lam * 2.0)
            return y

    # 1. An unbuilt Keras 3 layer builds from the first input and computes exactly as unwrapped.
    keras.utils.set_random_seed(1)
    block = RankMixerBlock(hidden_ratio=2)
    wrapped_block = wrap(block)
    x = np.random.default_rng(0).normal(size=(3, 4, 8)).astype("float32")
    y_wrapped = wrapped_block(tf.constant(x)).numpy()
    # Checkpoint keys do not depend on the auto-generated layer name (rank_mixer_block_N).
    block_path = tf.train.Checkpoint(layer=wrapped_block).write(
        os.path.join(os.path.dirname(out_path), "block", "ckpt")
    )
    other_block = wrap(RankMixerBlock(hidden_ratio=2))
    other_block(tf.constant(x))
    tf.train.Checkpoint(layer=other_block).read(block_path).assert_consumed()
    results["block"] = {
        "restored_diff": float(np.abs(other_block(tf.constant(x)).numpy() - y_wrapped).max()),
        "names_differ": block.name != other_block.keras_layer.name,
        "is_tf_keras_layer": isinstance(wrapped_block, tf.keras.layers.Layer),
        "num_trainable": len(wrapped_block.trainable_weights),
        "num_keras3_trainable": len(block.trainable_variables),
        "all_tf_variables": all(isinstance(v, tf.Variable) for v in wrapped_block.weights),
        "max_abs_diff": float(np.abs(y_wrapped - keras.ops.convert_to_numpy(block(x))).max()),
    }

    # 2. training flag, add_loss forwarding, non-trainable state updated inside fit's graph.
    gate = GatedLinear()
    wrapped_gate = wrap(gate)
    xs = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    wrapped_gate(xs, training=True)
    after_true = float(gate.seen_training.numpy())
    wrapped_gate(xs, training=False)
    after_false = float(gate.seen_training.numpy())
    steps_before = float(gate.steps.numpy())

    class RegOnly(tfrs.Model):
        """Task loss 0: only the forwarded add_loss term drives training."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def compute_loss(self, inputs, training=False):
            return 0.0 * tf.reduce_sum(self.layer(inputs, training=training))

    reg_model = RegOnly(wrapped_gate)
    reg_model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    lam_before = float(gate.lam.numpy())
    kernel_l1_before = float(np.abs(gate.kernel.numpy()).sum())
    history = reg_model.fit(
        tf.data.Dataset.from_tensor_slices(xs).batch(16), epochs=2, verbose=0
    ).history
    # Expected regularization loss of one evaluation step, from the Keras 3 layer directly.
    gate(xs, training=False)
    expected_reg = float(sum(keras.ops.convert_to_numpy(v) for v in gate.losses))
    eval_reg = reg_model.evaluate(xs, batch_size=64, return_dict=True, verbose=0)
    results["gate"] = {
        "seen_training_after_true": after_true,
        "seen_training_after_false": after_false,
        "steps_in_fit": float(gate.steps.numpy()) - steps_before,
        "lam_ratio": float(gate.lam.numpy()) / lam_before,
        "history_reg_loss": history["regularization_loss"],
        "eval_reg_loss": float(eval_reg["regularization_loss"]),
        "expected_reg_loss": expected_reg,
        "kernel_l1_before": kernel_l1_before,
        "kernel_l1_after": float(np.abs(gate.kernel.numpy()).sum()),
        "num_trainable": len(reg_model.trainable_variables),
        "num_non_trainable": len(reg_model.non_trainable_variables),
    }

    # mixed_bfloat16 add_loss terms arrive as float32.
    bf16_gate = wrap(GatedLinear(dtype="mixed_bfloat16"))
    bf16_gate(xs)
    results["bf16_loss_dtypes"] = [loss.dtype.name for loss in bf16_gate.losses]

    # 3. The RankMixer backbone inside a tfrs.Model with tfrs.tasks.Ranking.
    data = make_click_data(
        1024, seed=0, num_categorical=4, num_numeric=1, max_vocab=100, embedding_dim=8
    )
    config = dict(num_tokens=4, token_dim=16, num_layers=1, hidden_ratio=2, tower_units=(16,))

    class Ranker(tfrs.Model):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = wrap(backbone)
            self.task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(),
                # tfrs reports `loss` of the last batch only; this is the mean over the data.
                metrics=[tf.keras.metrics.BinaryCrossentropy(name="logloss")],
            )

        def call(self, features, training=False):
            return self.backbone(features, training=training)["click"]

        def compute_loss(self, inputs, training=False):
            features, labels = inputs
            return self.task(labels=labels, predictions=self(features, training=training))

    keras.utils.set_random_seed(0)
    backbone = build_rankmixer(data.specs, **config)
    model = Ranker(backbone)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    labels = data.labels["click"].astype("float32")[:, None]
    ds = tf.data.Dataset.from_tensor_slices((data.features, labels)).batch(128)
    loss_before = model.evaluate(ds, return_dict=True, verbose=0)["logloss"]
    model.fit(ds, epochs=3, verbose=0)
    loss_after = model.evaluate(ds, return_dict=True, verbose=0)["logloss"]
    x0 = {k: v[:200] for k, v in data.features.items()}
    p_model = model(x0).numpy()

    # Same weights in a fresh, unwrapped Keras 3 model give the same predictions.
    keras.utils.set_random_seed(7)
    fresh = build_rankmixer(data.specs, **config)
    p_fresh_init = keras.ops.convert_to_numpy(fresh(x0)["click"])
    fresh.set_weights([v.numpy() for v in backbone.weights])
    p_fresh = keras.ops.convert_to_numpy(fresh(x0)["click"])
    keras3_trained = {v.path for v in backbone.trainable_variables}
    wrapped_ids = {id(v) for v in model.trainable_variables}

    # save_weights / load_weights into a freshly initialised tfrs.Model.
    ckpt_dir = os.path.join(os.path.dirname(out_path), "ckpt")
    model.save_weights(os.path.join(ckpt_dir, "weights"))
    keras.utils.set_random_seed(8)
    other = Ranker(build_rankmixer(data.specs, **config))
    other(x0)
    p_other_init = other(x0).numpy()
    other.load_weights(os.path.join(ckpt_dir, "weights")).expect_partial()
    p_other = other(x0).numpy()

    # tf.train.Checkpoint round trip, every saved object matched.
    path = tf.train.Checkpoint(model=model).write(os.path.join(ckpt_dir, "ckpt"))
    keras.utils.set_random_seed(9)
    third = Ranker(build_rankmixer(data.specs, **config))
    third(x0)
    status = tf.train.Checkpoint(model=third).read(path)
    status.assert_existing_objects_matched().expect_partial()  # no optimizer slots in `third`
    p_third = third(x0).numpy()
    saved_keys = [name for name, _ in tf.train.list_variables(path)]
    results["ranker"] = {
        "loss_before": float(loss_before),
        "loss_after": float(loss_after),
        "num_trainable": len(model.trainable_variables),
        "num_keras3_trainable": len(keras3_trained),
        "all_keras3_vars_trained": all(
            id(v.value) in wrapped_ids for v in backbone.trainable_variables
        ),
        "fresh_init_diff": float(np.abs(p_fresh_init - p_model).max()),
        "fresh_diff": float(np.abs(p_fresh - p_model).max()),
        "load_init_diff": float(np.abs(p_other_init - p_model).max()),
        "load_diff": float(np.abs(p_other - p_model).max()),
        "weights_equal_after_load": all(
            np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(model.weights, other.weights, strict=True)
        ),
        "checkpoint_diff": float(np.abs(p_third - p_model).max()),
        "checkpoint_backbone_keys": sum("backbone/k3_" in k for k in saved_keys),
        "wrapper_type_ok": isinstance(model.backbone, KerasLayer),
    }
    # 4. SparseMoE (relu routing, adaptive lambda) inside the tfrs.Model: its L1 term is in
    # regularization_loss and its non-trainable lambda / active ratio update inside fit.
    keras.utils.set_random_seed(0)
    moe_backbone = build_rankmixer(
        data.specs,
        **config,
        moe={"num_experts": 4, "hidden_ratio": 0.5, "target_active_ratio": 0.5, "l1_init": 1e-3},
    )
    moe_layer = moe_backbone.get_layer("block_0").ffn
    moe_model = Ranker(moe_backbone)
    moe_model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    lam0 = float(moe_layer.l1_lambda.numpy())
    moe_history = moe_model.fit(ds, epochs=1, verbose=0).history
    results["moe"] = {
        "layer": type(moe_layer).__name__,
        "reg_loss": moe_history["regularization_loss"],
        "lambda_steps": float(np.log(moe_layer.l1_lambda.numpy() / lam0) / np.log(1.2)),
        "active_ratio": float(moe_layer.active_ratio.numpy()),
        "num_steps": int(np.ceil(len(labels) / 128)),
        "non_trainable_exposed": sorted(
            v.name.split(":")[0].split("/")[-1] for v in moe_model.non_trainable_variables
        ),
    }
    with open(out_path, "w") as f:
        json.dump(results, f)


# --------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def child(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("tfrs") / "results.json"
    env = dict(os.environ)
    env.update(TF_USE_LEGACY_KERAS="1", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    with open(out) as f:
        return json.load(f)


def test_import_without_legacy_keras_names_the_variable(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    sys.modules.pop("keras_rankmixer.tfrs", None)
    with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS=1"):
        importlib.import_module("keras_rankmixer.tfrs")
    assert "keras_rankmixer.tfrs" not in sys.modules


def test_child_runs_on_legacy_keras(child):
    assert child["tf_keras_is_legacy"]


def test_wrapped_layer_builds_and_matches_unwrapped(child):
    block = child["block"]
    assert block["is_tf_keras_layer"] and block["all_tf_variables"]
    assert block["num_trainable"] == block["num_keras3_trainable"] == 8
    assert block["max_abs_diff"] < 1e-6
    assert block["names_differ"] and block["restored_diff"] == 0.0


def test_training_flag_is_forwarded(child):
    gate = child["gate"]
    assert gate["seen_training_after_true"] == 1.0
    assert gate["seen_training_after_false"] == 0.0


def test_non_trainable_state_updates_in_graph_mode(child):
    gate = child["gate"]
    # 64 rows / batch 16 = 4 steps per epoch, 2 epochs; lam doubles every step.
    assert gate["steps_in_fit"] == 8.0
    assert gate["lam_ratio"] == pytest.approx(2.0**8)
    assert gate["num_trainable"] == 1 and gate["num_non_trainable"] == 3


def test_add_loss_reaches_regularization_loss_and_gradient(child):
    gate = child["gate"]
    assert all(v > 0 for v in gate["history_reg_loss"])
    assert gate["eval_reg_loss"] == pytest.approx(gate["expected_reg_loss"], rel=1e-6)
    # The task loss is 0, so only the forwarded L1 term can have shrunk the kernel.
    assert gate["kernel_l1_after"] < gate["kernel_l1_before"] - 0.1


def test_mixed_precision_losses_are_float32(child):
    assert child["bf16_loss_dtypes"] == ["float32"]


def test_fit_lowers_the_loss(child):
    ranker = child["ranker"]
    assert ranker["all_keras3_vars_trained"]
    assert ranker["num_trainable"] == ranker["num_keras3_trainable"]
    assert ranker["loss_after"] < 0.95 * ranker["loss_before"]


def test_predictions_match_unwrapped_model_with_same_weights(child):
    ranker = child["ranker"]
    assert ranker["fresh_init_diff"] > 1e-3  # different weights give different predictions
    assert ranker["fresh_diff"] < 1e-6


def test_save_weights_and_checkpoint_restore_exactly(child):
    ranker = child["ranker"]
    assert ranker["load_init_diff"] > 1e-3
    assert ranker["weights_equal_after_load"]
    assert ranker["load_diff"] == 0.0
    assert ranker["checkpoint_diff"] == 0.0
    assert ranker["checkpoint_backbone_keys"] == ranker["num_trainable"]
    assert ranker["wrapper_type_ok"]


def test_sparse_moe_regularizer_and_lambda_inside_tfrs(child):
    moe = child["moe"]
    assert moe["layer"] == "SparseMoE"
    assert moe["reg_loss"][0] > 0  # the SparseMoE L1 term reaches tfrs' regularization_loss
    # lambda moved by one factor of 1.2 per training step (x1.2 or /1.2), in graph mode.
    steps = moe["lambda_steps"]
    assert steps == pytest.approx(round(steps), abs=1e-3) and round(steps) != 0
    assert abs(round(steps)) <= moe["num_steps"] and (round(steps) - moe["num_steps"]) % 2 == 0
    assert 0 < moe["active_ratio"] <= 1
    assert "l1_lambda" in moe["non_trainable_exposed"]


if __name__ == "__main__":
    _child(sys.argv[1])

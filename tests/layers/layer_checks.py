"""Set-ups and checks shared by the layer tests: random weights, gradients by weight path,
copies, config and `.keras` round trips, a jit-compiled fit step, token independence.

Each layer's test file runs these on its own layer, so a check that every layer must pass
is written once.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import BACKEND, assert_all_close, config_round_trip, keras_file_round_trip, to_numpy


def randomize(layer, seed=0, scale=0.3):
    """Give every weight (biases and norm scales included) random values, so all terms count."""
    rng = np.random.default_rng(seed)
    for w in layer.trainable_weights:
        values = rng.normal(scale=scale, size=w.shape)
        if "scale" in w.name or "gamma" in w.name:
            values = 1.0 + values
        w.assign(values.astype("float32"))


def gradients(layer, x, weight, training=True, with_losses=True):
    """Gradients of `sum(layer(x) * weight)` (+ the layer's losses) for every trainable weight.

    Keyed by the weight's path inside the layer (without the layer's own name, so two copies
    of a layer can be compared), on TF and JAX.
    """
    variables = layer.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=training) * weight)
            if with_losses and layer.losses:
                loss = loss + tf.add_n(layer.losses)
        grads = tape.gradient(loss, variables)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def f(trainable):
            y, _, losses = layer.stateless_call(
                trainable, non_trainable, x, training=training, return_losses=True
            )
            loss = jnp.sum(y * weight)
            return loss + (sum(losses) if with_losses and losses else 0.0)

        grads = jax.grad(f)([v.value for v in variables])
    else:
        pytest.skip(f"no gradient helper for backend {BACKEND}")
    return {
        v.path.split("/", 1)[1]: np.zeros(v.shape) if g is None else to_numpy(g)
        for v, g in zip(variables, grads, strict=True)
    }


def copy_layer(src, input_shape, **overrides):
    """A layer of `src`'s class from its config with `overrides`, built, with `src`'s weights."""
    dst = src.__class__.from_config({**src.get_config(), **overrides})
    dst.build(input_shape)
    dst.set_weights(src.get_weights())
    return dst


def clone_with_weights(layer, x):
    """`layer` through a full serialize/deserialize of its config, built for `x`, its weights set."""
    clone = config_round_trip(layer)
    if not clone.built:
        clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    return clone


def assert_config_round_trip(layer):
    """A full serialize/deserialize keeps `layer`'s config; returns the clone."""
    clone = config_round_trip(layer)
    assert clone.get_config() == layer.get_config()
    return clone


def _inputs_like(x):
    if isinstance(x, list):
        return [keras.Input(v.shape[1:]) for v in x]
    return keras.Input(x.shape[1:])


def assert_round_trips(layer, x, tmp_path, atol=1e-5, readout=None):
    """`layer` with random weights keeps its config through a serialize/deserialize, and a
    saved `.keras` of `Input -> layer (-> readout)` gives the same outputs on `x`.

    Returns the config clone, for the caller's own checks of its attributes.
    """
    inputs = _inputs_like(x)
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs if readout is None else readout(outputs))
    randomize(layer)
    clone = assert_config_round_trip(layer)
    loaded = keras_file_round_trip(model, tmp_path)
    assert_all_close(loaded(x), to_numpy(model(x)), atol=atol)
    return clone


def jit_fit_changes_weights(model, x, y, steps=2):
    """Compile with `jit_compile=True`, fit `steps` batches; assert finite loss and moved weights."""
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    batch = len(y) // steps
    history = model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), loss
    after = [to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))
    return loss


def jit_fit_layer(layer, x, readout=None):
    """`jit_fit_changes_weights` of `Input -> layer -> readout (Flatten) -> Dense(1)` on `x`,
    target 1."""
    inputs = _inputs_like(x)
    tokens = layer(inputs)
    readout = keras.layers.Flatten() if readout is None else readout
    model = keras.Model(inputs, keras.layers.Dense(1)(readout(tokens)))
    batch = len(x[0]) if isinstance(x, list) else len(x)
    return jit_fit_changes_weights(model, x, np.ones((batch, 1), "float32"))


def assert_tokens_independent(layer, x, token):
    """Changing token `token` of the input changes that token's output and no other."""
    y1 = to_numpy(layer(x))
    x2 = x.copy()
    x2[:, token] += 1.0
    y2 = to_numpy(layer(x2))
    assert not np.allclose(y1[:, token], y2[:, token])
    np.testing.assert_allclose(np.delete(y1, token, 1), np.delete(y2, token, 1), atol=1e-6)

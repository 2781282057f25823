"""Small helpers shared by the tests (numbers, round trips)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A Python without Keras, for the export / bad-request / CLI tests: the serving benchmark's
# own helper (it times SavedModels there), one copy for both.
from benchmarks.serving import keras_free_python as keras_free_python  # noqa: E402

BACKEND = keras.backend.backend()

#: The columns and feature specs of the CLI fault suites' small CSV files
#: (tests/test_bad_input.py, tests/test_reader_switch.py): ids, string ids, a sequence and a
#: numeric feature.
COLUMNS = "label,user,city,hist,price"
FEATURES = [
    {"kind": "categorical", "name": "user", "vocabulary_size": 20, "embedding_dim": 4},
    {"kind": "categorical", "name": "city", "vocabulary": ["a", "b"], "dtype": "string"},
    {"kind": "sequence", "name": "hist", "vocabulary_size": 30, "max_length": 5},
    {"kind": "numeric", "name": "price", "embedding_dim": 4, "group": "item"},
]


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_all_close(actual, expected, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected), atol=atol, rtol=rtol)


def config_round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    """`from_config(get_config())` through a full serialize/deserialize."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


def keras_file_round_trip(model: keras.Model, tmp_path) -> keras.Model:
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    return keras.saving.load_model(path)


def random_tokens(batch: int = 3, tokens: int = 4, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, tokens, dim)).astype("float32")


def assert_gradients_reach_all(layer_or_model, inputs) -> None:
    """Every trainable weight gets a non-zero gradient of sum(output^2) (TF and JAX)."""
    if not layer_or_model.built:
        layer_or_model(inputs)
    weights = layer_or_model.trainable_variables
    assert weights, "nothing to check: no trainable weights"

    def loss_of(outputs):
        outs = keras.tree.flatten(outputs)
        return sum(keras.ops.sum(keras.ops.square(o)) for o in outs)

    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_of(layer_or_model(inputs, training=True))
        grads = tape.gradient(loss, weights)
    elif BACKEND == "jax":
        import jax

        values = [v.value for v in weights]

        def f(vals):
            mapping = list(zip(weights, vals, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_of(layer_or_model(inputs, training=True))

        grads = jax.grad(f)(values)
    else:  # pragma: no cover
        raise NotImplementedError(BACKEND)
    for w, g in zip(weights, grads, strict=True):
        assert g is not None, f"no gradient reaches {w.path}"
        assert np.any(to_numpy(g) != 0), f"zero gradient at {w.path}"


def xla_flags(*extra: str) -> str:
    """This process's XLA_FLAGS (the root conftest's test optimisation level) less any device
    count, plus `extra`: for a subprocess that sets its own device count (or keeps one)."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return " ".join([*kept, *extra])


def run_json_script(argv: list[str], env: dict, cwd: str | None = None, timeout: int = 300) -> dict:
    """Run a subprocess that prints one JSON line last; assert it exits 0 and return the JSON."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_specs() -> list:
    """Four features of every kind in two groups: the specs of the model tests."""
    import keras_rankmixer as kr

    return [
        kr.CategoricalFeature("user", vocabulary_size=50, embedding_dim=8, group="user"),
        kr.SequenceFeature(
            "history", vocabulary_size=30, max_length=3, embedding_dim=8, group="user"
        ),
        kr.CategoricalFeature("item", vocabulary=[5, 7, 9], embedding_dim=8, group="item"),
        kr.NumericFeature("price", mean=1.0, std=2.0, embedding_dim=6, group="item"),
    ]


def model_batch(n: int = 6, seed: int = 0) -> dict:
    """A raw batch for `model_specs()`, with missing and out-of-vocabulary values."""
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(-1, 60, n),
        "history": rng.integers(-1, 35, (n, 3)),
        "item": rng.choice([5, 7, 8, 9], n),
        "price": rng.normal(size=n).astype("float32"),
    }

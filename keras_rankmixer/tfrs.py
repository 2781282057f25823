"""Use keras_rankmixer (Keras 3) layers and models inside TensorFlow Recommenders (tf_keras).

TensorFlow Recommenders 0.7.7 is written for Keras 2: it imports only with
`TF_USE_LEGACY_KERAS=1` (then `tf.keras` is the `tf_keras` package), and a `tfrs.Model` trains
with a tf_keras optimizer. A Keras 3 layer dropped into such a model is invisible to tf_keras:
its variables are Keras 3 `Variable` objects that the legacy optimizer cannot update, its
`add_loss` terms never reach `model.losses`, and `save_weights` does not see it.

`wrap(layer)` returns a tf_keras layer (a `KerasLayer`) that bridges the two:

- it calls the Keras 3 layer (or functional model) on the same inputs and forwards the
  `training` flag;
- it exposes the Keras 3 variables' underlying `tf.Variable`s (`v.value` for every variable)
  as its own `trainable_weights` / `non_trainable_weights`, so the tf_keras optimizer
  updates the very variables the Keras 3 layer reads;
- after each call it re-adds the Keras 3 layer's `losses` (its `add_loss` terms, e.g. the
  `SparseMoE` gate L1, and weight regularizers) with tf_keras `add_loss`, cast to float32, so
  they appear in `tfrs.Model`'s `regularization_loss` and in the gradient;
- non-trainable state that the Keras 3 layer assigns during `call` (the adaptive lambda of
  `SparseMoE`, dropout seeds) updates in graph mode, because the assignment goes to the same
  `tf.Variable`;
- the variables are tracked by name (their Keras 3 path), so `tf.train.Checkpoint` and
  `model.save_weights` of the surrounding `tfrs.Model` save and restore them exactly.

Import this module only with `TF_USE_LEGACY_KERAS=1` set **before** TensorFlow is imported;
otherwise the import raises an `ImportError` saying so. Install with
`pip install "keras-rankmixer[tfrs]"`.

Example (run with `TF_USE_LEGACY_KERAS=1`):

```python
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs
from keras_rankmixer import build_rankmixer
from keras_rankmixer.tfrs import wrap

backbone = build_rankmixer(specs, num_tokens=4, token_dim=32, num_layers=2)


class Ranker(tfrs.Model):
    def __init__(self):
        super().__init__()
        self.backbone = wrap(backbone)
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(),
            metrics=[tf.keras.metrics.AUC(name="auc")],
        )

    def call(self, features, training=False):
        return self.backbone(features, training=training)["click"]

    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        return self.task(labels=labels, predictions=self(features, training=training))


model = Ranker()
model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(256), epochs=1)
```

See docs/tfrs.md for the full story and the Keras 3 route for users who leave TFRS.
"""

from __future__ import annotations

import os
import re
from typing import Any

_TRUE = ("1", "true", "True", "TRUE", "yes")

if os.environ.get("TF_USE_LEGACY_KERAS") not in _TRUE:
    raise ImportError(
        "keras_rankmixer.tfrs needs the legacy Keras that TensorFlow Recommenders is written for: "
        "set the environment variable TF_USE_LEGACY_KERAS=1 before TensorFlow is imported "
        "(e.g. `TF_USE_LEGACY_KERAS=1 python train.py`, or os.environ['TF_USE_LEGACY_KERAS'] = "
        "'1' at the very top of your script or notebook), and install the extra with "
        '`pip install "keras-rankmixer[tfrs]"`. Without TFRS, train the Keras 3 model directly '
        "with model.compile()/fit() (see docs/tfrs.md, 'The Keras 3 route')."
    )

try:
    import tf_keras
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'keras_rankmixer.tfrs needs the `tf-keras` package: `pip install "keras-rankmixer[tfrs]"`.'
    ) from err

import keras  # noqa: E402 - after the environment check above
import tensorflow as tf  # noqa: E402

if tf.keras.layers.Layer is not tf_keras.layers.Layer:
    raise ImportError(
        "TF_USE_LEGACY_KERAS=1 is set, but `tf.keras` is Keras 3 in this process: TensorFlow's "
        "Keras was loaded before the variable was set. Set TF_USE_LEGACY_KERAS=1 before the "
        "first `import tensorflow` (at the top of the script or notebook, or in the shell)."
    )

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_rankmixer.tfrs needs the TensorFlow backend of Keras 3 (TFRS is TensorFlow-only), "
        f"but KERAS_BACKEND is {keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

__all__ = ["KerasLayer", "wrap"]


def _checkpoint_name(path: str) -> str:
    """A checkpoint-safe dependency name for a Keras 3 variable path."""
    return "k3_" + re.sub(r"[^0-9A-Za-z_]", "_", path)


class KerasLayer(tf_keras.layers.Layer):
    """A tf_keras layer running a Keras 3 layer or model; made by `wrap`.

    Args:
        layer: The Keras 3 layer or model (TensorFlow backend).
        **kwargs: Base `tf_keras.layers.Layer` arguments (e.g. `name`).

    Attributes:
        keras_layer: The wrapped Keras 3 layer; its variables and the wrapper's weights are the
            same `tf.Variable` objects, so weights set on either side are seen by both.
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"`layer` must be a Keras 3 `keras.layers.Layer` or `keras.Model`, got "
                f"layer={layer!r}. A tf_keras layer needs no wrapping."
            )
        kwargs.setdefault("name", f"tfrs_{layer.name}")
        # Inputs go to the Keras 3 layer untouched; it applies its own dtype policy.
        kwargs.setdefault("autocast", False)
        kwargs.setdefault("dtype", layer.dtype_policy.variable_dtype)
        super().__init__(**kwargs)
        # Bypass tf_keras attribute tracking: tf_keras would otherwise treat the Keras 3 layer as
        # a sublayer and collect its Keras 3 variables, which its optimizer cannot update.
        object.__setattr__(self, "_keras_layer", layer)
        object.__setattr__(self, "_tracked_names", {})
        if layer.built:
            self._track_keras_variables()

    @property
    def keras_layer(self) -> keras.layers.Layer:
        return self._keras_layer

    def _track_keras_variables(self) -> None:
        """Name every underlying tf.Variable as a checkpoint dependency of this layer."""
        used = set(self._tracked_names.values())
        for variable in self._keras_layer.variables:
            tf_variable = _tf_variable(variable)
            if id(tf_variable) in self._tracked_names:
                continue
            # Paths are relative to the wrapped layer, so an auto-generated top-level name
            # ("rank_mixer_block_3") does not change the checkpoint keys.
            path = variable.path
            prefix = self._keras_layer.name + "/"
            if path.startswith(prefix):
                path = path[len(prefix) :]
            name = base = _checkpoint_name(path)
            index = 1
            while name in used:
                index += 1
                name = f"{base}_{index}"
            used.add(name)
            self._tracked_names[id(tf_variable)] = name
            self._track_trackable(tf_variable, name=name, overwrite=True)

    def build(self, input_shape: Any) -> None:
        if not self._keras_layer.built:
            shape = tf.nest.map_structure(
                lambda s: tuple(tf.TensorShape(s).as_list()),
                input_shape,
                check_types=False,
            )
            with tf.init_scope():
                self._keras_layer.build(shape)
        self._track_keras_variables()
        super().build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        outputs = self._keras_layer(inputs, training=training)
        for loss in self._keras_layer.losses:
            self.add_loss(tf.cast(loss, tf.float32))
        # Variables a Keras 3 layer creates lazily in its first call are tracked too.
        if len(self._tracked_names) != len(self._keras_layer.variables):
            with tf.init_scope():
                self._track_keras_variables()
        return outputs

    @property
    def trainable_weights(self) -> list[tf.Variable]:
        if not self.trainable:
            return []
        return [_tf_variable(v) for v in self._keras_layer.trainable_variables]

    @property
    def non_trainable_weights(self) -> list[tf.Variable]:
        k3 = self._keras_layer
        if not self.trainable:
            return [_tf_variable(v) for v in k3.variables]
        trainable = {id(v) for v in k3.trainable_variables}
        return [_tf_variable(v) for v in k3.variables if id(v) not in trainable]

    @property
    def weights(self) -> list[tf.Variable]:
        return self.trainable_weights + self.non_trainable_weights

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self._keras_layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config["layer"] = keras.saving.serialize_keras_object(self._keras_layer)
        return config

    @classmethod
    def from_config(cls, config: dict) -> KerasLayer:
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


def _tf_variable(variable: Any) -> tf.Variable:
    """The `tf.Variable` behind a Keras 3 variable (the variable itself if it already is one)."""
    if isinstance(variable, tf.Variable):
        return variable
    value = getattr(variable, "_value", None)
    if not isinstance(value, tf.Variable):
        value = variable.value
    if not isinstance(value, tf.Variable):
        raise ValueError(
            f"variable {getattr(variable, 'path', variable)!r} is not backed by a tf.Variable; "
            "keras_rankmixer.tfrs needs the TensorFlow backend (KERAS_BACKEND=tensorflow)."
        )
    return value


def wrap(layer: keras.layers.Layer, name: str | None = None) -> KerasLayer:
    """Wrap a Keras 3 layer or model as a tf_keras layer usable inside a `tfrs.Model`.

    The returned layer calls `layer` with the same inputs and `training` flag, exposes its
    variables (trainable and non-trainable, as the underlying `tf.Variable`s) to tf_keras
    optimizers and checkpoints, and forwards its `add_loss` terms so they are part of
    `model.losses` (TFRS's `regularization_loss`).

    Args:
        layer: A Keras 3 layer or model, e.g. `build_rankmixer(...)` or a `RankMixerBlock`.
            An unbuilt layer is built from the first input shape it sees.
        name: Name of the tf_keras layer; defaults to `"tfrs_" + layer.name`.

    Returns:
        A `KerasLayer` (a `tf_keras.layers.Layer`).

    Example (with `TF_USE_LEGACY_KERAS=1`):

    >>> import numpy as np
    >>> from keras_rankmixer.layers import RankMixerBlock
    >>> block = wrap(RankMixerBlock(hidden_ratio=2))
    >>> tuple(block(np.ones((2, 4, 8), "float32")).shape), len(block.trainable_weights)
    ((2, 4, 8), 8)
    """
    kwargs = {} if name is None else {"name": name}
    return KerasLayer(layer, **kwargs)

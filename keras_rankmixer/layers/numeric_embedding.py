"""Normalisation and embedding of a numeric feature."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_positive
from keras_rankmixer.types import InitializerLike


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class NumericEmbedding(keras.layers.Layer):
    """Normalise a scalar numeric feature and embed it as `z * w + b`.

    `z = (t(x) - mean) / std` where `t` is the identity or, with `transform="log1p"`,
    `sign(x) * log1p(|x|)` (for heavy-tailed counts). The embedding is `z * w + b` with a learned
    vector `w` and `b` per feature.

    **Missing values.** NaN and +-inf are treated as missing (a documented safe default, never an
    error inside the graph): their embedding is a separate learned vector `missing`, so the model
    can tell "missing" from "equal to the mean".

    Args:
        embedding_dim: Embedding width.
        mean: Mean subtracted after the transform.
        std: Standard deviation divided by after the transform (must be > 0).
        transform: None or `"log1p"`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> emb = NumericEmbedding(embedding_dim=4, mean=1.0, std=2.0)
    >>> tuple(emb(np.array([1.0, np.nan, 3.0], "float32")).shape)
    (3, 4)
    """

    def __init__(
        self,
        embedding_dim: int,
        mean: float = 0.0,
        std: float = 1.0,
        transform: str | None = None,
        kernel_initializer: InitializerLike = "random_normal",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("embedding_dim", embedding_dim, integer=True)
        check_positive("std", std)
        if transform not in (None, "log1p"):
            raise ValueError(f"`transform` must be None or 'log1p', got {transform!r}.")
        self.embedding_dim = embedding_dim
        self.mean = float(mean)
        self.std = float(std)
        self.transform = transform
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape) -> None:
        self.kernel = self.add_weight(
            name="kernel", shape=(self.embedding_dim,), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.embedding_dim,), initializer="zeros")
        self.missing = self.add_weight(
            name="missing", shape=(self.embedding_dim,), initializer="zeros"
        )
        self.built = True

    def normalize(self, inputs):
        """`(t(x) - mean) / std` in float32, with non-finite values set to 0."""
        x = ops.cast(inputs, "float32")
        finite = ops.isfinite(x)
        x = ops.where(finite, x, ops.zeros_like(x))
        if self.transform == "log1p":
            x = ops.sign(x) * ops.log1p(ops.abs(x))
        return (x - self.mean) / self.std, finite

    def call(self, inputs):
        z, finite = self.normalize(inputs)
        z = ops.cast(z, self.compute_dtype)[..., None]
        out = z * ops.cast(self.kernel, self.compute_dtype) + ops.cast(
            self.bias, self.compute_dtype
        )
        return ops.where(finite[..., None], out, ops.cast(self.missing, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "mean": self.mean,
                "std": self.std,
                "transform": self.transform,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config

"""Default initializer for stacks of per-token weight matrices."""

from __future__ import annotations

import keras


def per_token_glorot_uniform(seed: int | None = None) -> keras.initializers.Initializer:
    """Glorot-uniform for a stack of matrices `(..., D_in, D_out)`, fans from the last two axes.

    Keras' plain `glorot_uniform` treats the leading axes of a rank-3 kernel as a convolution's
    receptive field and multiplies both fans by T. A per-token kernel `(T, D_in, D_out)` is T
    independent matrices, so each is initialised as one `(D_in, D_out)` matrix.

    Example:

    >>> tuple(per_token_glorot_uniform(seed=0)((4, 8, 16)).shape)
    (4, 8, 16)
    """
    return keras.initializers.GlorotUniform(seed=seed, input_axes=[-2], output_axes=[-1])

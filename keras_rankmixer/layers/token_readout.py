"""Read-out of the last block's tokens for the task towers: global token, mean or flatten."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_tokens_shape

READOUTS = ("global", "mean", "flatten")


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class TokenReadout(keras.layers.Layer):
    """Turn `(batch, T, D)` tokens into one vector per sample for the task towers.

    - `"global"`: token 0, the global token of a `GroupTokenizer(global_token=True)`
      (TokenMixer-Large's read-out), width D.
    - `"mean"`: the mean over the T tokens (RankMixer's read-out), width D.
    - `"flatten"`: all tokens concatenated, width T*D (keeps which token said what; useful
      when T is small).

    Args:
        mode: `"global"`, `"mean"` or `"flatten"`. Defaults to `"global"`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape: `(batch, T, D)`. Output shape: `(batch, D)`, or `(batch, T*D)` for flatten.

    Example:

    >>> import numpy as np
    >>> x = np.arange(12, dtype="float32").reshape(1, 3, 4)
    >>> [np.asarray(TokenReadout(m)(x)).tolist() for m in ("global", "mean")]
    [[[0.0, 1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0, 7.0]]]
    >>> tuple(TokenReadout("flatten")(x).shape)
    (1, 12)

    References:
        "TokenMixer-Large: Scaling Up Large Ranking Models in Industrial Recommenders"
        (ByteDance), arXiv:2602.06563 (global token read-out).
    """

    def __init__(self, mode: str = "global", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in READOUTS:
            raise ValueError(f"`mode` must be one of {READOUTS}, got mode={mode!r}.")
        self.mode = mode

    def build(self, input_shape) -> None:
        check_tokens_shape("TokenReadout", input_shape)
        self.built = True

    def call(self, inputs):
        if self.mode == "global":
            return inputs[:, 0, :]
        if self.mode == "mean":
            return ops.mean(inputs, axis=1)
        return ops.reshape(inputs, (-1, inputs.shape[1] * inputs.shape[2]))

    def compute_output_shape(self, input_shape):
        t, d = check_tokens_shape("TokenReadout", input_shape)
        return (input_shape[0], t * d if self.mode == "flatten" else d)

    def get_config(self) -> dict:
        config = super().get_config()
        config["mode"] = self.mode
        return config

"""Argument and input-shape checks shared by every layer and model of the package.

Each check raises a `ValueError` that names the argument (or layer) and the offending value, so
a user's mistake is reported where it is made, in `__init__` or `build`.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_rankmixer.layers.initializers import per_token_glorot_uniform


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_positive(name: str, value: Any, allow_none: bool = False, integer: bool = False) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a positive number (or None)."""
    if value is None and allow_none:
        return
    ok = _is_number(value) and value > 0
    if integer:
        ok = ok and isinstance(value, int)
    if not ok:
        kind = "positive int" if integer else "positive number"
        suffix = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be a {kind}{suffix}, got {name}={value!r}.")


def check_non_negative(name: str, value: Any, at_most: float | None = None) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a number >= 0 (and <= `at_most`)."""
    ok = _is_number(value) and value >= 0 and (at_most is None or value <= at_most)
    if not ok:
        bound = f"in [0, {at_most:g}]" if at_most is not None else ">= 0"
        raise ValueError(f"`{name}` must be a number {bound}, got {name}={value!r}.")


def check_non_negative_int(name: str, value: Any) -> None:
    """Raise a `ValueError` naming `name` unless `value` is an int >= 0 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int, got {name}={value!r}.")


def check_rate(name: str, value: Any) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a number in [0, 1) (a dropout rate)."""
    if not (_is_number(value) and 0 <= value < 1):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {name}={value!r}.")


def check_tokens_shape(layer_name: str, input_shape: Any) -> tuple[int, int]:
    """`(T, D)` of a `(batch, T, D)` token input; `ValueError` naming the layer otherwise.

    Every per-token layer needs T and D known when it is built (its weights have a T axis).

    Example:

    >>> check_tokens_shape("PerTokenFFN", (None, 4, 8))
    (4, 8)
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise ValueError(
            f"{layer_name} expects input of shape (batch, num_tokens, token_dim) with static "
            f"num_tokens and token_dim, got {shape}."
        )
    return int(shape[1]), int(shape[2])


def check_group_widths(layer_name: str, input_shape) -> list[int]:
    """Static widths `d_i` of a list of `(batch, d_i)` group embeddings (or one tensor)."""
    shapes = (
        list(input_shape)
        if isinstance(input_shape, list | tuple)
        and input_shape
        and isinstance(input_shape[0], list | tuple)
        else [input_shape]
    )
    widths = []
    for shape in shapes:
        if len(shape) != 2 or shape[-1] is None:
            raise ValueError(
                f"{layer_name} expects (batch, width) group embeddings with a static width, "
                f"got shape {tuple(shape)}."
            )
        widths.append(int(shape[-1]))
    return widths


def per_token_initializer(initializer: Any) -> keras.initializers.Initializer:
    """`keras.initializers.get(initializer)`, with None meaning `per_token_glorot_uniform()`."""
    return keras.initializers.get(
        initializer if initializer is not None else per_token_glorot_uniform()
    )


def clone_initializer(
    initializer: keras.initializers.Initializer,
) -> keras.initializers.Initializer:
    """A new initializer of the same class and config (a sublayer gets its own, same seed)."""
    return initializer.__class__.from_config(initializer.get_config())


def set_weight_settings(
    layer: keras.layers.Layer,
    kernel_initializer: Any,
    bias_initializer: Any,
    kernel_regularizer: Any,
    bias_regularizer: Any,
) -> None:
    """Set a per-token layer's kernel/bias initializers and regularizers from its arguments.

    The kernel initializer goes through `per_token_initializer` (None: per-token Glorot).
    """
    layer.kernel_initializer = per_token_initializer(kernel_initializer)
    layer.bias_initializer = keras.initializers.get(bias_initializer)
    layer.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    layer.bias_regularizer = keras.regularizers.get(bias_regularizer)


def weight_settings_config(layer: keras.layers.Layer) -> dict:
    """The `get_config` entries of the settings `set_weight_settings` put on `layer`."""
    return {
        "kernel_initializer": keras.initializers.serialize(layer.kernel_initializer),
        "bias_initializer": keras.initializers.serialize(layer.bias_initializer),
        "kernel_regularizer": keras.regularizers.serialize(layer.kernel_regularizer),
        "bias_regularizer": keras.regularizers.serialize(layer.bias_regularizer),
    }

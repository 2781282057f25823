"""Type aliases for the arguments that accept several forms (names, objects, callables).

Like `keras_rs/src/types.py`: one name per kind of argument, so signatures say what they take
instead of `str | Any`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import keras

#: A Keras tensor of any backend (or a NumPy array fed to a layer).
Tensor: TypeAlias = Any

#: An activation: a Keras name (`"gelu"`, `"relu"`), this package's `"gelu_tanh"`, a
#: serialized activation, or a callable `tensor -> tensor`.
ActivationLike: TypeAlias = str | dict[str, Any] | Callable[[Tensor], Tensor]

#: An initializer: a Keras name (`"glorot_uniform"`), a serialized config, a
#: `keras.initializers.Initializer` or a callable `(shape, dtype) -> tensor`.
InitializerLike: TypeAlias = (
    str | dict[str, Any] | keras.initializers.Initializer | Callable[..., Tensor]
)

#: A regularizer: a Keras name (`"l2"`), a serialized config, a `keras.regularizers.Regularizer`
#: or a callable `weight -> scalar loss`; None for none.
RegularizerLike: TypeAlias = (
    str | dict[str, Any] | keras.regularizers.Regularizer | Callable[[Tensor], Tensor] | None
)

#: A dtype policy: a name (`"float32"`, `"mixed_bfloat16"`), a `keras.DTypePolicy`, or None
#: for the global policy.
DTypeLike: TypeAlias = str | keras.DTypePolicy | None

__all__ = ["ActivationLike", "DTypeLike", "InitializerLike", "RegularizerLike", "Tensor"]

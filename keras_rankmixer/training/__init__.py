"""Training support: compile defaults (`compile_for_ranking`, `ranking_compile_arguments`).

Example:

>>> from keras_rankmixer.training import ranking_compile_arguments
>>> sorted(ranking_compile_arguments(["click"])["metrics"])
['click']
"""

from keras_rankmixer.training.compile import (
    DEFAULT_JIT_COMPILE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_OPTIMIZER,
    compile_for_ranking,
    ranking_compile_arguments,
)

__all__ = [
    "DEFAULT_JIT_COMPILE",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OPTIMIZER",
    "compile_for_ranking",
    "ranking_compile_arguments",
]

"""`compile_for_ranking`: the `Ranker` task's compile defaults for any model with
`{task: probability}` outputs (a `Ranker` or an older functional model).

The defaults themselves live with the task (`keras_rankmixer.models.compile_defaults`) and are
re-exported here.
"""

from __future__ import annotations

import keras

from keras_rankmixer.models.compile_defaults import (
    DEFAULT_JIT_COMPILE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LOSS,
    DEFAULT_OPTIMIZER,
    default_metrics,
    ranking_compile_arguments,
)

__all__ = [
    "DEFAULT_JIT_COMPILE",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_LOSS",
    "DEFAULT_OPTIMIZER",
    "compile_for_ranking",
    "default_metrics",
    "ranking_compile_arguments",
]


def compile_for_ranking(
    model: keras.Model,
    optimizer: str | keras.optimizers.Optimizer = DEFAULT_OPTIMIZER,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    jit_compile: bool | str = DEFAULT_JIT_COMPILE,
    loss_weights: dict[str, float] | None = None,
) -> keras.Model:
    """Compile `model` with a binary cross-entropy loss (the logloss) and AUC per task output.

    The defaults of `Ranker.compile()` (`ranking_compile_arguments`), for any model whose
    outputs are a dict `{task: probability}` (a `Ranker` or an older functional model).

    Args:
        model: A model whose outputs are a dict `{task: probability}`.
        optimizer: Optimizer name or instance (a name gets `learning_rate`).
        learning_rate: Learning rate used when `optimizer` is a name.
        jit_compile: XLA compilation (`True`, `False` or `"auto"`; models with string
            features need `False`/`"auto"`).
        loss_weights: Optional per-task loss weights.

    Returns:
        The same model, compiled.

    Example:

    >>> from keras_rankmixer import CategoricalFeature, build_from_preset
    >>> m = compile_for_ranking(build_from_preset("tiny", [CategoricalFeature("a", vocabulary_size=9)]))
    >>> type(m.optimizer).__name__
    'Adam'
    """
    if not isinstance(optimizer, str):
        learning_rate = None
    model.compile(
        **ranking_compile_arguments(
            list(model.output_names),
            optimizer=optimizer,
            learning_rate=learning_rate,
            jit_compile=jit_compile,
            loss_weights=loss_weights,
        )
    )
    return model

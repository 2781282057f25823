"""Compile defaults for ranking: Adam, binary cross-entropy and AUC per task.

The one copy of the defaults: `Ranker.compile()` and `compile_for_ranking` both call
`ranking_compile_arguments`. This module imports only Keras, so any layer of the package may
use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

#: Optimizer used when none is given, and its learning rate.
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 1e-3
#: XLA by default; models with string features need `False` (or `"auto"`).
DEFAULT_JIT_COMPILE = True
#: Per-task loss: the logloss of a sigmoid output.
DEFAULT_LOSS = "binary_crossentropy"


def default_metrics() -> list[keras.metrics.Metric]:
    """Fresh metric objects for one task: `[AUC(name="auc")]`."""
    return [keras.metrics.AUC(name="auc")]


def ranking_compile_arguments(
    tasks: Sequence[str],
    optimizer: str | keras.optimizers.Optimizer | Mapping = "auto",
    loss: Any = "auto",
    metrics: Any = "auto",
    loss_weights: Mapping[str, float] | None = None,
    learning_rate: float | None = None,
    jit_compile: bool | str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`keras.Model.compile` arguments for a model with one sigmoid output per task.

    `"auto"` takes the default: `optimizer` Adam (or the named optimizer) with
    `learning_rate` (default 1e-3), `loss` binary cross-entropy per task, `metrics` AUC per
    task. Anything else is passed as given (a learning rate with an optimizer *instance*
    is an error, as it would be ignored).

    Args:
        tasks: The output names.
        optimizer: `"auto"`, an optimizer name or config, or an instance.
        loss: `"auto"` or any `compile` loss (one loss, or a dict per task).
        metrics: `"auto"` or any `compile` metrics.
        loss_weights: Optional per-task loss weights.
        learning_rate: Learning rate of a named optimizer (default 1e-3).
        jit_compile: XLA compilation (`True`, `False` or `"auto"`); None for the default
            (`DEFAULT_JIT_COMPILE`, True).
        **kwargs: Other `keras.Model.compile` arguments (e.g. `steps_per_execution`).

    Returns:
        A dict to pass as `model.compile(**arguments)`.

    Example:

    >>> args = ranking_compile_arguments(["click", "like"])
    >>> type(args["optimizer"]).__name__, args["loss"]["like"], args["jit_compile"]
    ('Adam', 'binary_crossentropy', True)
    """
    tasks = list(tasks)
    if jit_compile is None:
        jit_compile = DEFAULT_JIT_COMPILE
    if optimizer == "auto":
        optimizer = DEFAULT_OPTIMIZER
    if isinstance(optimizer, str | Mapping):
        rate = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
        if isinstance(optimizer, str):
            optimizer = {"class_name": optimizer, "config": {"learning_rate": rate}}
        optimizer = keras.optimizers.get(optimizer)
    elif learning_rate is not None:
        raise ValueError(
            "`learning_rate` applies to an optimizer given by name; set it on the optimizer "
            f"instance instead (got learning_rate={learning_rate!r} with {optimizer!r})."
        )
    if loss == "auto":
        loss = {t: DEFAULT_LOSS for t in tasks}
    if metrics == "auto":
        metrics = {t: default_metrics() for t in tasks}
    return {
        "optimizer": optimizer,
        "loss": loss,
        "loss_weights": dict(loss_weights) if loss_weights is not None else None,
        "metrics": metrics,
        "jit_compile": jit_compile,
        **kwargs,
    }


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

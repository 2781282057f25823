"""Compile defaults of the `Ranker` task: Adam, binary cross-entropy and AUC per task.

The one copy of the defaults: `Ranker.compile()` and `training.compile_for_ranking` (for
older functional models) both call `ranking_compile_arguments`. It belongs to the task, as in
keras-hub, so the model package needs nothing above it; it imports only Keras.
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

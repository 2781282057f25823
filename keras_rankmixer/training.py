"""Compile defaults for ranking: binary cross-entropy and AUC per task."""

from __future__ import annotations

import keras


def compile_for_ranking(
    model: keras.Model,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    learning_rate: float = 1e-3,
    jit_compile: bool | str = True,
    loss_weights: dict[str, float] | None = None,
) -> keras.Model:
    """Compile `model` with a binary cross-entropy loss (the logloss) and AUC per task output.

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
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        )
    tasks = list(model.output_names)
    model.compile(
        optimizer=optimizer,
        loss={t: "binary_crossentropy" for t in tasks},
        loss_weights=loss_weights,
        metrics={t: [keras.metrics.AUC(name="auc")] for t in tasks},
        jit_compile=jit_compile,
    )
    return model

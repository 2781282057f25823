"""`Ranker`: a backbone plus one tower per task, with a `compile()` whose defaults work."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_rankmixer.features import Feature
from keras_rankmixer.layers._checks import check_rate
from keras_rankmixer.layers.activations import get_activation
from keras_rankmixer.models.backbone import Backbone, check_model_kwargs, from_config_with
from keras_rankmixer.models.compile_defaults import ranking_compile_arguments
from keras_rankmixer.types import ActivationLike, DTypeLike

#: Per-task options a `tasks` dict may give.
TASK_OPTIONS = ("loss_weight",)


def check_tasks(tasks: Sequence[str] | str) -> list[str]:
    """`tasks` as a list of unique names (a single name is a one-task list)."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"`tasks` must be a non-empty list of unique names, got {tasks!r}.")
    return tasks


def task_options(tasks: Sequence[str] | str | Mapping[str, Mapping | None]) -> dict[str, dict]:
    """`{task: options}` from a list of names or a dict `name -> options` (`TASK_OPTIONS`).

    Example:

    >>> task_options(["click", "like"])
    {'click': {}, 'like': {}}
    >>> task_options({"click": {"loss_weight": 1.0}, "like": {"loss_weight": 0.5}})["like"]
    {'loss_weight': 0.5}
    """
    if not isinstance(tasks, Mapping):
        return {t: {} for t in check_tasks(tasks)}
    out = {}
    for task in check_tasks(list(tasks)):
        options = dict(tasks[task] or {})
        unknown = sorted(set(options) - set(TASK_OPTIONS))
        if unknown:
            raise ValueError(
                f"`tasks`[{task!r}] has unknown option(s) {unknown}; known: {list(TASK_OPTIONS)}."
            )
        if "loss_weight" in options:
            weight = options["loss_weight"]
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
                raise ValueError(
                    f"`tasks`[{task!r}]['loss_weight'] must be a number >= 0, got {weight!r}."
                )
            options["loss_weight"] = float(weight)
        out[task] = options
    return out


def check_units(name: str, units: Sequence[int]) -> tuple[int, ...]:
    """`units` as a tuple of positive ints; `ValueError` naming the argument otherwise."""
    units = tuple(units)
    if not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units):
        raise ValueError(f"`{name}` must be a sequence of positive ints, got {name}={units!r}.")
    return units


def add_task_towers(
    pooled: keras.KerasTensor,
    tasks: Sequence[str],
    tower_units: Sequence[int] = (64,),
    dtype: DTypeLike = None,
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
    activation: ActivationLike = "gelu",
) -> dict[str, keras.KerasTensor]:
    """One MLP tower per task ending in a float32 sigmoid; outputs are named after the task.

    Each hidden layer is `Dense -> [BatchNormalization] -> activation -> [Dropout]`; with the
    defaults (GELU, no batch norm, no dropout) it is a single `Dense(activation="gelu")` named
    `{task}_tower_{i}`; the output layer is named `{task}`.

    Example:

    >>> x = keras.Input((8,))
    >>> sorted(add_task_towers(x, ["click", "like"], tower_units=(4,)))
    ['click', 'like']
    """
    check_rate("dropout", dropout)
    activation = get_activation(activation)
    outputs = {}
    for task in check_tasks(tasks):
        h = pooled
        for i, units in enumerate(tower_units):
            name = f"{task}_tower_{i}"
            if batch_norm:
                h = keras.layers.Dense(units, dtype=dtype, name=name)(h)
                # momentum 0.9 as in the baselines' MLP (`models.dnn_backbone`)
                h = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, name=f"{name}_bn")(h)
                h = keras.layers.Activation(activation, dtype=dtype, name=f"{name}_activation")(h)
            else:
                h = keras.layers.Dense(units, activation=activation, dtype=dtype, name=name)(h)
            if dropout:
                h = keras.layers.Dropout(dropout, dtype=dtype, name=f"{name}_dropout")(h)
        outputs[task] = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=task)(h)
    return outputs


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class Ranker(keras.Model):
    """The ranking task: a `Backbone`, then one MLP tower and one sigmoid output per task.

    A functional model (the keras-hub task pattern): its inputs are the backbone's raw
    feature inputs, its graph calls the backbone as a nested model (`ranker.backbone`) and
    adds the towers (layers `{task}_tower_{i}` and `{task}`), and it outputs a dict
    `{task: probability (batch, 1) float32}`. `get_layer` also finds the backbone's layers
    (`ranker.get_layer("block_0")`). The config holds the backbone's config, which holds the
    feature specs, so `keras.saving.load_model` of a saved ranker needs no other file.

    Args:
        backbone: A `Backbone` (e.g. `RankMixerBackbone`).
        tasks: Task names, or a dict `{name: {"loss_weight": w}}` whose weights `compile()`
            uses by default.
        tower_units: Hidden widths of each task tower (empty: the sigmoid unit alone).
        tower_dropout: Dropout after each tower hidden layer (0 = none).
        tower_batch_norm: Batch normalization before each tower activation.
        tower_activation: Activation of the tower hidden layers (`"gelu"` by default;
            `"relu"` gives the baselines' MLP).
        name: Model name.
        **kwargs: `keras.Model` arguments (e.g. `trainable`).

    Example:

    >>> import numpy as np
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> from keras_rankmixer.models import RankMixerBackbone
    >>> backbone = RankMixerBackbone([CategoricalFeature("item", vocabulary_size=10)],
    ...                              num_tokens=2, token_dim=8, num_layers=1)
    >>> ranker = Ranker(backbone, tasks={"click": {}, "like": {"loss_weight": 0.5}})
    >>> ranker.compile()
    >>> sorted(ranker.predict({"item": np.array([1, 2])}, verbose=0))
    ['click', 'like']
    """

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[str] | str | Mapping[str, Mapping | None] = ("click",),
        tower_units: Sequence[int] = (64,),
        tower_dropout: float = 0.0,
        tower_batch_norm: bool = False,
        tower_activation: ActivationLike = "gelu",
        name: str = "ranker",
        **kwargs: Any,
    ) -> None:
        # === Argument checks ===
        if not isinstance(backbone, Backbone):
            raise ValueError(
                f"`backbone` must be a keras_rankmixer Backbone, got backbone={backbone!r}."
            )
        check_model_kwargs(type(self), kwargs)
        options = task_options(tasks)
        tower_units = check_units("tower_units", tower_units)
        check_rate("tower_dropout", tower_dropout)
        get_activation(tower_activation, "tower_activation")

        # === Layers and graph ===
        self.backbone = backbone
        inputs = backbone.input
        representation = backbone(inputs)
        outputs = add_task_towers(
            representation,
            list(options),
            tower_units,
            dtype=backbone.dtype_policy,
            dropout=tower_dropout,
            batch_norm=tower_batch_norm,
            activation=tower_activation,
        )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.dtype_policy = backbone.dtype_policy

        # === Config ===
        self._task_options = options
        self.tower_units = tower_units
        self.tower_dropout = tower_dropout
        self.tower_batch_norm = tower_batch_norm
        self.tower_activation = tower_activation

    @property
    def tasks(self) -> list[str]:
        """The task (output) names."""
        return list(self._task_options)

    @property
    def task_options(self) -> dict[str, dict]:
        """`{task: options}` as given (`TASK_OPTIONS`)."""
        return {t: dict(o) for t, o in self._task_options.items()}

    @property
    def features(self) -> list[Feature]:
        """The backbone's feature specs, one per input."""
        return self.backbone.features

    @property
    def default_loss_weights(self) -> dict[str, float] | None:
        """The tasks' `loss_weight` options (1.0 where not given); None if no task gives one."""
        if not any("loss_weight" in o for o in self._task_options.values()):
            return None
        return {t: o.get("loss_weight", 1.0) for t, o in self._task_options.items()}

    def get_layer(self, name: str | None = None, index: int | None = None) -> keras.layers.Layer:
        """A layer of the ranker by name or index; names not found there are looked up in the
        backbone (so `ranker.get_layer("block_0")` works as for a flat model)."""
        try:
            return super().get_layer(name=name, index=index)
        except ValueError:
            if name is None:
                raise
            return self.backbone.get_layer(name)

    def compile(
        self,
        optimizer: Any = "auto",
        loss: Any = "auto",
        loss_weights: Any = "auto",
        metrics: Any = "auto",
        *,
        learning_rate: float | None = None,
        jit_compile: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        """`keras.Model.compile` with ranking defaults; every argument may be overridden.

        Defaults (`keras_rankmixer.models.compile_defaults`): Adam with `learning_rate` 1e-3,
        binary cross-entropy per task weighted by the tasks' `loss_weight` options, AUC per
        task (`{task}_auc` in the logs with several tasks), `jit_compile=True` (give `False`
        or `"auto"` for models with string features).

        Args:
            optimizer: `"auto"`, an optimizer name or an instance.
            loss: `"auto"` or any `compile` loss.
            loss_weights: `"auto"` (the tasks' `loss_weight` options) or a dict / None.
            metrics: `"auto"` or any `compile` metrics.
            learning_rate: Learning rate of a named (or the default) optimizer.
            jit_compile: XLA compilation; None for the default (True).
            **kwargs: Other `keras.Model.compile` arguments.
        """
        if isinstance(loss_weights, str) and loss_weights == "auto":
            loss_weights = self.default_loss_weights
        super().compile(
            **ranking_compile_arguments(
                self.tasks,
                optimizer=optimizer,
                loss=loss,
                metrics=metrics,
                loss_weights=loss_weights,
                learning_rate=learning_rate,
                jit_compile=jit_compile,
                **kwargs,
            )
        )

    def compile_from_config(self, config: dict) -> None:
        """Restore the saved compile state (`keras.saving.load_model` calls this).

        The saved config holds the resolved arguments (no `"auto"` left), so they are
        passed to `keras.Model.compile` as they are.
        """
        config = keras.saving.deserialize_keras_object(config)
        super().compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)  # optimizer variables to load into

    def get_config(self) -> dict:
        # Not chained to keras.Model (see Backbone.get_config).
        options = self._task_options
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "tasks": {t: dict(o) for t, o in options.items()}
            if any(options.values())
            else list(options),
            "tower_units": list(self.tower_units),
            "tower_dropout": self.tower_dropout,
            "tower_batch_norm": self.tower_batch_norm,
            "tower_activation": self.tower_activation
            if isinstance(self.tower_activation, str)
            else keras.activations.serialize(get_activation(self.tower_activation)),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict) -> Ranker:
        return from_config_with(cls, config, "backbone", keras.layers.deserialize)

    @classmethod
    def from_preset(
        cls,
        preset: str,
        features: Sequence[Feature | Mapping],
        tasks: Sequence[str] | str | Mapping[str, Mapping | None] = ("click",),
        **overrides: Any,
    ) -> Ranker:
        """A ranker on a named preset's backbone (`models.presets`); keyword overrides win.

        The preset's head (`BackbonePreset.task`, e.g. `rankmixer_base`'s towers (400, 400,
        400) with batch norm and dropout 0.2) is the default of the ranker's arguments. The
        ranker is the backbone class's task (`Backbone.task_class_of()`, e.g. a
        `TokenMixerLargeRanker` for a TokenMixer-Large preset, with its auxiliary losses)
        when that is a subclass of `cls`, else `cls` itself. Overrides naming an argument of
        that class (`tower_units`, `tower_dropout`, `tower_batch_norm`, `tower_activation`,
        `aux_loss_weight`, `name`, `trainable`) go to the ranker; all others (e.g.
        `num_layers`, `moe`, `dtype`) go to the backbone.

        Example:

        >>> from keras_rankmixer.features import CategoricalFeature
        >>> r = Ranker.from_preset("tiny", [CategoricalFeature("a", vocabulary_size=9)],
        ...                        num_layers=1, tower_units=(8,))
        >>> r.backbone.num_layers, r.tower_units
        (1, (8,))
        >>> base = Ranker.from_preset("rankmixer_base", [CategoricalFeature("a", vocabulary_size=9)])
        >>> base.tower_units, base.tower_batch_norm, base.tower_dropout, base.backbone.embedding_l2
        ((400, 400, 400), True, 0.2, 0.01)
        """
        from keras_rankmixer.models.backbone import get_backbone_class
        from keras_rankmixer.models.presets import get_backbone_preset

        spec = get_backbone_preset(preset)
        task_cls = task_class_for(get_backbone_class(spec.backbone), cls)
        ranker_args = ranker_arguments(task_cls) | {"trainable"}
        ranker_kwargs = {k: v for k, v in spec.task.items() if k in ranker_args}
        ranker_kwargs.update({k: v for k, v in overrides.items() if k in ranker_args})
        backbone_kwargs = {k: v for k, v in overrides.items() if k not in ranker_args}
        backbone = Backbone.from_preset(preset, features=features, **backbone_kwargs)
        return task_cls(backbone, tasks=tasks, **ranker_kwargs)


def ranker_arguments(task_cls: type) -> set[str]:
    """The named constructor arguments of a task class other than `backbone` and `tasks`,
    including those a subclass passes on to its base through `**kwargs` (e.g.
    `TokenMixerLargeRanker`: `aux_loss_weight` and `Ranker`'s)."""
    names: set[str] = set()
    for klass in task_cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if klass is Ranker or not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self", "backbone", "tasks"}


def task_class_for(backbone_cls: type[Backbone], base: type[Ranker] = Ranker) -> type[Ranker]:
    """The task class to build on `backbone_cls`: its `task_class_of()` if that is a `base`
    (e.g. `TokenMixerLargeRanker` for `TokenMixerLargeBackbone` and `base=Ranker`), else
    `base`."""
    preferred = backbone_cls.task_class_of()
    return preferred if issubclass(preferred, base) else base

"""`rankmixer train`'s distribution flags -> a `keras.distribution` set-up or a TF strategy.

`--distribution data|model --mesh BxM --coordinator HOST:PORT --num-processes N
--process-id I` (see docs/distributed.md). The engines themselves (`data_parallel`,
`model_parallel`, `initialize_multi_host`, `mirrored_strategy`, `resolve_jit_compile`) live
in `keras_rankmixer.distribution`, which knows nothing of flags; this module only maps the
flags onto them. Heavy imports happen inside the functions (`rankmixer --help` stays fast).
"""

from __future__ import annotations

from typing import Any


def distribution_from_flags(
    distribution: str | None,
    mesh: str | None = None,
    *,
    num_tokens: int | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    embedding_shard_min_rows: int | None = None,
):
    """`--distribution data|model --mesh BxM --coordinator --num-processes --process-id` ->
    an initialised process and a distribution (or None for `distribution=None`).

    With `coordinator`, joins the multi-host run first (`initialize_multi_host`). Data
    parallel ignores `mesh` unless given (then it must be `Bx1`); model parallel needs it.
    `auto_shard_dataset` is False in multi-process runs: each process reads its own shard.
    """
    import keras

    from keras_rankmixer import distribution as dist
    from keras_rankmixer.distribution import DistributionSetupError

    if embedding_shard_min_rows is None:
        embedding_shard_min_rows = dist.DEFAULT_EMBEDDING_SHARD_MIN_ROWS
    if distribution in (None, "", "none"):
        if coordinator or (num_processes or 1) > 1:
            raise DistributionSetupError(
                "--coordinator/--num-processes need --distribution data or model."
            )
        return None
    if distribution not in ("data", "model"):
        raise DistributionSetupError(
            f"`--distribution` must be 'data' or 'model', got {distribution!r}."
        )
    dist._require_jax(f"--distribution {distribution}")
    multi = coordinator is not None or (num_processes or 1) > 1
    if multi:
        if coordinator is None or num_processes is None or process_id is None:
            raise DistributionSetupError(
                "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
                "--process-id I on every process."
            )
        dist.initialize_multi_host(coordinator, num_processes, process_id)
        if mesh is not None:
            total = len(keras.distribution.list_devices())
            batch, model = dist.parse_mesh(mesh)
            if batch * model != total:
                raise DistributionSetupError(
                    f"--mesh {mesh} uses {batch * model} devices but the {num_processes} "
                    f"processes have {total}: a multi-process mesh must use every device."
                )
    if distribution == "data":
        devices = None
        if mesh is not None:
            batch, model = dist.parse_mesh(mesh)
            if model != 1:
                raise DistributionSetupError(
                    f"--distribution data takes a mesh 'Bx1', got --mesh {mesh}; use "
                    "--distribution model for a model axis."
                )
            devices = dist._resolve_devices(None, batch, f"--mesh {mesh}")
        return dist.data_parallel(devices, auto_shard_dataset=not multi)
    if mesh is None:
        raise DistributionSetupError("--distribution model needs --mesh BxM (e.g. 2x4).")
    return dist.model_parallel(
        mesh,
        num_tokens=num_tokens,
        embedding_shard_min_rows=embedding_shard_min_rows,
        auto_shard_dataset=not multi,
    )


def _num_tokens(config: dict) -> int | None:
    """T of the model a config builds (the flag, else its preset's), for token sharding."""
    if config.get("num_tokens") is not None:
        return config["num_tokens"]
    if config.get("model", "rankmixer") in ("dnn", "dcnv2"):
        return None
    from keras_rankmixer.models.presets import BACKBONE_PRESETS
    from keras_rankmixer.training.runner import DEFAULT_PRESET

    preset = BACKBONE_PRESETS.get(config.get("preset") or DEFAULT_PRESET)
    return preset.config.get("num_tokens") if preset is not None else None


def configure_training(
    args: Any, config: dict, jit_compile_given: bool = False
) -> tuple[dict, Any]:
    """Apply `rankmixer train`'s distribution flags; returns `(config, scope)`.

    Reads `args.distribution` (None, "data" or "model"), `args.mesh` ("BxM"),
    `args.coordinator` ("HOST:PORT"), `args.num_processes`, `args.process_id` and:

    - JAX backend: joins the multi-process run (`initialize_multi_host`) and sets the global
      `keras.distribution` (`data_parallel` / `model_parallel`) so that model creation, `fit`,
      `evaluate` and `save` all run under it; `scope` is None.
    - TensorFlow backend, `--distribution data`: a `MirroredStrategy` over the local GPUs (one
      host only; `scope` is its `scope`), with XLA off (`resolve_jit_compile`): the default
      `jit_compile=True` becomes False; `jit_compile_given` (the user set `"jit_compile":
      true` explicitly, e.g. in `--config`) makes it an error instead.
    - Multi-process: process i reads files `sorted(files)[i::N]` (`shard_index=i`,
      `num_shards=N`), `--batch-size` stays the **global** batch (each process feeds
      `batch_size / N` rows per step; it must divide), and processes other than 0 write their
      run directory to `<run_dir>/process_<i>` so that two processes on one file system never
      write the same files. Synthetic data (no `--train`) is refused: every process would
      generate the same rows.
    """
    from keras_rankmixer import distribution as dist
    from keras_rankmixer.distribution import DistributionSetupError

    kind = getattr(args, "distribution", None)
    mesh = getattr(args, "mesh", None)
    coordinator = getattr(args, "coordinator", None)
    num_processes = getattr(args, "num_processes", None)
    process_id = getattr(args, "process_id", None)
    config = dict(config)
    if kind in (None, "", "none"):
        if coordinator or mesh or (num_processes or 1) > 1:
            raise DistributionSetupError(
                "--mesh/--coordinator/--num-processes need --distribution data or model."
            )
        return config, None
    multi = coordinator is not None or (num_processes or 1) > 1
    if multi and not config.get("train"):
        raise DistributionSetupError(
            "a multi-process run needs --train files (each process reads its own shard); "
            "synthetic data would give every process the same rows."
        )
    if dist._backend() == "tensorflow":
        if kind != "data" or multi or mesh is not None:
            raise DistributionSetupError(
                "on KERAS_BACKEND=tensorflow only `--distribution data` on one host is supported "
                "(MirroredStrategy; MultiWorkerMirroredStrategy fails in Keras 3 fit, "
                "keras-team/keras#20585). Use KERAS_BACKEND=jax for --mesh, model parallelism "
                "and multi-host runs."
            )
        strategy = dist.mirrored_strategy()
        explicit = jit_compile_given and config.get("jit_compile") is True
        config["jit_compile"] = dist.resolve_jit_compile(True if explicit else "auto", strategy)
        return config, strategy.scope
    active = distribution_from_flags(
        kind,
        mesh,
        num_tokens=_num_tokens(config),
        coordinator=coordinator,
        num_processes=num_processes,
        process_id=process_id,
    )
    if multi:
        batch = config.get("batch_size")
        if not isinstance(batch, int) or batch % num_processes:
            raise DistributionSetupError(
                f"--batch-size is the global batch and must divide by --num-processes: "
                f"batch_size={batch!r}, num_processes={num_processes}."
            )
        config["batch_size"] = batch // num_processes
        config["shard_index"], config["num_shards"] = process_id, num_processes
        if process_id > 0:
            run_dir = config.get("run_dir") or f"runs/{config.get('model', 'rankmixer')}"
            config["run_dir"] = f"{run_dir.rstrip('/')}/process_{process_id}"
    import keras

    keras.distribution.set_distribution(active)
    return config, None

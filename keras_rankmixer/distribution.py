"""Scale-out: RankMixer on several devices and hosts with `keras.distribution` and `tf.distribute`.

Two engines, both from the Keras ecosystem (no home-made one):

- **JAX backend, `keras.distribution`** (one or many hosts):
  - `data_parallel()`: every device holds a full replica; the global batch is split along the
    batch axis and gradients are all-reduced (`keras.distribution.DataParallel`).
  - `model_parallel(mesh_shape)`: a `("batch", "model")` device mesh and a `LayoutMap` that
    shards every **per-token** weight along its leading token axis T on `"model"` ("token
    parallel": each device owns whole tokens, so the per-token matmuls of `PerTokenFFN`,
    `SparseMoE` and `FeatureTokenizer` need no communication), and large embedding tables
    along their vocabulary (row) axis. Everything else (LayerNorms, towers, small tables) is
    replicated. Optimizer slots follow their variable's layout.
  - `initialize_multi_host(coordinator, num_processes, process_id)`: one call per process,
    before any computation (`keras.distribution.initialize`, plus gloo collectives on CPU).
- **TensorFlow backend, `tf.distribute.MirroredStrategy`** (one host, several GPUs):
  `mirrored_strategy()`, with `resolve_jit_compile()` refusing `jit_compile=True`, which
  `MirroredStrategy` does not support in Keras 3 `fit`. `MultiWorkerMirroredStrategy` fails
  in Keras 3 `fit` (keras-team/keras#20585), so multi-host training is the JAX route.

See `docs/distributed.md` for launch commands and the scaling plan.

Example (JAX backend; 4 virtual CPU devices with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`):

```python
import keras_rankmixer as kr
from keras_rankmixer.distribution import model_parallel
dist = model_parallel("2x2", num_tokens=4)  # 2 data replicas x 2 token shards
with dist.scope():  # build, compile AND fit under it (or keras.distribution.set_distribution)
    model = kr.Ranker.from_preset("tiny", specs)
    model.compile()  # the Ranker's defaults: Adam, per-task BCE, AUC
    model.fit(features, labels, batch_size=512)  # the global batch
```
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import keras

BATCH_AXIS = "batch"
MODEL_AXIS = "model"

#: Embedding tables with at least this many rows are sharded on "model" by default.
DEFAULT_EMBEDDING_SHARD_MIN_ROWS = 65_536

# Per-token weights: T is the leading axis. Paths look like "block_0/ffn/kernel_1",
# "tokenizer/kernel", "block_1/moe/expert_kernel_1", "block_1/moe/infer_router/router_kernel".
_PER_TOKEN_PATTERNS = {
    "per_token_ffn": r"(?:.*/)?ffn/(?:kernel_1|kernel_2|bias_1|bias_2)",
    "feature_tokenizer": r"(?:.*/)?tokenizer/(?:kernel|bias)",
    "sparse_moe_expert": r"(?:.*/)?expert_[^/]*",
    "sparse_moe_router": r"(?:.*/)?(?:router_[^/]*|(?:train|infer)_router/[^/]+)",
}
# Embedding tables: "embed_<feature>/embedding/embeddings", rows = vocabulary + 1.
_EMBEDDING_PATTERN = r"(?:.*/)?embed_[^/]+/embedding/embeddings"
# Non-trainable SparseMoE state: replicated (listed so that it never matches a rule above).
_REPLICATED_NAMES = ("l1_lambda",)


class DistributionSetupError(ValueError):
    """A distributed set-up that cannot work (device count, mesh, divisibility, jit)."""


def _backend() -> str:
    return keras.backend.backend()


def _require_jax(what: str) -> None:
    if _backend() != "jax":
        raise DistributionSetupError(
            f"{what} needs the JAX backend (KERAS_BACKEND=jax), got KERAS_BACKEND="
            f"{_backend()!r}. On TensorFlow use `mirrored_strategy()` (one host, several "
            "devices); multi-host training is the JAX route (keras-team/keras#20585)."
        )


def parse_mesh(mesh: str | Sequence[int]) -> tuple[int, int]:
    """Parse a `"BxM"` string (or a pair) into `(batch, model)` sizes, both positive ints.

    Example:

    >>> parse_mesh("2x4")
    (2, 4)
    >>> parse_mesh("2*4")
    Traceback (most recent call last):
    ...
    keras_rankmixer.distribution.DistributionSetupError: `mesh` must look like 'BxM' (e.g. '2x4'), got mesh='2*4'.
    """
    if isinstance(mesh, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", mesh)
        if not match:
            raise DistributionSetupError(
                f"`mesh` must look like 'BxM' (e.g. '2x4'), got mesh={mesh!r}."
            )
        shape = (int(match.group(1)), int(match.group(2)))
    else:
        shape = tuple(mesh)
        if len(shape) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape
        ):
            raise DistributionSetupError(
                f"`mesh_shape` must be two ints (batch, model), got mesh_shape={mesh!r}."
            )
    if min(shape) < 1:
        raise DistributionSetupError(f"`mesh_shape` sizes must be >= 1, got mesh_shape={mesh!r}.")
    return shape


def _resolve_devices(devices: Sequence[str] | None, needed: int | None, what: str) -> list[str]:
    available = keras.distribution.list_devices()
    if devices is None:
        devices = available
    devices = list(devices)
    if not devices:
        raise DistributionSetupError(f"`devices` is empty for {what}.")
    unknown = [d for d in devices if d not in available]
    if unknown:
        raise DistributionSetupError(
            f"`devices` names devices that do not exist: {unknown}; available: {available}."
        )
    if len(set(devices)) != len(devices):
        raise DistributionSetupError(f"`devices` lists a device twice: {devices}.")
    if needed is not None:
        if needed > len(devices):
            raise DistributionSetupError(
                f"{what} needs {needed} devices but only {len(devices)} are available "
                f"({devices}). On CPU, XLA_FLAGS=--xla_force_host_platform_device_count={needed} "
                "(set before JAX starts) gives virtual devices."
            )
        devices = devices[:needed]
    return devices


def data_parallel(
    devices: Sequence[str] | None = None, *, auto_shard_dataset: bool = True
) -> keras.distribution.DataParallel:
    """A `keras.distribution.DataParallel` over `devices` (default: all, on every process).

    Every device keeps a full replica of the weights; the global batch is split along the
    batch axis and gradients are averaged across devices (one all-reduce per step of the
    trainable parameter bytes).

    Args:
        devices: Device names (`keras.distribution.list_devices()` format, e.g. `"cpu:0"`);
            None uses every device of every process.
        auto_shard_dataset: Let Keras split a `tf.data` global dataset across processes. Set
            False when each process already feeds only its own shard (numpy inputs in a
            multi-process run must use False).

    Returns:
        A `keras.distribution.DataParallel`; use `with dist.scope():` (or
        `keras.distribution.set_distribution(dist)`) before building the model.

    Example:

    >>> import keras
    >>> if keras.backend.backend() == "jax":
    ...     dist = data_parallel()
    ...     assert dist.device_mesh.axis_names == ["batch"]
    """
    _require_jax("data_parallel")
    if devices is not None:
        devices = _resolve_devices(devices, None, "data_parallel")
        mesh = keras.distribution.DeviceMesh(
            shape=(len(devices),), axis_names=[BATCH_AXIS], devices=devices
        )
        return keras.distribution.DataParallel(
            device_mesh=mesh, auto_shard_dataset=auto_shard_dataset
        )
    return keras.distribution.DataParallel(auto_shard_dataset=auto_shard_dataset)


def token_parallel_layout_map(
    device_mesh: keras.distribution.DeviceMesh,
    *,
    shard_embeddings: bool = True,
) -> keras.distribution.LayoutMap:
    """The RankMixer `LayoutMap`: per-token weights and embedding tables sharded on "model".

    Keys are regexes over `variable.path`; values shard the **leading** axis on `"model"`:

    | weights | path | layout |
    |---|---|---|
    | PerTokenFFN kernel_1/kernel_2 `(T, D, H)`/`(T, H, D)` | `.../ffn/kernel_*` | `("model", None, None)` |
    | PerTokenFFN bias_1/bias_2 `(T, H)`/`(T, D)` | `.../ffn/bias_*` | `("model", None)` |
    | FeatureTokenizer kernel `(T, d, D)`, bias `(T, D)` | `tokenizer/kernel`, `tokenizer/bias` | T on model |
    | SparseMoE `expert_*`, `router_*`, `train_router/*`, `infer_router/*` | T leading | `("model",)` + None |
    | embedding tables `(vocabulary + 1, dim)` | `embed_<feature>/embedding/embeddings` | `("model", None)` |

    Rules whose rank is not known in advance (SparseMoE weights) are stored as `("model",)` and
    padded with `None` to the variable's rank by `TokenParallel`; use this map with
    `TokenParallel` (what `model_parallel` returns), not with a bare `ModelParallel`.
    Unmatched variables (LayerNorms, towers, numeric embeddings) and, in `TokenParallel`, every
    non-trainable variable (SparseMoE's `l1_lambda`, active ratios, counters) are replicated.
    """
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[r"(?:.*/)?ffn/(?:kernel_1|kernel_2)"] = (MODEL_AXIS, None, None)
    layout_map[r"(?:.*/)?ffn/(?:bias_1|bias_2)"] = (MODEL_AXIS, None)
    layout_map[r"(?:.*/)?tokenizer/kernel"] = (MODEL_AXIS, None, None)
    layout_map[r"(?:.*/)?tokenizer/bias"] = (MODEL_AXIS, None)
    layout_map[_PER_TOKEN_PATTERNS["sparse_moe_expert"]] = (MODEL_AXIS,)
    layout_map[_PER_TOKEN_PATTERNS["sparse_moe_router"]] = (MODEL_AXIS,)
    if shard_embeddings:
        layout_map[_EMBEDDING_PATTERN] = (MODEL_AXIS, None)
    return layout_map


def _is_per_token(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name in _REPLICATED_NAMES:
        return False
    return any(re.fullmatch(p, path) for p in _PER_TOKEN_PATTERNS.values())


class TokenParallel(keras.distribution.ModelParallel):
    """`keras.distribution.ModelParallel` with RankMixer's token-parallel layout rules and checks.

    On top of `ModelParallel` (layouts looked up in the `LayoutMap` by `variable.path`):

    - a per-token weight whose token axis is not divisible by the `"model"` axis size raises
      `DistributionSetupError` naming the weight, T and the axis size;
    - a per-token rule stored as `("model",)` is padded with `None` to the variable's rank;
    - non-trainable variables (SparseMoE `l1_lambda`, `router_active_ratio`, counters) are
      replicated;
    - per-token paths whose leading axis is not T (the shared-FFN / shared-projection
      ablations, when `num_tokens` is known) are replicated;
    - an embedding table is sharded only when it has at least `embedding_shard_min_rows` rows
      and its row count divides by the `"model"` size; otherwise it is replicated (a warning
      says so for large tables: pad the vocabulary to a multiple of the axis size).

    Use `model_parallel(...)` to build one. The per-variable decisions are recorded in
    `self.decisions` (`{path: "sharded" | "replicated: <why>"}`) for inspection and tests.
    """

    def __init__(
        self,
        *,
        layout_map: keras.distribution.LayoutMap,
        num_tokens: int | None = None,
        embedding_shard_min_rows: int = DEFAULT_EMBEDDING_SHARD_MIN_ROWS,
        **kwargs,
    ) -> None:
        super().__init__(layout_map=layout_map, **kwargs)
        self.num_tokens = num_tokens
        self.embedding_shard_min_rows = embedding_shard_min_rows
        self.model_axis_size = _axis_size(self.device_mesh, MODEL_AXIS)
        self.decisions: dict[str, str] = {}

    def _replicated(self, variable, why: str):
        self.decisions[variable.path] = f"replicated: {why}"
        return keras.distribution.TensorLayout([None] * len(variable.shape), self.device_mesh)

    def get_variable_layout(self, variable):
        if getattr(variable, "_layout", None) is not None:
            return variable._layout
        path, shape = variable.path, tuple(variable.shape)
        layout = self._layout_map[path]
        if layout is None or not shape or path.rsplit("/", 1)[-1] in _REPLICATED_NAMES:
            return self._replicated(variable, "no rule")
        if not variable.trainable:
            # SparseMoE state (l1_lambda, active ratios, counters): tiny, assigned every step.
            return self._replicated(variable, "non-trainable state")
        axes = tuple(layout.axes)
        if len(axes) < len(shape):
            axes = axes + (None,) * (len(shape) - len(axes))
        size = self.model_axis_size
        if re.fullmatch(_EMBEDDING_PATTERN, path):
            rows = shape[0]
            if rows < self.embedding_shard_min_rows:
                return self._replicated(variable, f"{rows} rows < {self.embedding_shard_min_rows}")
            if rows % size:
                warnings.warn(
                    f"embedding table {path!r} has {rows} rows, not divisible by the 'model' "
                    f"axis size {size}: it is replicated. Choose vocabulary_size so that "
                    f"vocabulary_size + 1 is a multiple of {size} to shard it.",
                    stacklevel=2,
                )
                return self._replicated(variable, f"{rows} rows not divisible by {size}")
        elif _is_per_token(path):
            if len(axes) != len(shape):
                return self._replicated(variable, "rank differs from the rule (shared ablation)")
            if self.num_tokens is not None and shape[0] != self.num_tokens:
                return self._replicated(variable, "no token axis (shared ablation)")
            if shape[0] % size:
                raise DistributionSetupError(
                    f"token parallelism: weight {path!r} has T={shape[0]} tokens on its leading "
                    f"axis, not divisible by the 'model' axis size {size}. Choose num_tokens as "
                    f"a multiple of {size}, or a mesh whose model axis divides T."
                )
        elif len(axes) != len(shape):
            return self._replicated(variable, "rank differs from the rule")
        self.decisions[path] = "sharded"
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def _axis_size(mesh: keras.distribution.DeviceMesh, axis: str) -> int:
    return int(mesh.shape[list(mesh.axis_names).index(axis)])


def model_parallel(
    mesh_shape: str | Sequence[int],
    devices: Sequence[str] | None = None,
    *,
    num_tokens: int | None = None,
    shard_embeddings: bool = True,
    embedding_shard_min_rows: int = DEFAULT_EMBEDDING_SHARD_MIN_ROWS,
    auto_shard_dataset: bool = True,
) -> TokenParallel:
    """A `keras.distribution.ModelParallel` over a `("batch", "model")` mesh, token parallel.

    The `LayoutMap` (`token_parallel_layout_map`) shards every per-token weight (PerTokenFFN
    kernels and biases, SparseMoE experts and routers, FeatureTokenizer projection) along its
    token axis T on `"model"`: each of the M model devices owns T/M whole tokens, so the
    per-token matmuls run locally without communication; token mixing (a transpose across
    tokens) and the LayerNorms are where XLA inserts the collectives. Embedding tables with at
    least `embedding_shard_min_rows` rows are sharded along the vocabulary axis.

    Args:
        mesh_shape: `(batch, model)` sizes, or a `"BxM"` string; `B * M` devices are used.
        devices: Device names; None uses the first `B * M` of `keras.distribution.list_devices()`.
        num_tokens: T of the model to be built. When given, checked here (`T % M == 0`); when
            None, the check happens as each per-token weight is created.
        shard_embeddings: Shard large embedding tables on `"model"` (vocabulary axis).
        embedding_shard_min_rows: Smallest table (rows) worth sharding.
        auto_shard_dataset: As in `data_parallel`.

    Returns:
        A `TokenParallel` (a `keras.distribution.ModelParallel`).

    Raises:
        DistributionSetupError: mesh larger than the device count, T not divisible by M,
            non-JAX backend, malformed mesh.

    Example:

    >>> import keras
    >>> if keras.backend.backend() == "jax" and len(keras.distribution.list_devices()) >= 2:
    ...     dist = model_parallel((1, 2), num_tokens=4)
    ...     assert dist.device_mesh.axis_names == ["batch", "model"]
    """
    _require_jax("model_parallel")
    batch, model = parse_mesh(mesh_shape)
    if num_tokens is not None:
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens < 1:
            raise DistributionSetupError(
                f"`num_tokens` must be a positive int or None, got num_tokens={num_tokens!r}."
            )
        if num_tokens % model:
            raise DistributionSetupError(
                f"token parallelism needs num_tokens divisible by the 'model' axis size: "
                f"num_tokens={num_tokens}, mesh_shape=({batch}, {model}). Use a model axis "
                f"that divides {num_tokens} (e.g. {_divisors(num_tokens, batch * model)})."
            )
    if not isinstance(embedding_shard_min_rows, int) or embedding_shard_min_rows < 0:
        raise DistributionSetupError(
            "`embedding_shard_min_rows` must be an int >= 0, got "
            f"embedding_shard_min_rows={embedding_shard_min_rows!r}."
        )
    devices = _resolve_devices(devices, batch * model, f"mesh_shape=({batch}, {model})")
    if len(devices) != batch * model:
        raise DistributionSetupError(
            f"mesh_shape=({batch}, {model}) needs exactly {batch * model} devices, "
            f"got {len(devices)}."
        )
    mesh = keras.distribution.DeviceMesh(
        shape=(batch, model), axis_names=[BATCH_AXIS, MODEL_AXIS], devices=devices
    )
    layout_map = token_parallel_layout_map(mesh, shard_embeddings=shard_embeddings)
    return TokenParallel(
        layout_map=layout_map,
        num_tokens=num_tokens,
        embedding_shard_min_rows=embedding_shard_min_rows,
        batch_dim_name=BATCH_AXIS,
        auto_shard_dataset=auto_shard_dataset,
    )


def _divisors(n: int, at_most: int) -> list[int]:
    return [m for m in range(1, max(1, at_most) + 1) if n % m == 0]


def sharding_specs(model: keras.Model) -> dict[str, tuple]:
    """`{variable.path: PartitionSpec as a tuple}` of the model's weights (JAX backend).

    Read from the live arrays (`variable.value.sharding.spec`), so it shows what really
    happened, not what was asked for. Replicated weights give `()` or all-None tuples.
    """
    _require_jax("sharding_specs")
    specs = {}
    for v in model.weights:
        sharding = getattr(v.value, "sharding", None)
        spec = getattr(sharding, "spec", None)
        specs[v.path] = tuple(spec) if spec is not None else ()
    return specs


def per_device_bytes(variables: Iterable[Any]) -> dict[str, int]:
    """Bytes each device holds for `variables`: `{device: bytes}` from the real shardings.

    Works on the live arrays (JAX backend): for each variable, sums the bytes of the
    addressable shards per device. Pass `model.weights` for the weights and
    `model.optimizer.variables` for the optimizer slots.
    """
    _require_jax("per_device_bytes")
    totals: dict[str, int] = {}
    for v in variables:
        value = getattr(v, "value", v)
        for shard in value.addressable_shards:
            key = str(shard.device)
            totals[key] = totals.get(key, 0) + int(shard.data.size) * shard.data.dtype.itemsize
    return totals


# --------------------------------------------------------------------------- multi-host (JAX)


def _check_coordinator(coordinator: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\s\[\]]+?)\]?:(\d{1,5})", coordinator or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        raise DistributionSetupError(
            f"`coordinator` must be HOST:PORT (e.g. 10.0.0.1:1234), got coordinator={coordinator!r}."
        )
    return match.group(1), int(match.group(2))


def initialize_multi_host(
    coordinator: str,
    num_processes: int,
    process_id: int,
    *,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Join a multi-process JAX run: one call per process, before any JAX computation.

    Wraps `keras.distribution.initialize(coordinator, num_processes, process_id)` (which calls
    `jax.distributed.initialize` and agrees on one random seed across processes). On CPU,
    cross-process collectives need an implementation: `cpu_collectives="gloo"` sets
    `jax_cpu_collectives_implementation` (harmless on GPU/TPU, which use NCCL/ICI).

    Args:
        coordinator: `HOST:PORT` of process 0 (every process passes the same value).
        num_processes: Total number of processes (>= 1).
        process_id: This process, in `[0, num_processes)`; 0 is the coordinator.
        cpu_collectives: `"gloo"` (default), `"mpi"`, or None to leave JAX's setting alone.

    Raises:
        DistributionSetupError: bad arguments or a non-JAX backend.
    """
    _check_coordinator(coordinator)
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise DistributionSetupError(f"`{name}` must be an int, got {name}={value!r}.")
    if num_processes < 1:
        raise DistributionSetupError(f"`num_processes` must be >= 1, got {num_processes}.")
    if not 0 <= process_id < num_processes:
        raise DistributionSetupError(
            f"`process_id` must be in [0, {num_processes}), got process_id={process_id}."
        )
    if cpu_collectives not in (None, "gloo", "mpi"):
        raise DistributionSetupError(
            f"`cpu_collectives` must be 'gloo', 'mpi' or None, got {cpu_collectives!r}."
        )
    _require_jax("initialize_multi_host")
    import jax

    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    keras.distribution.initialize(
        job_addresses=coordinator, num_processes=num_processes, process_id=process_id
    )


def process_shard(items: Sequence[Any], num_processes: int, process_id: int) -> list[Any]:
    """The items (files, rows) process `process_id` of `num_processes` reads: `items[i::n]`.

    Round-robin, so shard sizes differ by at most one. When `len(items)` does not divide by
    `num_processes`, the first `len(items) % num_processes` processes get one item more; for
    files that means some processes see more rows per epoch, so use `steps_per_epoch` (and
    `.repeat()`) to keep every process on the same number of steps, or give every process
    the same number of files. A process with no item is an error (it would hang the
    collective).

    Example:

    >>> process_shard(["a", "b", "c", "d", "e"], 2, 1)
    ['b', 'd']
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise DistributionSetupError(f"`num_processes` must be >= 1, got {num_processes!r}.")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise DistributionSetupError(
            f"`process_id` must be in [0, {num_processes}), got process_id={process_id!r}."
        )
    items = list(items)
    if len(items) < num_processes:
        raise DistributionSetupError(
            f"{len(items)} input item(s) cannot be shared among {num_processes} processes: "
            "every process needs at least one file/shard."
        )
    return items[process_id::num_processes]


# --------------------------------------------------------------------------- TensorFlow backend


def mirrored_strategy(devices: Sequence[str] | None = None):
    """A `tf.distribute.MirroredStrategy` (TensorFlow backend, one host, several devices).

    Build and compile the model under `strategy.scope()` with
    `jit_compile=resolve_jit_compile(...)` (XLA is not supported there by Keras 3 `fit`).

    Args:
        devices: TF device names (e.g. `["/gpu:0", "/gpu:1"]`); None uses all GPUs, or the
            CPU when there is none.
    """
    if _backend() != "tensorflow":
        raise DistributionSetupError(
            f"mirrored_strategy needs KERAS_BACKEND=tensorflow, got {_backend()!r}; on JAX use "
            "data_parallel() or model_parallel()."
        )
    import tensorflow as tf

    if devices is not None:
        devices = list(devices)
        if not devices:
            raise DistributionSetupError("`devices` is empty for mirrored_strategy.")
    return tf.distribute.MirroredStrategy(devices)


def resolve_jit_compile(jit_compile: bool | str = "auto", strategy: Any = None) -> bool | str:
    """The `jit_compile` value to pass to `compile` under the current distribution.

    Under a `tf.distribute` strategy other than the default one (the current scope, or
    `strategy`), XLA is not supported by Keras 3 `fit`: `jit_compile=True` raises
    `DistributionSetupError`, and `"auto"` becomes False. Elsewhere the value is returned
    unchanged.
    """
    if jit_compile not in (True, False, "auto"):
        raise DistributionSetupError(
            f"`jit_compile` must be True, False or 'auto', got jit_compile={jit_compile!r}."
        )
    active = strategy
    if active is None and _backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            active = tf.distribute.get_strategy()
    if active is None:
        return jit_compile
    if jit_compile is True:
        raise DistributionSetupError(
            f"jit_compile=True is not supported under {type(active).__name__} with Keras 3 "
            "`fit` (XLA inside a tf.distribute replica context fails); use jit_compile=False "
            "here, or the JAX backend with data_parallel()/model_parallel() for XLA."
        )
    return False


__all__ = [
    "BATCH_AXIS",
    "DEFAULT_EMBEDDING_SHARD_MIN_ROWS",
    "MODEL_AXIS",
    "DistributionSetupError",
    "TokenParallel",
    "data_parallel",
    "initialize_multi_host",
    "mirrored_strategy",
    "model_parallel",
    "parse_mesh",
    "per_device_bytes",
    "process_shard",
    "resolve_jit_compile",
    "sharding_specs",
    "token_parallel_layout_map",
]

"""Shared pieces of the performance benchmarks (`mfu.py`, `table6.py`, `latency_vs_size.py`).

Everything here is measured the same way on both routes:

- **Inputs are generated on the device, as ids.** Every step draws fresh categorical ids
  (and labels) with the backend's stateless RNG *inside* the compiled step, so no host->device
  transfer and no Python data pipeline is timed; the model still runs its real front-end
  (id lookup, embedding gather, group concat, tokenizer).
- **Warm-up is excluded** (the first calls, which trace/compile, are not timed), every timing is
  the **median over repeats** of a block of `steps` calls ended by a host sync.
- **The matmul peak is measured in the same run, framework and dtype** (a square matmul of
  `peak_size`, the best of the XLA and the non-XLA kernel), *interleaved* with the model
  timings so that both see the same load on a shared machine.

Backends: `KERAS_BACKEND=tensorflow` (a `tf.function` step, `jit_compile` on/off) and
`KERAS_BACKEND=jax` (a `jax.jit` step over `model.stateless_call` with the state donated:
the GPU route).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_rankmixer.features import CategoricalFeature
from keras_rankmixer.flops import count_model

BACKEND = keras.backend.backend()
GROUPS = ("user", "item", "context")


def synthetic_features(
    num_fields: int = 16, vocabulary_size: int = 10_000, embedding_dim: int = 16
) -> list[CategoricalFeature]:
    """`num_fields` int64 id features in three groups (user/item/context), all the same size.

    The default (16 fields x 16 dims = a 256-wide embedding) gives every preset a tokenizer
    slice width of 256 / T.
    """
    return [
        CategoricalFeature(
            f"f{i}",
            vocabulary_size=vocabulary_size,
            embedding_dim=embedding_dim,
            group=GROUPS[i % len(GROUPS)],
        )
        for i in range(num_fields)
    ]


def load_info() -> list[float]:
    """`os.getloadavg()` rounded: the 1/5/15-minute load of this (shared) machine."""
    return [round(x, 2) for x in os.getloadavg()]


def device_name() -> str:
    """A short description of the device the backend computes on."""
    if BACKEND == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform}:{getattr(d, 'device_kind', '')}"
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"GPU:{gpus[0].name}" if gpus else f"CPU x{os.cpu_count()}"


def device_peak_bytes() -> int | None:
    """JAX: the accelerator's peak bytes in use so far in this process (None where the
    device does not report it, e.g. on CPU, or on TensorFlow)."""
    if BACKEND != "jax":
        return None
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


# ----------------------------------------------------------------------------- timing


def median_time(
    fn: Callable[[], object], steps: int, sync: Callable[[object], None]
) -> tuple[float, float]:
    """(wall, cpu) seconds per call of `fn`, over `steps` back-to-back calls and one host sync.

    `cpu` is this process's CPU time (all threads). On a CPU shared with other jobs the wall
    time stretches with the machine's load while the CPU time does not (much), so the ratio
    of two CPU-time throughputs is a load-robust cross-check of the wall-time MFU. On a GPU
    the CPU time means nothing and only the wall time is used.
    """
    start, cpu = time.perf_counter(), time.process_time()
    out = None
    for _ in range(steps):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def interleaved(
    timers: dict[str, Callable[[], tuple[float, float]]], repeats: int, warmup: int = 1
) -> dict[str, list[tuple[float, float]]]:
    """Call every timer `warmup` times (discarded), then `repeats` rounds, interleaved.

    Interleaving (A, B, A, B, ...) rather than (A, A, ..., B, B, ...) makes the model and the
    matmul-peak timings share whatever else the machine is doing at the time.
    """
    for _ in range(warmup):
        for fn in timers.values():
            fn()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in timers}
    for _ in range(repeats):
        for key, fn in timers.items():
            samples[key].append(fn())
    return samples


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def wall(samples: Sequence[tuple[float, float]]) -> list[float]:
    return [w for w, _ in samples]


def cpu(samples: Sequence[tuple[float, float]]) -> list[float]:
    return [c for _, c in samples]


# ----------------------------------------------------------------------------- matmul peak


def _compute_dtype(dtype_policy: str) -> str:
    return keras.dtype_policies.get(dtype_policy).compute_dtype


def matmul_timer(size: int, dtype: str, steps: int, jit: bool) -> Callable[[], tuple[float, float]]:
    """A timer (seconds per `size`^3 matmul) in the benchmark's framework and dtype."""
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((size, size)).astype("float32")
    b_np = rng.standard_normal((size, size)).astype("float32")
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(a_np, dtype)
        b = jnp.asarray(b_np, dtype)
        f = jax.jit(lambda a, b: a @ b)

        def call():
            return f(a, b)

        def sync(out):
            out.block_until_ready()

    else:
        import tensorflow as tf

        a = tf.cast(tf.constant(a_np), dtype)
        b = tf.cast(tf.constant(b_np), dtype)
        f = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=jit)

        def call():
            return f(a, b)

        def sync(out):
            # A 1-element read back: the matmul must have finished, the copy costs nothing.
            out[0, 0].numpy()

    return lambda: median_time(call, steps, sync)


def matmul_flops(size: int) -> float:
    return 2.0 * size**3


# ----------------------------------------------------------------------------- model steps


def build_benchmark_model(config: dict, features, dtype: str, tasks=("click",)) -> keras.Model:
    from keras_rankmixer.models import build_rankmixer

    return build_rankmixer(features, tasks=tasks, dtype=dtype, **config)


def make_optimizer(name: str, learning_rate: float = 1e-3) -> keras.optimizers.Optimizer:
    """`adam` (the package default) or `rmsprop` (the paper's dense-part optimizer)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    raise ValueError(f"`optimizer` must be adam, rmsprop or sgd, got optimizer={name!r}.")


def model_flops_per_sample(model: keras.Model) -> int:
    """Forward matmul FLOPs per sample, by the package's counter."""
    return int(count_model(model)["flops_per_sample"])


class _TFSteps:
    """TensorFlow: `tf.function` train / infer steps with in-graph id generation."""

    def __init__(self, model, features, batch_size, optimizer, jit):
        import tensorflow as tf

        self.tf = tf
        self.model = model
        self.features = list(features)
        self.batch = batch_size
        self.optimizer = optimizer
        self.tasks = list(model.output_names)
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        if optimizer is not None:
            optimizer.build(model.trainable_variables)
        self._train = tf.function(self._train_step, jit_compile=jit)
        self._infer = tf.function(self._infer_step, jit_compile=jit)

    def _inputs(self):
        tf = self.tf
        step = self.counter.assign_add(1)
        feats = {}
        for i, f in enumerate(self.features):
            feats[f.name] = tf.random.stateless_uniform(
                (self.batch,),
                seed=tf.stack([step, tf.constant(i, tf.int64)]),
                minval=0,
                maxval=f.vocabulary_size,
                dtype=tf.int64,
            )
        labels = {
            t: tf.cast(
                tf.random.stateless_uniform(
                    (self.batch, 1), seed=tf.stack([step, tf.constant(10_000 + j, tf.int64)])
                )
                < 0.2,
                "float32",
            )
            for j, t in enumerate(self.tasks)
        }
        return feats, labels

    def _train_step(self):
        tf = self.tf
        feats, labels = self._inputs()
        with tf.GradientTape() as tape:
            out = self.model(feats, training=True)
            loss = tf.add_n(
                [
                    tf.reduce_mean(keras.losses.binary_crossentropy(labels[t], out[t]))
                    for t in self.tasks
                ]
            )
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss

    def _infer_step(self):
        feats, _ = self._inputs()
        out = self.model(feats, training=False)
        return out[self.tasks[0]]

    def train(self):
        return self._train()

    def infer(self):
        return self._infer()

    @staticmethod
    def sync(out):
        np.asarray(out)


class _JAXSteps:
    """JAX: `jax.jit` train / infer steps over `stateless_call`, state donated, ids from
    `jax.random` inside the step."""

    def __init__(self, model, features, batch_size, optimizer, jit, donate=True):
        import jax
        import jax.numpy as jnp

        if not jit:
            raise ValueError("the JAX route always compiles (jit=True); got jit=False.")
        self.jax, self.jnp = jax, jnp
        self.model = model
        self.features = list(features)
        self.batch = batch_size
        self.optimizer = optimizer
        self.tasks = list(model.output_names)
        self.key = jax.random.PRNGKey(0)
        self.tv = [v.value for v in model.trainable_variables]
        self.ntv = [v.value for v in model.non_trainable_variables]
        if optimizer is not None:
            optimizer.build(model.trainable_variables)
            self.ov = [v.value for v in optimizer.variables]
        donate_args = (0, 1, 2, 3) if donate else ()
        self._train = jax.jit(self._train_step, donate_argnums=donate_args)
        self._infer = jax.jit(self._infer_step)

    def _inputs(self, key):
        jax, jnp = self.jax, self.jnp
        keys = jax.random.split(key, len(self.features) + len(self.tasks) + 1)
        feats = {
            f.name: jax.random.randint(keys[i], (self.batch,), 0, f.vocabulary_size, jnp.int32)
            for i, f in enumerate(self.features)
        }
        n = len(self.features)
        labels = {
            t: (jax.random.uniform(keys[n + j], (self.batch, 1)) < 0.2).astype("float32")
            for j, t in enumerate(self.tasks)
        }
        return feats, labels, keys[-1]

    def _loss(self, tv, ntv, feats, labels):
        out, ntv = self.model.stateless_call(tv, ntv, feats, training=True)
        loss = sum(
            self.jnp.mean(keras.losses.binary_crossentropy(labels[t], out[t])) for t in self.tasks
        )
        return loss, ntv

    def _train_step(self, tv, ntv, ov, key):
        feats, labels, key = self._inputs(key)
        (loss, ntv), grads = self.jax.value_and_grad(self._loss, has_aux=True)(
            tv, ntv, feats, labels
        )
        tv, ov = self.optimizer.stateless_apply(ov, grads, tv)
        return tv, ntv, ov, key, loss

    def _infer_step(self, tv, ntv, key):
        feats, _, key = self._inputs(key)
        out, _ = self.model.stateless_call(tv, ntv, feats, training=False)
        return out[self.tasks[0]], key

    def train(self):
        self.tv, self.ntv, self.ov, self.key, loss = self._train(
            self.tv, self.ntv, self.ov, self.key
        )
        return loss

    def infer(self):
        out, self.key = self._infer(self.tv, self.ntv, self.key)
        return out

    @staticmethod
    def sync(out):
        out.block_until_ready()


def make_steps(model, features, batch_size, optimizer=None, jit=True, donate=True):
    """Backend-specific `.train()` / `.infer()` / `.sync(out)` for `model` at `batch_size`."""
    if BACKEND == "jax":
        return _JAXSteps(model, features, batch_size, optimizer, jit, donate=donate)
    if BACKEND == "tensorflow":
        return _TFSteps(model, features, batch_size, optimizer, jit)
    raise RuntimeError(f"benchmarks support KERAS_BACKEND=tensorflow or jax, not {BACKEND!r}.")


def step_timer(steps_obj, mode: str, steps: int) -> Callable[[], tuple[float, float]]:
    fn = steps_obj.train if mode == "train" else steps_obj.infer
    return lambda: median_time(fn, steps, steps_obj.sync)


# ----------------------------------------------------------------------------- matmul ceiling


def ffn_matmul_flops(num_layers, num_tokens, token_dim, hidden, batch, mode) -> float:
    """FLOPs of the per-token FFN matmuls of one step: 2 (forward) or 6 (train) per layer."""
    per = 2 * batch * num_tokens * token_dim * hidden
    return num_layers * per * (2 if mode == "infer" else 6)


def ffn_matmul_timer(num_layers, num_tokens, token_dim, hidden, batch, dtype, jit, mode):
    """`factory(calls)` timing only the model's per-token FFN matmuls (no GELU, LayerNorm,
    embeddings or optimizer), at the model's shapes, as token-major batched matmuls.

    Training runs the 6 matmuls of forward + backward per layer (`x W1`, `h W2`, `dO W2^T`,
    `h^T dO`, `dH W1^T`, `x^T dH`); inference the 2 forward ones. Their throughput is the
    ceiling the whole step's MFU can approach on these shapes.
    """
    from keras import ops

    rng = np.random.default_rng(0)

    def arr(*shape):
        return ops.cast(ops.convert_to_tensor(rng.standard_normal(shape).astype("float32")), dtype)

    t, d, h, b = num_tokens, token_dim, hidden, batch
    x, w1, w2, d_o = arr(t, b, d), arr(t, d, h), arr(t, h, d), arr(t, b, d)

    def body(x, w1, w2, d_o):
        out = x
        for _ in range(num_layers):
            hid = ops.matmul(out, w1)
            out = ops.matmul(hid, w2)
            if mode == "train":
                d_h = ops.matmul(d_o, ops.swapaxes(w2, 1, 2))
                d_w2 = ops.matmul(ops.swapaxes(hid, 1, 2), d_o)
                d_x = ops.matmul(d_h, ops.swapaxes(w1, 1, 2))
                d_w1 = ops.matmul(ops.swapaxes(out, 1, 2), d_h)
                # Keep every product live (the sums cost nothing next to the matmuls).
                out = out + d_x + (ops.sum(d_w2) + ops.sum(d_w1)) * 1e-12
        return out

    if BACKEND == "jax":
        import jax

        fn = jax.jit(body)

        def sync(o):
            o.block_until_ready()

    else:
        import tensorflow as tf

        fn = tf.function(body, jit_compile=jit)

        def sync(o):
            np.asarray(o[0, 0, 0])

    return lambda calls: lambda: median_time(lambda: fn(x, w1, w2, d_o), calls, sync)


# ----------------------------------------------------------------------------- measure


def steps_for(timer_one, seconds: float) -> int:
    """Calls per timed block so that one block lasts about `seconds` (after a warm-up call)."""
    t = timer_one()[0]
    return max(1, math.ceil(seconds / max(t, 1e-6)))


def measure(
    entries: dict,
    compute_dtype: str,
    peak_size: int = 2048,
    seconds: float = 1.0,
    repeats: int = 7,
    extra_peak_dtypes: Sequence[str] = (),
    extra_timers: dict | None = None,
) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """Interleaved timings of model steps and of the matmul peak kernels.

    Args:
        entries: `{key: (steps_object, "train" | "infer")}` (from `make_steps`).
        compute_dtype: dtype of the peak matmul (the models' compute dtype).
        peak_size: square matmul size of the peak.
        seconds: target length of one timed block.
        repeats: timed rounds; every round times every entry and every peak kernel once.
        extra_peak_dtypes: more dtypes to time the peak matmul in (keys `peak_<kernel>_<dtype>`,
            e.g. the float32 peak next to a bf16 model).
        extra_timers: `{key: factory}` where `factory(calls)` returns a timer of `calls`
            back-to-back calls (e.g. `ffn_matmul_timer`), timed in the same rounds.

    Returns:
        `(samples, peak_keys)`: `samples[key]` lists `(wall, cpu)` seconds per call;
        `peak_keys` are the keys of the `compute_dtype` peak kernels.
    """
    # Peak kernels: on TF the XLA and the non-XLA matmul; the faster median is the peak.
    peak_kernels = {"xla": True} if BACKEND == "jax" else {"xla": True, "eager": False}
    timers = {}
    for dt in [compute_dtype, *[d for d in extra_peak_dtypes if d != compute_dtype]]:
        suffix = "" if dt == compute_dtype else f"_{dt}"
        for name, kjit in peak_kernels.items():
            probe = matmul_timer(peak_size, dt, 1, kjit)
            probe()  # compile
            timers[f"peak_{name}{suffix}"] = matmul_timer(
                peak_size, dt, steps_for(probe, seconds / 2), kjit
            )
    for key, (steps_obj, mode) in entries.items():
        probe = step_timer(steps_obj, mode, 1)
        probe()  # trace + compile
        probe()
        timers[key] = step_timer(steps_obj, mode, steps_for(probe, seconds))
    for key, factory in (extra_timers or {}).items():
        probe = factory(1)
        probe()  # trace + compile
        timers[key] = factory(steps_for(probe, seconds))
    samples = interleaved(timers, repeats, warmup=1)
    return samples, [f"peak_{name}" for name in peak_kernels]


def summarize(samples, peak_keys, key, mode, batch_size, forward_flops, peak_size) -> dict:
    """Throughput, latency and MFU of `samples[key]` against the interleaved matmul peak.

    A training step counts `3 x forward_flops` per sample (forward + two backward matmuls).
    """
    mm = matmul_flops(peak_size)
    peak_wall = {k: med(wall(samples[k])) for k in peak_keys}
    best = min(peak_wall, key=peak_wall.get)
    peak = mm / peak_wall[best]
    peak_cpu = mm / med(cpu(samples[best]))
    t = med(wall(samples[key]))
    t_cpu = med(cpu(samples[key]))
    flops_per_sample = (3 if mode == "train" else 1) * forward_flops
    sps = batch_size / t
    fps = sps * flops_per_sample
    # MFU of each round against the best peak kernel timed right next to it (noise check).
    paired = [
        batch_size * flops_per_sample / w / (mm / min(samples[k][i][0] for k in peak_keys))
        for i, (w, _) in enumerate(samples[key])
    ]
    return {
        "mode": mode,
        "step_ms": t * 1e3,
        "step_ms_min": min(wall(samples[key])) * 1e3,
        "samples_per_s": sps,
        "flops_per_sample": flops_per_sample,
        "flops_per_s": fps,
        "peak_flops_per_s": peak,
        "peak_kernel": best,
        "peak_flops_per_s_by_kernel": {k: mm / v for k, v in peak_wall.items()},
        "mfu": fps / peak,
        "mfu_paired_median": med(paired),
        # Load-robust cross-check: achieved FLOPs per CPU-second over the peak's.
        "mfu_cpu_time": (batch_size * flops_per_sample / t_cpu) / peak_cpu,
        "cpu_per_wall": t_cpu / t,
    }


# ----------------------------------------------------------------------------- profile


def profile_step(steps_obj, mode: str, calls: int, logdir: str) -> dict:
    """Trace `calls` steps with the backend's profiler and sum the compiled ops' time.

    Returns `{"per_step_ms": {category: ms}, "top": [(op, ms per step), ...]}` where the
    categories are `dot` (XLA `MatMul`/dot/ynn thunks), `reduce` (reductions, e.g.
    LayerNorm moments), `fusion` (element-wise fusions: GELU, bias, LayerNorm, optimizer) and
    `other`. Times are summed over threads (two ops may run at once), per step.
    """
    fn = steps_obj.train if mode == "train" else steps_obj.infer
    steps_obj.sync(fn())  # warm
    if BACKEND == "jax":
        import jax

        with jax.profiler.trace(logdir):
            for _ in range(calls):
                out = fn()
            steps_obj.sync(out)
    else:
        import tensorflow as tf

        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            out = fn()
        steps_obj.sync(out)
        tf.profiler.experimental.stop()
    return summarize_xplane(logdir, calls)


def _op_category(name: str) -> str:
    base = name.lower()
    if base.startswith("matmul") or "dot" in base or "ynn" in base or "einsum" in base:
        return "dot"
    if "reduce" in base:
        return "reduce"
    if "fusion" in base or base.startswith(("copy", "transpose", "gather", "scatter")):
        return "fusion"
    return "other"


def summarize_xplane(logdir: str, calls: int) -> dict:
    """Leaf XLA op time per step from the newest `*.xplane.pb` under `logdir`."""
    import collections
    import glob
    import re

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    skip = ("ThunkExecutor", "SlinkyThreadPool", "ParallelLoopRunner", "Thunk::")
    ops = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU") and "/device:" not in plane.name:
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if line.name in ("python", "Python", "XLA Modules", "Steps"):
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if name.startswith(skip) or " " in name or "::" in name:
                    continue
                ops[re.sub(r"\.\d+$", "", name)] += ev.duration_ps
    per_step = collections.Counter()
    for name, ps in ops.items():
        per_step[_op_category(name)] += ps / 1e9 / calls
    return {
        "per_step_ms": dict(per_step.most_common()),
        "top": [(n, ps / 1e9 / calls) for n, ps in ops.most_common(12)],
    }


# ----------------------------------------------------------------------------- output


def print_table(rows: list[dict], columns: Sequence[str]) -> None:
    """A Markdown table of `rows` restricted to `columns`."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")


def with_display_columns(rows: list[dict]) -> list[dict]:
    """Rows plus the human-scaled columns the MFU tables print (M params, MFLOPs, MFU %)."""
    return [
        {
            **r,
            "dense params (M)": r["dense_params"] / 1e6,
            "MFLOPs/sample": r["flops_per_sample"] / 1e6,
            "MFU %": 100 * r["mfu"],
            "MFU % cpu-time": 100 * r["mfu_cpu_time"],
        }
        for r in rows
    ]


def print_json(payload: dict) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(payload, sort_keys=True, default=float))

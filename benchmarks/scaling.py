"""Scale-out numbers: per-device memory under token-parallel model parallelism, and step time
versus device count on virtual CPU devices.

Part `memory` (64 virtual CPU devices, nothing allocated): builds the 100M, 1B and a 10B
RankMixer with a large-table feature set inside `keras.StatelessScope(initialize_variables=
False)` (variables get their paths and shapes, no values), asks the real distribution
(`data_parallel` / `model_parallel`, i.e. the `LayoutMap` + `TokenParallel` rules Keras uses
when it creates the variables) for each variable's layout, and takes the exact per-device
shard shape from the JAX `NamedSharding`. Reports per device: dense weights, embedding
tables, Adam slots (2 per trainable variable, same layout as the variable: Keras creates
them with `add_variable_from_reference`, which copies the layout), and the gradient bytes
all-reduced per step (ring all-reduce: each device sends and receives `2 (n - 1) / n` x
the bytes reduced over the `n` replicas of its shard; fp32 gradients).

Part `steps` (4 virtual CPU devices): median `train_on_batch` time of the `small` preset
with no distribution, DataParallel on 1/2/4 devices and ModelParallel 1x2, 2x2, 1x4. The
virtual devices share this machine's CPU cores, so this is an overhead check, not a speed
claim; on a shared machine the CPU time per step (all threads of the process) is the steadier
number. It also cross-checks the `memory` method: for ModelParallel 1x4 the predicted
per-device bytes must equal the bytes of the live arrays' shards.

Usage:

    nice -n 10 .venv/bin/python benchmarks/scaling.py            # both parts (subprocesses)
    .venv/bin/python benchmarks/scaling.py --part memory
    .venv/bin/python benchmarks/scaling.py --part steps --steps 10

Prints tables and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = {"memory": 64, "steps": 4}

# A 10B RankMixer: T=64, D=3072 (head width D/T = 48 as in the paper), L=2,
# H_ffn=12800 (a multiple of 128): 2 * L * T * D * H_ffn = 10.07e9 block parameters.
CONFIG_10B = {
    "num_tokens": 64,
    "token_dim": 3072,
    "num_layers": 2,
    "hidden_ratio": 12800 / 3072,
    "hidden_dim": 12800,
}
CONFIGS = {"100m": "rankmixer_100m", "1b": "rankmixer_1b", "10b": CONFIG_10B}
# (kind, (batch, model)): 8 GPUs = one host, 64 GPUs = 8 hosts of 8.
PLANS = [
    ("dp", (8, 1)),
    ("mp", (1, 8)),
    ("mp", (2, 4)),
    ("dp", (64, 1)),
    ("mp", (8, 8)),
]


def _env(devices: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def benchmark_features():
    """A large-table feature set: 3 id tables of 2^24, 2^22, 2^20 rows, 24 small fields."""
    from keras_rankmixer.features import CategoricalFeature, NumericFeature

    feats = [
        CategoricalFeature("user_id", vocabulary_size=2**24 - 1, embedding_dim=64, group="user"),
        CategoricalFeature("item_id", vocabulary_size=2**22 - 1, embedding_dim=64, group="item"),
        CategoricalFeature("author_id", vocabulary_size=2**20 - 1, embedding_dim=32, group="item"),
    ]
    for i in range(16):
        group = ("user", "item", "context")[i % 3]
        feats.append(
            CategoricalFeature(f"field_{i}", vocabulary_size=1023, embedding_dim=16, group=group)
        )
    for i in range(8):
        feats.append(NumericFeature(f"stat_{i}", embedding_dim=16, group="context"))
    return feats


def predicted_bytes(variables, dist) -> dict:
    """Per-device bytes from the distribution's layouts (exact shard shapes, no values)."""
    import math

    mesh = dist.device_mesh
    axes = list(mesh.axis_names)
    out = {"dense": 0, "embedding": 0, "optimizer": 0, "allreduce": 0, "sharded": 0, "total": 0}
    for v in variables:
        layout = dist.get_variable_layout(v)
        sharding = layout.backend_layout
        shard = sharding.shard_shape(tuple(v.shape))
        nbytes = math.prod(shard) * 4  # float32 weights
        kind = "embedding" if v.path.endswith("/embeddings") else "dense"
        out[kind] += nbytes
        if any(a is not None for a in layout.axes):
            out["sharded"] += 1
        if v.trainable:
            out["optimizer"] += 2 * nbytes  # Adam momentum + velocity, same layout
            # Replicas of this shard: devices along the axes it is NOT sharded on.
            used = {a for a in layout.axes if a is not None}
            replicas = math.prod(int(mesh.shape[i]) for i, a in enumerate(axes) if a not in used)
            out["allreduce"] += int(2 * (replicas - 1) / replicas * nbytes) if replicas > 1 else 0
    out["total"] = out["dense"] + out["embedding"] + out["optimizer"]
    return out


def part_memory() -> list[dict]:
    import keras

    from keras_rankmixer import distribution as D
    from keras_rankmixer.flops import count_model
    from keras_rankmixer.models import build_from_preset, build_rankmixer

    feats = benchmark_features()
    rows = []
    for name, config in CONFIGS.items():
        t0 = time.time()
        with keras.StatelessScope(initialize_variables=False):
            if isinstance(config, str):
                model = build_from_preset(config, feats)
            else:
                model = build_rankmixer(feats, **config)
        stats = count_model(model)
        num_tokens = model.get_layer("tokenizer").num_tokens
        for kind, (b, m) in PLANS:
            n = b * m
            dist = (
                D.data_parallel([f"cpu:{i}" for i in range(n)])
                if kind == "dp"
                else D.model_parallel((b, m), num_tokens=num_tokens, embedding_shard_min_rows=65536)
            )
            got = predicted_bytes(model.weights, dist)
            rows.append(
                {
                    "config": name,
                    "dense_params": stats["dense_params"],
                    "embedding_params": stats["embedding_params"],
                    "devices": n,
                    "plan": f"{kind} {b}x{m}",
                    "dense_GB": got["dense"] / 1e9,
                    "embedding_GB": got["embedding"] / 1e9,
                    "adam_GB": got["optimizer"] / 1e9,
                    "total_GB": got["total"] / 1e9,
                    "allreduce_GB_per_step": got["allreduce"] / 1e9,
                    "sharded_vars": got["sharded"],
                }
            )
        print(f"[memory] {name}: built abstractly in {time.time() - t0:.1f}s", file=sys.stderr)
        keras.backend.clear_session()
    return rows


def part_steps(steps: int, batch_size: int) -> tuple[list[dict], dict]:
    import keras
    import numpy as np

    from keras_rankmixer import distribution as D
    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.models import build_from_preset

    data = make_click_data(batch_size, seed=0, max_vocab=4095)
    x, y = data.features, data.labels
    setups = [
        ("none", None),
        ("dp 1", lambda: D.data_parallel(["cpu:0"])),
        ("dp 2", lambda: D.data_parallel(["cpu:0", "cpu:1"])),
        ("dp 4", lambda: D.data_parallel()),
        ("mp 1x2", lambda: D.model_parallel((1, 2), num_tokens=16, embedding_shard_min_rows=0)),
        ("mp 2x2", lambda: D.model_parallel((2, 2), num_tokens=16, embedding_shard_min_rows=0)),
        ("mp 1x4", lambda: D.model_parallel((1, 4), num_tokens=16, embedding_shard_min_rows=0)),
    ]
    rows, check = [], {}
    for label, make in setups:
        keras.utils.set_random_seed(0)
        dist = make() if make else None
        keras.distribution.set_distribution(dist)
        model = build_from_preset("small", data.specs)
        model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        compile_s = time.perf_counter() - t0
        for _ in range(2):
            model.train_on_batch(x, y)
        times, cpu = [], []
        for _ in range(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rows.append(
            {
                "setup": label,
                "devices": 1 if dist is None else int(np.prod(dist.device_mesh.shape)),
                "batch": batch_size,
                "median_step_ms": 1e3 * float(np.median(times)),
                "min_step_ms": 1e3 * float(np.min(times)),
                "median_step_cpu_ms": 1e3 * float(np.median(cpu)),
                "first_step_s": compile_s,
                "load1": os.getloadavg()[0],
            }
        )
        print(f"[steps] {label}: {rows[-1]['median_step_ms']:.1f} ms", file=sys.stderr)
        if label == "mp 1x4":
            live = D.per_device_bytes([v for v in model.weights])
            pred = predicted_bytes(model.weights, dist)
            check = {
                "live_bytes_per_device": sorted(set(live.values())),
                "predicted_weight_bytes": pred["dense"] + pred["embedding"],
                "equal": sorted(set(live.values())) == [pred["dense"] + pred["embedding"]],
            }
        keras.distribution.set_distribution(None)
        keras.backend.clear_session()
    return rows, check


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    fmt = [
        (
            lambda v: (
                f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
            )
        )
        for _ in cols
    ]
    cells = [[f(r[c]) for f, c in zip(fmt, cols, strict=True)] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("all", "memory", "steps"), default="all")
    p.add_argument("--steps", type=int, default=10, help="timed steps per set-up")
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args(argv)
    if args.part == "all":
        result = {}
        for part in ("memory", "steps"):
            cmd = [sys.executable, os.path.abspath(__file__), "--part", part]
            cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
            proc = subprocess.run(
                cmd, env=_env(DEVICES[part]), capture_output=True, text=True, check=False
            )
            sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
            if proc.returncode:
                return proc.returncode
            lines = proc.stdout.strip().splitlines()
            print("\n".join(lines[:-1]))
            result.update(json.loads(lines[-1]))
        print(json.dumps(result))
        return 0
    import keras

    if (
        keras.backend.backend() != "jax"
        or len(keras.distribution.list_devices()) < DEVICES[args.part]
    ):
        print(
            f"--part {args.part} needs KERAS_BACKEND=jax and XLA_FLAGS="
            f"--xla_force_host_platform_device_count={DEVICES[args.part]} (or run --part all).",
            file=sys.stderr,
        )
        return 2
    if args.part == "memory":
        rows = part_memory()
        print("\nPer-device memory (fp32 weights, Adam), exact from the layouts:")
        print_table(rows)
        print(json.dumps({"memory": rows}))
    else:
        rows, check = part_steps(args.steps, args.batch_size)
        print("\nStep time vs device count ('small' preset; virtual CPU devices, shared cores):")
        print_table(rows)
        print(f"\nmp 1x4 live vs predicted per-device weight bytes: {check}")
        print(json.dumps({"steps": rows, "memory_method_check": check}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

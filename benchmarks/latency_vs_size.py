"""Inference latency at a fixed batch for growing RankMixer sizes (tiny -> small -> 100M -> 1B).

The paper's scaling claim is that latency grows far slower than parameters because MFU rises
with size. For each preset: dense params, forward FLOPs per sample, latency of one batch
(median over interleaved repeats, ids generated on the device), MFU against the matmul peak
measured in the same run, and the growth of params and latency relative to the first preset.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/latency_vs_size.py --batch-size 256 \
        --presets tiny,small,rankmixer_100m
    KERAS_BACKEND=jax python benchmarks/latency_vs_size.py --batch-size 4096 \
        --presets tiny,small,rankmixer_100m,rankmixer_1b --dtype mixed_bfloat16   # GPU route
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from keras_rankmixer.flops import count_model  # noqa: E402
from keras_rankmixer.models.presets import get_preset  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="tiny,small,rankmixer_100m")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dtype", choices=("float32", "mixed_bfloat16", "bfloat16"), default="float32")
    p.add_argument("--jit", choices=("on", "off"), default="on")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--fields", type=int, default=16)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--embedding-dim", type=int, default=16)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    keras.utils.set_random_seed(0)
    features = C.synthetic_features(args.fields, args.vocab, args.embedding_dim)
    presets = [p for p in args.presets.split(",") if p]
    jit = args.jit == "on" or C.BACKEND == "jax"
    models = {p: C.build_benchmark_model(get_preset(p), features, args.dtype) for p in presets}
    load_before = C.load_info()
    entries = {
        p: (C.make_steps(m, features, args.batch_size, None, jit=jit), "infer")
        for p, m in models.items()
    }
    compute_dtype = keras.dtype_policies.get(args.dtype).compute_dtype
    samples, peak_keys = C.measure(
        entries, compute_dtype, peak_size=args.peak_size, seconds=args.seconds, repeats=args.repeats
    )
    rows = []
    for p, model in models.items():
        stats = count_model(model)
        r = C.summarize(
            samples,
            peak_keys,
            p,
            "infer",
            args.batch_size,
            stats["flops_per_sample"],
            args.peak_size,
        )
        rows.append(
            {
                "preset": p,
                "params": stats["params"],
                "dense_params": stats["dense_params"],
                "flops_per_sample": stats["flops_per_sample"],
                "latency_ms": r["step_ms"],
                "samples_per_s": r["samples_per_s"],
                "flops_per_s": r["flops_per_s"],
                "peak_flops_per_s": r["peak_flops_per_s"],
                "mfu": r["mfu"],
                "mfu_cpu_time": r["mfu_cpu_time"],
            }
        )
    first = rows[0]
    for r in rows:
        r["x_dense_params"] = r["dense_params"] / first["dense_params"]
        r["x_latency"] = r["latency_ms"] / first["latency_ms"]
    print(
        f"# backend={C.BACKEND} device={C.device_name()} batch={args.batch_size} "
        f"dtype={args.dtype} jit={jit} peak={rows[0]['peak_flops_per_s'] / 1e9:.1f} GFLOP/s; "
        f"loadavg {load_before} -> {C.load_info()}"
    )
    C.print_table(
        C.with_display_columns(rows),
        [
            "preset",
            "dense params (M)",
            "MFLOPs/sample",
            "latency_ms",
            "MFU %",
            "MFU % cpu-time",
            "x_dense_params",
            "x_latency",
        ],
    )
    last = rows[-1]
    payload = {
        "benchmark": "latency_vs_size",
        "backend": C.BACKEND,
        "device": C.device_name(),
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "jit": jit,
        "rows": rows,
        "params": last["params"],
        "flops_per_sample": last["flops_per_sample"],
        "samples_per_s": last["samples_per_s"],
        "flops_per_s": last["flops_per_s"],
        "peak_flops_per_s": last["peak_flops_per_s"],
        "mfu": last["mfu"],
        "repeats": args.repeats,
        "loadavg_before": load_before,
        "loadavg": C.load_info(),
    }
    C.print_json(payload)
    return payload


def main(argv=None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

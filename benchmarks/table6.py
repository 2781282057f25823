"""The paper's Table 6 on this machine: a DCNv2 (or DNN) baseline vs RankMixer at ~100x its
dense parameters, side by side in one run.

For each model: dense and total params, forward FLOPs per sample (the package's counter),
inference latency of one batch of a fixed size (median over interleaved repeats, ids generated
on the device), samples/s, and MFU against the matmul peak measured in the same run. The paper's
point (Table 6): 70x the parameters, 20.7x the FLOPs, MFU 4.47% -> 44.57%, latency flat
(14.5 -> 14.3 ms), since `latency = params x FLOPs/param / (MFU x peak)`. The ratios printed
last (`x params`, `x flops`, `x mfu`, `x latency`) are that equation's terms.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/table6.py --batch-size 512
    KERAS_BACKEND=jax python benchmarks/table6.py --batch-size 4096 \
        --rankmixer-preset rankmixer_1b --rankmixer-dtype mixed_bfloat16   # the GPU route
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from keras_rankmixer.flops import count_model  # noqa: E402
from keras_rankmixer.models.presets import get_preset  # noqa: E402


def build_baseline(kind: str, features, hidden_units, num_cross_layers, dtype) -> keras.Model:
    """The team's baseline builders when present, else the same model built here."""
    try:
        from keras_rankmixer.models import baselines
    except ImportError:  # pragma: no cover - baselines.py lands separately
        baselines = None
    if baselines is not None:
        if kind == "dnn":
            return baselines.build_dnn(features, hidden_units=hidden_units, dtype=dtype)
        return baselines.build_dcnv2(
            features, num_cross_layers=num_cross_layers, hidden_units=hidden_units, dtype=dtype
        )
    import keras_rs

    from keras_rankmixer.features import build_inputs, embed_groups
    from keras_rankmixer.models.rankmixer import add_task_towers

    inputs = build_inputs(features)
    x0 = keras.layers.Concatenate(dtype=dtype)(embed_groups(inputs, features, dtype=dtype))
    deep = x0
    for units in hidden_units:
        deep = keras.layers.Dense(units, activation="relu", dtype=dtype)(deep)
    out = deep
    if kind == "dcnv2":
        cross = x0
        for _ in range(num_cross_layers):
            cross = keras_rs.layers.FeatureCross(dtype=dtype)(x0, cross)
        out = keras.layers.Concatenate(dtype=dtype)([cross, deep])
    return keras.Model(inputs, add_task_towers(out, ["click"], (), dtype=dtype), name=kind)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", choices=("dcnv2", "dnn"), default="dcnv2")
    p.add_argument("--baseline-hidden", default="512,512,512", help="MLP widths of the baseline")
    p.add_argument("--cross-layers", type=int, default=3)
    p.add_argument("--baseline-dtype", default="float32")
    p.add_argument("--rankmixer-preset", default="rankmixer_100m")
    p.add_argument("--rankmixer-config", default=None, help="JSON overrides of the preset")
    p.add_argument("--rankmixer-dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--jit", choices=("on", "off"), default="on")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--fields", type=int, default=16)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--embedding-dim", type=int, default=16)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    keras.utils.set_random_seed(0)
    features = C.synthetic_features(args.fields, args.vocab, args.embedding_dim)
    hidden = tuple(int(u) for u in args.baseline_hidden.split(",") if u)
    config = get_preset(args.rankmixer_preset)
    if args.rankmixer_config:
        config.update(json.loads(args.rankmixer_config))
    models = {
        args.baseline: (
            build_baseline(args.baseline, features, hidden, args.cross_layers, args.baseline_dtype),
            args.baseline_dtype,
        ),
        f"rankmixer({args.rankmixer_preset})": (
            C.build_benchmark_model(config, features, args.rankmixer_dtype),
            args.rankmixer_dtype,
        ),
    }
    dtypes = {keras.dtype_policies.get(d).compute_dtype for _, d in models.values()}
    # The peak is measured in the fastest dtype used (the stricter MFU for mixed runs).
    peak_dtype = "bfloat16" if "bfloat16" in dtypes else "float32"
    jit = args.jit == "on" or C.BACKEND == "jax"
    load_before = C.load_info()
    entries = {
        name: (C.make_steps(model, features, args.batch_size, None, jit=jit), "infer")
        for name, (model, _) in models.items()
    }
    samples, peak_keys = C.measure(
        entries, peak_dtype, peak_size=args.peak_size, seconds=args.seconds, repeats=args.repeats
    )
    rows = []
    for name, (model, dtype) in models.items():
        stats = count_model(model)
        r = C.summarize(
            samples,
            peak_keys,
            name,
            "infer",
            args.batch_size,
            stats["flops_per_sample"],
            args.peak_size,
        )
        rows.append(
            {
                "model": name,
                "dtype": dtype,
                "params": stats["params"],
                "dense_params": stats["dense_params"],
                "flops_per_sample": stats["flops_per_sample"],
                "latency_ms": r["step_ms"],
                "samples_per_s": r["samples_per_s"],
                "flops_per_s": r["flops_per_s"],
                "peak_flops_per_s": r["peak_flops_per_s"],
                "mfu": r["mfu"],
                "mfu_paired_median": r["mfu_paired_median"],
                "mfu_cpu_time": r["mfu_cpu_time"],
            }
        )
    base, rm = rows
    ratios = {
        "x_dense_params": rm["dense_params"] / base["dense_params"],
        "x_flops": rm["flops_per_sample"] / base["flops_per_sample"],
        "x_mfu": rm["mfu"] / base["mfu"],
        "x_latency": rm["latency_ms"] / base["latency_ms"],
    }
    print(
        f"# backend={C.BACKEND} device={C.device_name()} batch={args.batch_size} jit={jit} "
        f"peak dtype={peak_dtype} peak={rows[0]['peak_flops_per_s'] / 1e9:.1f} GFLOP/s; "
        f"loadavg {load_before} -> {C.load_info()}"
    )
    C.print_table(
        C.with_display_columns(rows),
        [
            "model",
            "dtype",
            "dense params (M)",
            "MFLOPs/sample",
            "latency_ms",
            "samples_per_s",
            "MFU %",
            "MFU % cpu-time",
        ],
    )
    print(
        "# ratios (RankMixer / baseline): "
        + ", ".join(f"{k[2:]} x{v:.2f}" for k, v in ratios.items())
    )
    payload = {
        "benchmark": "table6",
        "backend": C.BACKEND,
        "device": C.device_name(),
        "batch_size": args.batch_size,
        "jit": jit,
        "models": rows,
        **ratios,
        # The top-level keys of mfu.py, for the RankMixer row.
        "params": rm["params"],
        "flops_per_sample": rm["flops_per_sample"],
        "samples_per_s": rm["samples_per_s"],
        "flops_per_s": rm["flops_per_s"],
        "peak_flops_per_s": rm["peak_flops_per_s"],
        "mfu": rm["mfu"],
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

"""Model FLOP utilisation (MFU) of RankMixer training and inference steps.

Measures in one run (1) this machine's matmul peak in the same framework and dtype and
(2) the training-step and/or inference throughput of a preset (or config), interleaved, and
prints a table and, last, one JSON line with `params`, `flops_per_sample`, `samples_per_s`,
`flops_per_s`, `peak_flops_per_s`, `mfu` (and more).

FLOPs are the package's counter (`keras_rankmixer.flops.count_model`: forward matmul FLOPs,
2 per multiply-add, tokenizer + per-token FFNs + towers; embedding gathers, GELU, LayerNorm and
token mixing are not counted). A training step counts 3x the forward FLOPs (forward, and the
two matmuls of the backward pass). MFU = achieved FLOP/s / measured matmul peak.

Usage (CPU, TensorFlow backend):

    KERAS_BACKEND=tensorflow python benchmarks/mfu.py --preset small --batch-size 512 \
        --mode train --jit on --dtype float32

GPU route (JAX backend, XLA, bf16):

    KERAS_BACKEND=jax python benchmarks/mfu.py --preset rankmixer_1b --batch-size 4096 \
        --mode train --dtype mixed_bfloat16

See `benchmarks/RESULTS.md` for measurements and `docs/performance.md` for the levers tried.
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
from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim  # noqa: E402
from keras_rankmixer.models.presets import get_preset  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="small", help="preset name (keras_rankmixer PRESETS)")
    p.add_argument(
        "--config",
        default=None,
        help='JSON overrides of the preset, e.g. \'{"num_layers": 4, "hidden_dim": 512}\'',
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--mode", choices=("train", "infer", "both"), default="train")
    p.add_argument("--dtype", choices=("float32", "mixed_bfloat16", "bfloat16"), default="float32")
    p.add_argument(
        "--jit",
        choices=("on", "off"),
        default="on",
        help="XLA for the model step (TensorFlow only; JAX always compiles)",
    )
    p.add_argument("--optimizer", choices=("adam", "rmsprop", "sgd"), default="adam")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    p.add_argument("--seconds", type=float, default=1.0, help="target length of one timed block")
    p.add_argument("--peak-size", type=int, default=2048, help="square matmul size for the peak")
    p.add_argument("--fields", type=int, default=16, help="synthetic id features")
    p.add_argument("--vocab", type=int, default=10_000, help="vocabulary size of every feature")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument(
        "--fp32-peak",
        action="store_true",
        help="with a bf16 dtype, also time the float32 peak and report MFU against it",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the FFN matmuls alone and the model without GELU / LayerNorm / Adam",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="after the timings, trace 3 steps into DIR and print where the op time goes",
    )
    p.add_argument("--no-donate", action="store_true", help="JAX: do not donate the step state")
    p.add_argument(
        "--ffn-activation",
        choices=("gelu", "gelu_tanh"),
        default="gelu",
        help="PerTokenFFN activation: exact (erf) GELU, or its tanh approximation (a lever)",
    )
    p.add_argument("--tag", default="", help="free text copied into the JSON line")
    return p.parse_args(argv)


def breakdown_entries(config, features, args, modes, entries, jit):
    """Extra timers for `--breakdown`: the FFN matmuls alone, and model variants.

    Each variant removes one piece of work from the same model (the GELU, the LayerNorms, the
    token-mixing copies, the Adam state update); its step-time saving is that piece's cost. Returns
    `(entries, extra_timers, variant_flops)`.
    """
    entries = dict(entries)
    hidden = resolve_hidden_dim(
        config["token_dim"], config.get("hidden_ratio", 4), config.get("hidden_dim")
    )
    variants = {
        "no_gelu": ({"activation": "linear"}, args.optimizer),
        "no_layer_norm": ({"use_layer_norm": False}, args.optimizer),
        "no_token_mixing": ({"use_token_mixing": False}, args.optimizer),
        "sgd": ({}, "sgd"),
    }
    variant_flops, extra = {}, {}
    compute_dtype = keras.dtype_policies.get(args.dtype).compute_dtype
    for mode in modes:
        for name, (overrides, opt) in variants.items():
            if mode == "infer" and name == "sgd":
                continue
            model = C.build_benchmark_model({**config, **overrides}, features, args.dtype)
            optimizer = C.make_optimizer(opt) if mode == "train" else None
            steps = C.make_steps(model, features, args.batch_size, optimizer, jit=jit)
            entries[f"{mode}:{name}"] = (steps, mode)
        key = f"{mode}:ffn_matmuls_only"
        extra[key] = C.ffn_matmul_timer(
            config["num_layers"],
            config["num_tokens"],
            config["token_dim"],
            hidden,
            args.batch_size,
            compute_dtype,
            jit,
            mode,
        )
        variant_flops[key] = C.ffn_matmul_flops(
            config["num_layers"],
            config["num_tokens"],
            config["token_dim"],
            hidden,
            args.batch_size,
            mode,
        )
    return entries, extra, variant_flops


def print_breakdown(samples, peak_keys, modes, variant_flops, args) -> dict:
    """Where the step time goes: each variant's saving, and the matmul-only ceiling."""
    mm = C.matmul_flops(args.peak_size)
    peak_wall = min(C.med(C.wall(samples[k])) for k in peak_keys)
    rows, out = [], {}
    for mode in modes:
        full, full_cpu = C.med(C.wall(samples[mode])), C.med(C.cpu(samples[mode]))
        for key in [k for k in samples if k.startswith(f"{mode}:")]:
            t, t_cpu = C.med(C.wall(samples[key])), C.med(C.cpu(samples[key]))
            row = {
                "part": key,
                "step_ms": t * 1e3,
                "share of full step %": 100 * t / full,
                "share (cpu-time) %": 100 * t_cpu / full_cpu,
            }
            if key in variant_flops:
                row["matmul MFU %"] = 100 * variant_flops[key] / t / (mm / peak_wall)
            rows.append(row)
            out[key] = {k: v for k, v in row.items() if k != "part"}
    print("# breakdown: each variant's step time relative to the full step (1 - share = cost)")
    C.print_table(
        rows, ["part", "step_ms", "share of full step %", "share (cpu-time) %", "matmul MFU %"]
    )
    return out


def run(args: argparse.Namespace) -> dict:
    keras.utils.set_random_seed(0)
    config = get_preset(args.preset)
    if args.config:
        config.update(json.loads(args.config))
    features = C.synthetic_features(args.fields, args.vocab, args.embedding_dim)
    config["activation"] = args.ffn_activation
    model = C.build_benchmark_model(config, features, args.dtype)
    stats = count_model(model)
    fwd = stats["flops_per_sample"]
    jit = args.jit == "on" or C.BACKEND == "jax"
    compute_dtype = keras.dtype_policies.get(args.dtype).compute_dtype
    optimizer = C.make_optimizer(args.optimizer) if args.mode in ("train", "both") else None
    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    load_before = C.load_info()
    steps = C.make_steps(
        model, features, args.batch_size, optimizer, jit=jit, donate=not args.no_donate
    )
    entries = {m: (steps, m) for m in modes}
    extra_timers, variant_flops = {}, {}
    if args.breakdown:
        entries, extra_timers, variant_flops = breakdown_entries(
            config, features, args, modes, entries, jit
        )
    samples, peak_keys = C.measure(
        entries,
        compute_dtype,
        peak_size=args.peak_size,
        seconds=args.seconds,
        repeats=args.repeats,
        extra_peak_dtypes=("float32",) if args.fp32_peak else (),
        extra_timers=extra_timers,
    )
    result = {
        m: C.summarize(samples, peak_keys, m, m, args.batch_size, fwd, args.peak_size)
        for m in modes
    }
    fp32_keys = [k for k in samples if k.startswith("peak_") and k.endswith("_float32")]
    for m in modes:
        if fp32_keys:
            r32 = C.summarize(samples, fp32_keys, m, m, args.batch_size, fwd, args.peak_size)
            result[m]["fp32_peak_flops_per_s"] = r32["peak_flops_per_s"]
            result[m]["mfu_vs_fp32_peak"] = r32["mfu"]
            result[m]["mfu_vs_fp32_peak_cpu_time"] = r32["mfu_cpu_time"]
    rows = [result[m] for m in modes]
    peak_row = {k: v / 1e9 for k, v in rows[0]["peak_flops_per_s_by_kernel"].items()}

    print(
        f"# backend={C.BACKEND} device={C.device_name()} preset={args.preset} config={config} "
        f"batch={args.batch_size} dtype={args.dtype} jit={jit} optimizer={args.optimizer}"
    )
    print(
        f"# params={stats['params']:,} dense={stats['dense_params']:,} "
        f"embedding={stats['embedding_params']:,} fwd_flops/sample={fwd:,}"
    )
    print(
        f"# matmul {args.peak_size}^3 {compute_dtype} GFLOP/s by kernel: "
        + ", ".join(f"{k}={v:.1f}" for k, v in peak_row.items())
        + f" (peak = {rows[0]['peak_kernel']}); loadavg {load_before} -> {C.load_info()}"
    )
    if C.device_peak_bytes() is not None:
        print(f"# device peak memory in use: {C.device_peak_bytes() / 2**30:.2f} GiB")
    C.print_table(
        [
            {
                **r,
                "GFLOP/s": r["flops_per_s"] / 1e9,
                "peak GFLOP/s": r["peak_flops_per_s"] / 1e9,
                "MFU %": 100 * r["mfu"],
                "MFU % paired": 100 * r["mfu_paired_median"],
                "MFU % cpu-time": 100 * r["mfu_cpu_time"],
                "MFU % vs fp32 peak": 100 * r["mfu_vs_fp32_peak"]
                if "mfu_vs_fp32_peak" in r
                else "",
            }
            for r in rows
        ],
        [
            "mode",
            "step_ms",
            "samples_per_s",
            "GFLOP/s",
            "peak GFLOP/s",
            "MFU %",
            "MFU % paired",
            "MFU % cpu-time",
            "MFU % vs fp32 peak",
        ],
    )
    breakdown = (
        print_breakdown(samples, peak_keys, modes, variant_flops, args) if args.breakdown else None
    )
    profile = None
    if args.profile:
        profile = C.profile_step(steps, modes[0], 3, args.profile)
        total = sum(profile["per_step_ms"].values())
        print(f"# profile ({modes[0]}, XLA op time summed over threads, per step): ")
        C.print_table(
            [
                {"op": k, "ms/step": v, "share %": 100 * v / total}
                for k, v in [*profile["per_step_ms"].items(), *profile["top"]]
            ],
            ["op", "ms/step", "share %"],
        )
    main = result[modes[0]]
    payload = {
        "benchmark": "mfu",
        "backend": C.BACKEND,
        "device": C.device_name(),
        "preset": args.preset,
        "config": config,
        "batch_size": args.batch_size,
        "mode": modes[0] if len(modes) == 1 else "both",
        "dtype": args.dtype,
        "jit": jit,
        "optimizer": args.optimizer,
        "params": stats["params"],
        "dense_params": stats["dense_params"],
        "forward_flops_per_sample": fwd,
        "flops_per_sample": main["flops_per_sample"],
        "samples_per_s": main["samples_per_s"],
        "flops_per_s": main["flops_per_s"],
        "peak_flops_per_s": main["peak_flops_per_s"],
        "peak_kernel": main["peak_kernel"],
        "peak_size": args.peak_size,
        "mfu": main["mfu"],
        "mfu_paired_median": main["mfu_paired_median"],
        "mfu_cpu_time": main["mfu_cpu_time"],
        **{
            k: main[k]
            for k in ("fp32_peak_flops_per_s", "mfu_vs_fp32_peak", "mfu_vs_fp32_peak_cpu_time")
            if k in main
        },
        "step_ms": main["step_ms"],
        "repeats": args.repeats,
        **({"breakdown": breakdown} if breakdown else {}),
        **({"profile": profile["per_step_ms"]} if profile else {}),
        "loadavg_before": load_before,
        "loadavg": C.load_info(),
        "device_peak_bytes": C.device_peak_bytes(),
        "donate": not args.no_donate,
        "ffn_activation": args.ffn_activation,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "tag": args.tag,
    }
    if len(modes) == 2:
        payload["infer"] = {
            k: result["infer"][k]
            for k in (
                "step_ms",
                "samples_per_s",
                "flops_per_s",
                "mfu",
                "mfu_paired_median",
                "mfu_cpu_time",
            )
        }
    C.print_json(payload)
    return payload


def main(argv=None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

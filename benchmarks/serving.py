"""Serving latency, throughput and MFU of exported SavedModels (loaded without Keras), on CPU.

For each model (RankMixer `tiny`, RankMixer `small` (~10M dense params), and a DCNv2 of
similar dense parameter count beside each) the parent process builds the model on the shared
synthetic front-end (`benchmarks/_common.synthetic_features`: 16 int64 id fields x 16 dims),
exports it with `keras_rankmixer.export_saved_model`, then a **child process that never imports
Keras** (checked: `keras` absent from `sys.modules` at the end) loads it with
`tf.saved_model.load` and times the `serving_default` signature, as TF Serving would run it
(no XLA, TF's default CPU thread pools):

- per batch size (1, 64, 512): up to `--calls` single requests one after another (at least 7
  per round, else up to `--seconds`), each timed from the call to the host copy of the
  outputs, in `--rounds` rounds that interleave all models and batch sizes (so load changes
  of a shared machine hit every row alike); p50 / p99 latency, and throughput =
  batch / mean latency (one client, no server-side batching or gRPC overhead);
- the matmul peak of this machine in the same process: a `--peak-size`^3 `tf.matmul` in the
  export's compute dtype (float32, or bf16 / fp16 with `--precision`), no XLA as served, best
  of 3 after every timed block;
- serving MFU = FLOPs/sample x samples/s / peak, with peak = the best of the run (`MFU`) and
  the median of the peaks measured right after that row's blocks (`MFU near`, less sensitive
  to load). FLOPs/sample is the package counter (`count_model`: forward matmul FLOPs, 2 per
  multiply-add).

Served graph (issue #20): models are exported with `serving_graph="fused"` (the spelling TF's
grappler/oneDNN fuses: `keras_rankmixer.layers.per_token_ffn.cpu_serving_graph`) unless
`--serving-graph` says otherwise; a model name may carry its own variant after `@`:
`rankmixer_small@plain` (the training spelling), `rankmixer_small@ffn+residual` (single
levers), `rankmixer_small@xla` (`jit_compile=True` export: XLA-compiled model function, as TF
Serving runs it with `--xla_cpu_compilation_enabled=true`). Variants of one model share its
weights (same seed), and `--check` compares every variant's outputs on one batch with the
first variant of the same model.

With `--profile-batch N`, each model also runs traced requests of batch N through the TF1
SavedModel loader (`FULL_TRACE` step stats) and the time is summed by op type.

Prints a table and, last, one JSON line. Usage (what `benchmarks/RESULTS.md` records):

    nice -n 10 python benchmarks/serving.py
    nice -n 10 python benchmarks/serving.py --models small --precision bfloat16
    nice -n 10 python benchmarks/serving.py --models rankmixer_small@plain,rankmixer_small,\
        dcnv2_small --batch-sizes 64,512 --check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = {
    # name: (builder, kwargs)
    "rankmixer_tiny": ("rankmixer", {"preset": "tiny"}),
    "dcnv2_tiny": (
        "dcnv2",
        {"num_cross_layers": 2, "projection_dim": 16, "hidden_units": (64, 64)},
    ),
    "rankmixer_small": ("rankmixer", {"preset": "small"}),
    "dcnv2_small": (
        "dcnv2",
        {"num_cross_layers": 3, "projection_dim": None, "hidden_units": (2560, 2560, 1024)},
    ),
}
# Table 6 (issue #20): table6.py's DCNv2 baseline (3 full-rank cross layers + MLP 512x3,
# 0.86M dense params) against RankMixer at ~10x (`small`) and ~100x (`rankmixer_100m`) its
# dense parameters, all served as SavedModels.
MODELS["dcnv2_table6"] = (
    "dcnv2",
    {"num_cross_layers": 3, "projection_dim": None, "hidden_units": (512, 512, 512)},
)
MODELS["rankmixer_100m"] = ("rankmixer", {"preset": "rankmixer_100m"})
MODELS["tokenmixer_large_small"] = ("rankmixer", {"preset": "tokenmixer_large_small"})
# TokenMixer-Large `small`'s FLOPs in fewer, wider blocks (issue #20, the shape lever): the
# same 18.9 block MFLOPs per sample as L=4 with pSwiGLU hidden 128, as L=2 with hidden 256 and
# as L=1 with hidden 512 (`TokenMixerLargeBackbone.block_counts`): fewer per-block passes over
# the (T, B, D) tokens (norms, transposes, residual adds) for the same matmul work.
MODELS["tokenmixer_large_small_l2"] = (
    "rankmixer",
    {"preset": "tokenmixer_large_small", "num_layers": 2, "hidden_ratio": 256 / 192},
)
MODELS["tokenmixer_large_small_l1"] = (
    "rankmixer",
    {"preset": "tokenmixer_large_small", "num_layers": 1, "hidden_ratio": 512 / 192},
)
ALIASES = {
    "tiny": ["rankmixer_tiny", "dcnv2_tiny"],
    "small": ["rankmixer_small", "dcnv2_small"],
    "table6": ["dcnv2_table6", "rankmixer_small", "rankmixer_100m"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="tiny,small", help="tiny, small or model names, comma-sep")
    p.add_argument("--batch-sizes", default="1,64,512")
    p.add_argument("--calls", type=int, default=300, help="timed requests per batch size (max)")
    p.add_argument("--seconds", type=float, default=9.0, help="time budget per batch size")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the models")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--serving-graph",
        default="fused",
        help="export spelling of models named without @: fused (default), plain, xla, or "
        "levers joined by + (ffn, residual, tokenizer)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="print each model's params / FLOPs / latency / samples/s ratio to this model's "
        "(e.g. dcnv2_table6 for Table 6), per batch size",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="max |difference| of each variant's outputs from the model's first variant",
    )
    p.add_argument(
        "--profile-batch",
        type=int,
        default=0,
        help="also trace one request of this batch size per model (TF1 session, FULL_TRACE) "
        "and print where the time goes, by op type",
    )
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child mode
    return p.parse_args(argv)


def build(name: str, features):
    """The Keras model of `MODELS[name]` (any `@` lever suffix ignored): a `Ranker`."""
    from keras_rankmixer.models.baselines import build_dcnv2
    from keras_rankmixer.models.ranker import Ranker

    name = name.split("@")[0]
    kind, kwargs = MODELS[name]
    if kind == "rankmixer":  # a preset, with the entry's other keys as its overrides
        overrides = {k: v for k, v in kwargs.items() if k != "preset"}
        return Ranker.from_preset(kwargs["preset"], features, name=name, **overrides)
    return build_dcnv2(features, name=name, **kwargs)


# ----------------------------------------------------------------------------- child


def measure(spec_file: str) -> None:
    """Child process: TensorFlow only, no Keras. Loads each SavedModel and times it."""
    import statistics
    import time

    import numpy as np
    import tensorflow as tf

    with open(spec_file) as f:
        spec = json.load(f)
    rng = np.random.default_rng(spec["seed"])
    # The peak in the compute dtype of the export (bf16 / fp16 exports compute in that dtype).
    a = tf.cast(
        tf.constant(rng.standard_normal((spec["peak_size"],) * 2).astype("float32")),
        spec["peak_dtype"],
    )
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()

    peak_cpu = []  # FLOPs per CPU-second of the peak matmul, every measurement

    def peak() -> float:
        best = float("inf")
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            matmul(a)[0, 0].numpy()
            best = min(best, time.perf_counter() - t)
            peak_cpu.append(2.0 * spec["peak_size"] ** 3 / max(time.process_time() - c, 1e-9))
        return 2.0 * spec["peak_size"] ** 3 / best

    peaks = [peak()]
    load_start = [round(x, 2) for x in os.getloadavg()]
    fns, inputs = {}, {}
    for model in spec["models"]:
        fns[model["name"]] = fn = tf.saved_model.load(model["path"]).signatures["serving_default"]
        for batch in spec["batch_sizes"]:
            inputs[model["name"], batch] = x = {
                name: tf.constant(rng.integers(0, vocab, batch), tf.int64)
                for name, vocab in model["vocab"].items()
            }
            for _ in range(5):  # warm-up (the warmup records do this in TF Serving)
                [v.numpy() for v in fn(**x).values()]
    checks = {}
    if spec.get("check"):  # every variant against the first variant of the same model
        first = {}
        for model in spec["models"]:
            base = model["name"].split("@")[0]
            batch = max(spec["batch_sizes"])
            # the same rows for every variant of a model (the first variant's batch)
            x = inputs[first[base][0] if base in first else model["name"], batch]
            out = {k: v.numpy() for k, v in fns[model["name"]](**x).items()}
            if base in first:
                ref_name, ref = first[base]
                checks[model["name"]] = {
                    "against": ref_name,
                    "max_abs_diff": max(float(np.max(np.abs(out[k] - ref[k]))) for k in out),
                }
            else:
                first[base] = (model["name"], out)
    # Rounds interleave the models (and a peak measurement after each block), so that load
    # changes of this shared machine spread over all rows instead of hitting one model.
    rounds = spec["rounds"]
    times = {key: [] for key in inputs}
    cpu_times = {key: [] for key in inputs}  # this process's CPU seconds per call
    near = {key: [] for key in inputs}
    for _ in range(rounds):
        for (name, batch), x in inputs.items():
            fn, block = fns[name], times[name, batch]
            start = len(block)
            budget = time.perf_counter() + spec["seconds"] / rounds
            while len(block) - start < spec["calls"] // rounds and (
                len(block) - start < 7 or time.perf_counter() < budget
            ):
                t, c = time.perf_counter(), time.process_time()
                [v.numpy() for v in fn(**x).values()]
                block.append(time.perf_counter() - t)
                cpu_times[name, batch].append(time.process_time() - c)
            peaks.append(peak())
            near[name, batch].append(peaks[-1])
    rows = []
    for model in spec["models"]:
        for batch in spec["batch_sizes"]:
            t = times[model["name"], batch]
            mean = statistics.fmean(t)
            rows.append(
                {
                    "model": model["name"],
                    "batch": batch,
                    "calls": len(t),
                    "p50_ms": 1e3 * float(np.percentile(t, 50)),
                    "p99_ms": 1e3 * float(np.percentile(t, 99)),
                    "samples_per_s": batch / mean,
                    # Load-robust cross-check on a shared machine: samples per CPU-second of
                    # this process (all its threads), and the peak's FLOPs per CPU-second.
                    "samples_per_cpu_s": batch / statistics.fmean(cpu_times[model["name"], batch]),
                    "model_flops_per_s": model["flops_per_sample"] * batch / mean,
                    "peak_flops_per_s_near": statistics.median(near[model["name"], batch]),
                }
            )
    profiles = {}
    if spec["profile_batch"]:
        for model in spec["models"]:
            profiles[model["name"]] = profile(model, spec["profile_batch"], rng)
    keras_loaded = sorted(m for m in sys.modules if m == "keras" or m.startswith("keras."))
    try:
        import keras  # noqa: F401
    except ImportError:
        keras_loaded = keras_loaded or []
    else:
        keras_loaded = keras_loaded or ["keras is importable"]
    print(
        json.dumps(
            {
                "rows": rows,
                "peaks": peaks,
                "profiles": profiles,
                "checks": checks,
                "peak_flops_per_cpu_s": statistics.median(peak_cpu),
                "load_avg_start": load_start,
                "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                "keras_modules": keras_loaded,
            }
        )
    )


def profile(model: dict, batch: int, rng, runs: int = 3) -> dict[str, float]:
    """Milliseconds per request by op type, from TF1 `FULL_TRACE` step stats (the loader TF
    Serving uses). Tracing adds overhead; read the split, not the total."""
    import collections

    import tensorflow as tf

    totals: collections.Counter = collections.Counter()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], model["path"])
        sig = meta.signature_def["serving_default"]
        feed = {
            sig.inputs[name].name: rng.integers(0, vocab, batch)
            for name, vocab in model["vocab"].items()
        }
        fetch = [t.name for t in sig.outputs.values()]
        for _ in range(3):
            sess.run(fetch, feed)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            sess.run(fetch, feed, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    label = node.timeline_label or node.node_name
                    op = label.split("(")[0].split("=")[-1].strip().removeprefix("_Mkl")
                    totals[op] += node.all_end_rel_micros / 1e3 / runs
    return dict(totals.most_common(10))


# ----------------------------------------------------------------------------- parent


def keras_free_python(target_dir: str) -> tuple[list[str], dict[str, str]]:
    """A Python command and environment in which `keras` / `keras_rankmixer` cannot be imported.

    TensorFlow imports Keras lazily when it is installed (e.g. inside `tf.saved_model.load`),
    so proving that an export needs neither takes a Python without them: `python -S` (no
    `site`, so no `.pth` / editable-install hooks) with `PYTHONPATH` set to `target_dir`, a
    folder of symlinks to this environment's site-packages minus `keras*`, `tf_keras*` and the
    editable install of this package. The timing child runs there, as TF Serving would run
    the SavedModel; the export, bad-request and CLI tests use it too (`tests/helpers.py`).

    Returns:
        `(argv_prefix, env)`: run `subprocess.run(argv_prefix + ["-c", code], env=env)`.
    """
    import sysconfig

    source = sysconfig.get_paths()["purelib"]
    os.makedirs(target_dir, exist_ok=True)
    for entry in os.listdir(source):
        name = entry.lower()
        if name.startswith(("keras", "tf_keras", "__editable__")) or name.endswith(".pth"):
            continue
        link = os.path.join(target_dir, entry)
        if not os.path.lexists(link):
            os.symlink(os.path.join(source, entry), link)
    env = {**os.environ, "PYTHONPATH": target_dir, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, "-S"], env


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        measure(args.measure)
        return 0
    import keras
    import tensorflow as tf

    from benchmarks._common import load_info, synthetic_features
    from keras_rankmixer.export import export_saved_model
    from keras_rankmixer.flops import count_model

    keras.utils.set_random_seed(args.seed)
    names = []
    for item in args.models.split(","):
        names += ALIASES.get(item.strip(), [item.strip()])
    features = synthetic_features()
    tmp = tempfile.mkdtemp(prefix="serving_bench_")
    models = []
    for name in names:
        variant = name.split("@")[1] if "@" in name else args.serving_graph
        keras.utils.set_random_seed(args.seed)  # variants of one model: the same weights
        model = build(name, features)
        stats = count_model(model)
        result = export_saved_model(
            model,
            tmp,
            name.replace("@", "-").replace("+", "_"),
            precision=args.precision,
            verify=False,
            warmup_batch_sizes=(1,),
            serving_graph="plain" if variant == "xla" else variant.replace("+", ","),
            jit_compile=variant == "xla",
        )
        models.append(
            {
                "name": name,
                "path": result.path,
                "params": stats["params"],
                "dense_params": stats["dense_params"],
                "flops_per_sample": stats["flops_per_sample"],
                "vocab": {f.name: f.vocabulary_size for f in features},
            }
        )
        keras.backend.clear_session()
    spec = {
        "models": models,
        "batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
        "calls": args.calls,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "peak_size": args.peak_size,
        "peak_dtype": args.precision,
        "profile_batch": args.profile_batch,
        "seed": args.seed,
        "check": args.check,
    }
    spec_file = os.path.join(tmp, "spec.json")
    with open(spec_file, "w") as f:
        json.dump(spec, f)
    python, env = keras_free_python(os.path.join(tmp, "site"))
    child = subprocess.run(
        python + [os.path.abspath(__file__), "--measure", spec_file],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        print(child.stderr[-4000:], file=sys.stderr)
        return child.returncode
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    if measured["keras_modules"]:
        raise RuntimeError(f"the timing process imported Keras: {measured['keras_modules']}")
    peak = max(measured["peaks"])
    info = {m["name"]: m for m in models}
    print(
        f"CPU x{os.cpu_count()} (no GPU), TensorFlow {tf.__version__}, precision "
        f"{args.precision}, SavedModel loaded without Keras, no XLA unless @xla; load avg "
        f"{measured['load_avg_start']} at the start of the timing, "
        f"{measured['load_avg_end']} at its end"
    )
    print(
        f"matmul peak ({args.precision} {args.peak_size}^3 tf.matmul, best of run): "
        f"{peak / 1e9:.1f} GFLOP/s"
    )
    header = (
        "| model | dense params | MFLOPs/sample | batch | p50 ms | p99 ms | samples/s | GFLOP/s "
        "| MFU | MFU near | samples/CPU-s | MFU cpu-time |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in measured["rows"]:
        m = info[row["model"]]
        row["mfu"] = row["model_flops_per_s"] / peak
        row["mfu_near"] = row["model_flops_per_s"] / row["peak_flops_per_s_near"]
        row["mfu_cpu_time"] = (
            row["samples_per_cpu_s"] * m["flops_per_sample"] / measured["peak_flops_per_cpu_s"]
        )
        row["dense_params"] = m["dense_params"]
        row["params"] = m["params"]
        row["flops_per_sample"] = m["flops_per_sample"]
        print(
            f"| {row['model']} | {m['dense_params']:,} | {m['flops_per_sample'] / 1e6:.2f} | "
            f"{row['batch']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['samples_per_s']:,.0f} | {row['model_flops_per_s'] / 1e9:.2f} | "
            f"{100 * row['mfu']:.1f}% | {100 * row['mfu_near']:.1f}% | "
            f"{row['samples_per_cpu_s']:,.0f} | {100 * row['mfu_cpu_time']:.1f}% |"
        )
    ratios = []
    if args.baseline:
        base_rows = {r["batch"]: r for r in measured["rows"] if r["model"] == args.baseline}
        for row in measured["rows"]:
            base = base_rows.get(row["batch"])
            if base is None or row["model"] == args.baseline:
                continue
            ratio = {
                "model": row["model"],
                "batch": row["batch"],
                "x_dense_params": row["dense_params"] / base["dense_params"],
                "x_flops": row["flops_per_sample"] / base["flops_per_sample"],
                "x_latency_p50": row["p50_ms"] / base["p50_ms"],
                "x_samples_per_s": row["samples_per_s"] / base["samples_per_s"],
                "x_mfu": row["mfu"] / base["mfu"],
                "x_samples_per_cpu_s": row["samples_per_cpu_s"] / base["samples_per_cpu_s"],
            }
            ratios.append(ratio)
            print(
                f"ratio {row['model']} / {args.baseline} at batch {row['batch']}: "
                + ", ".join(f"{k[2:]} x{v:.2f}" for k, v in ratio.items() if k.startswith("x_"))
            )
    for name, check in measured["checks"].items():
        print(f"check {name} vs {check['against']}: max |diff| {check['max_abs_diff']:.2e}")
    for name, ops in measured["profiles"].items():
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in ops.items())
        print(f"profile {name} batch {args.profile_batch} (ms per request, by op type): {top}")
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "profiles": measured["profiles"],
                "device": f"CPU x{os.cpu_count()}",
                "tensorflow": tf.__version__,
                "precision": args.precision,
                "peak_flops_per_s": peak,
                "load_avg": load_info(),
                "load_avg_timing": [measured["load_avg_start"], measured["load_avg_end"]],
                "checks": measured["checks"],
                "ratios": ratios,
                "serving_graph": args.serving_graph,
                "rows": measured["rows"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SparseMoE inference throughput: capacity-bounded sparse path vs computing every expert.

One `SparseMoE` layer (default B=4096, T=16, D=64, E=8 experts of hidden 256 per token, fp32,
inference). The router bias is set so that every expert is active for exactly the target
fraction of the batch (ReLU gates thresholded at the per-expert quantile: a balanced trained
router). For each active ratio (1/2, 1/4, 1/8) the same weights run with
`inference_mode="dense"` (all experts computed, gates multiply zeros) and
`inference_mode="sparse"` at each capacity factor; the table gives the best-of-N wall time,
rows/s, speed-up over dense, the expert-FLOP ratio `capacity_factor * a` and the overflow.
Also checks sparse == dense (max abs difference) when nothing overflows.

Usage:

    nice -n 10 .venv/bin/python benchmarks/moe_inference.py                  # TF + XLA, CPU
    nice -n 10 .venv/bin/python benchmarks/moe_inference.py --no-xla         # TF graph (SavedModel path)
    KERAS_BACKEND=jax .venv/bin/python benchmarks/moe_inference.py --backend jax  # GPU if present

The last line printed is one JSON object with every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax"])
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--num-tokens", type=int, default=16)
    p.add_argument("--token-dim", type=int, default=64)
    p.add_argument("--num-experts", type=int, default=8)
    p.add_argument("--expert-dim", type=int, default=256)
    p.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.25, 0.125])
    p.add_argument("--capacity-factors", nargs="+", type=float, default=[1.25, 2.0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-xla", action="store_true", help="TF graph without XLA")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras
    import numpy as np

    from keras_rankmixer.layers import SparseMoE

    if keras.backend.backend() != args.backend:
        print(f"KERAS_BACKEND mismatch: keras uses {keras.backend.backend()}; set it in env.")
        return 2
    b, t, d, e, h = (
        args.batch_size,
        args.num_tokens,
        args.token_dim,
        args.num_experts,
        args.expert_dim,
    )
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(b, t, d)).astype("float32")
    xla = not args.no_xla

    def compile_call(layer):
        if args.backend == "tensorflow":
            import tensorflow as tf

            fn = tf.function(lambda v: layer(v, training=False), jit_compile=xla)
            xt = tf.constant(x)
            return lambda: fn(xt).numpy()
        import jax

        tv = [v.value for v in layer.trainable_variables]
        state = {"ntv": [v.value for v in layer.non_trainable_variables]}
        fn = jax.jit(lambda a, c, v: layer.stateless_call(a, c, v, training=False))
        xj = jax.numpy.asarray(x)

        def call():
            # stateless_call returns the updated inference counters; carry them so that
            # `inference_stats()` (written back in `timed`) counts every call, as on TF.
            out, state["ntv"] = fn(tv, state["ntv"], xj)
            return out.block_until_ready()  # no copy to the host inside the timing

        call.write_back = lambda: [
            v.assign(val)
            for v, val in zip(layer.non_trainable_variables, state["ntv"], strict=True)
        ]
        return call

    def timed(layer):
        call = compile_call(layer)
        out = np.asarray(call())  # compile + warm up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        if hasattr(call, "write_back"):
            call.write_back()
        return best, out

    device = "cpu"
    if args.backend == "jax":
        import jax

        device = jax.devices()[0].platform
    elif keras.config.backend() == "tensorflow":
        import tensorflow as tf

        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"

    rows = []
    for ratio in args.ratios:
        dense = SparseMoE(
            e, hidden_dim=h, target_active_ratio=ratio, inference_mode="dense", name="dense"
        )
        dense.build((None, t, d))
        # balanced router: expert (t, j) active for exactly `ratio` of the batch
        logits = np.einsum("btd,tde->bte", x, np.asarray(dense.router.router_kernel))
        threshold = np.quantile(logits, 1.0 - ratio, axis=0, method="higher")
        dense.router.router_bias.assign((-threshold + 1e-6).astype("float32"))
        dense_s, dense_out = timed(dense)
        measured = dense.inference_stats()
        active = measured["active"] / measured["gates"]
        rows.append(
            {
                "ratio": ratio,
                "mode": "dense",
                "capacity_factor": None,
                "seconds": dense_s,
                "rows_per_s": b / dense_s,
                "speedup": 1.0,
                "flop_ratio": 1.0,
                "active_ratio": active,
                "overflow_ratio": 0.0,
                "max_abs_diff": 0.0,
            }
        )
        for cf in args.capacity_factors:
            sparse = SparseMoE.from_config(
                {**dense.get_config(), "inference_mode": "sparse", "capacity_factor": cf}
            )
            sparse.build((None, t, d))
            sparse.set_weights(dense.get_weights())
            sparse.reset_inference_stats()
            sparse_s, sparse_out = timed(sparse)
            stats = sparse.inference_stats()
            rows.append(
                {
                    "ratio": ratio,
                    "mode": "sparse",
                    "capacity_factor": cf,
                    "seconds": sparse_s,
                    "rows_per_s": b / sparse_s,
                    "speedup": dense_s / sparse_s,
                    "flop_ratio": sparse.capacity(b) / b,
                    "active_ratio": active,
                    "overflow_ratio": stats["overflow_ratio"],
                    "max_abs_diff": float(np.max(np.abs(sparse_out - dense_out))),
                }
            )
    path = f"{args.backend}{'' if xla or args.backend == 'jax' else ' graph (no XLA)'}"
    print(
        f"SparseMoE inference, {path}, {device}, fp32: B={b} T={t} D={d} E={e} H={h} "
        f"(expert FLOPs all experts: {4 * b * t * e * d * h / 1e9:.1f} GFLOP/batch)"
    )
    header = (
        f"{'active':>7s} {'mode':>6s} {'cap.f':>5s} {'ms/batch':>9s} {'rows/s':>9s} "
        f"{'speed-up':>8s} {'FLOP ratio':>10s} {'overflow':>8s} {'max|diff|':>9s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        cf = "-" if r["capacity_factor"] is None else f"{r['capacity_factor']:.2f}"
        print(
            f"{r['ratio']:7.3f} {r['mode']:>6s} {cf:>5s} {1000 * r['seconds']:9.1f} "
            f"{r['rows_per_s']:9.0f} {r['speedup']:7.2f}x {r['flop_ratio']:10.3f} "
            f"{r['overflow_ratio']:8.4f} {r['max_abs_diff']:9.2e}"
        )
    print(
        json.dumps(
            {
                "benchmark": "moe_inference",
                "backend": args.backend,
                "xla": xla,
                "device": device,
                "config": {"B": b, "T": t, "D": d, "E": e, "H": h},
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

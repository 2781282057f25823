"""Paper Fig. 3 on Frappe_x1: dense RankMixer vs SparseMoE (relu / dtsi / topk) by active fraction.

`--methods tml tml_lb` put TokenMixer-Large's MoE (`TokenMixerMoE`: E pSwiGLU experts of hidden
`k*D/E`, top-(fraction * E) softmax routing, a shared expert, sparse in training too; `tml_lb`
with Switch's load-balance loss at `--load-balance-weight`) in the same RankMixer in place of
`SparseMoE`, to compare the two MoE designs (issue #18). A pSwiGLU expert has three matrices to
the GELU expert's two, so these models have more parameters (the summary lists them).

Every (method, active fraction, seed) run trains a small RankMixer on
../shared/data/frappe_x1 (BARS split: train_reconstructed.csv / valid.csv / test.csv, 10
categorical id fields), early-stops on validation AUC, and measures on the test split: AUC,
logloss, the inference active ratio, the sparse-inference overflow and the predict throughput
(sparse path vs all experts computed). Same total parameters for every method: the dense
model's per-token FFN has hidden width `k*D`; the MoE models have `E` experts of width `k*D/E`
per token (plus the routers). Active fraction 1 is the dense model (all experts on).

Each finished run is appended as one JSON line to `--results` (so an interrupted grid resumes
where it stopped; finished cells are skipped). `--report` prints the table (mean +- std over
seeds), writes the AUC-vs-active-fraction plot and, last, one JSON line with the summary.

The defaults are the recorded headline config (benchmarks/RESULTS.md, "the full grid with 32
experts"): T=4 D=32 L=1, k=4, E=32 experts of hidden width 4 per token, Adam 3e-3, batch 4096,
at most 30 epochs with early stopping (patience 2). `--num-experts 8` is the earlier,
coarser config (dtsi behind topk there; also recorded).

Usage (CPU, 2 cores shared; ~0.5-1 min per run, 39 runs for the full grid of 3 seeds):

    nice -n 10 .venv/bin/python benchmarks/moe_frappe.py --seeds 0 1 2
    .venv/bin/python benchmarks/moe_frappe.py --report --plot benchmarks/plots/moe_frappe_fig3.png

The data licence forbids redistribution: nothing derived from the data is written except
metrics. Without the data the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
METHODS = ("dense", "relu", "dtsi", "topk", "topk_lb", "tml", "tml_lb")
FRACTIONS = (0.5, 0.25, 0.125)


def load_frappe(data_dir: str):
    """Self-contained CSV loader: per field, raw ids -> contiguous ids 0..n-1 (all splits)."""
    import pandas as pd

    from keras_rankmixer.data import FRAPPE_COLUMNS

    fields = FRAPPE_COLUMNS[1:]  # the label first, then the 10 id fields
    frames = {
        split: pd.read_csv(os.path.join(data_dir, f"{split}.csv"))
        for split in ("train_reconstructed", "valid", "test")
    }
    vocab = {}
    for field in fields:
        values = np.unique(np.concatenate([f[field].to_numpy() for f in frames.values()]))
        vocab[field] = values
    out = {}
    for split, frame in frames.items():
        features = {
            f: np.searchsorted(vocab[f], frame[f].to_numpy()).astype("int64") for f in fields
        }
        labels = {"click": frame["label"].to_numpy().astype("float32").reshape(-1, 1)}
        out[split] = (features, labels)
    sizes = {f: len(v) for f, v in vocab.items()}
    return out, sizes


def build_model(method, fraction, sizes, args):
    from keras_rankmixer import CategoricalFeature, build_rankmixer
    from keras_rankmixer.data import FRAPPE_COLUMNS

    specs = [
        CategoricalFeature(f, vocabulary_size=sizes[f], embedding_dim=args.embedding_dim, group=f)
        for f in FRAPPE_COLUMNS[1:]
    ]
    common = dict(
        num_tokens=args.num_tokens,
        token_dim=args.token_dim,
        num_layers=args.num_layers,
        tower_units=(64,),
    )
    if method == "dense":
        return build_rankmixer(specs, hidden_ratio=args.hidden_ratio, **common)
    if method in ("tml", "tml_lb"):
        # TokenMixer-Large's MoE in the same RankMixer: E pSwiGLU experts of hidden k*D/E,
        # top-(fraction * E) softmax routing, one shared expert of the same hidden, routed
        # output times E/k, sparse in training and in inference (issue #18).
        from keras_rankmixer.layers.tokenmixer_moe import TokenMixerMoE

        top_k = max(1, round(fraction * args.num_experts))
        weight = args.load_balance_weight if method == "tml_lb" else 0.0

        def ffn(_):
            return TokenMixerMoE(
                num_experts=args.num_experts,
                top_k=top_k,
                hidden_ratio=args.hidden_ratio,
                capacity_factor=args.capacity_factor,
                load_balance_weight=weight,
                name="moe",
            )

        return build_rankmixer(specs, ffn_factory=ffn, **common)
    moe = dict(
        num_experts=args.num_experts,
        hidden_ratio=args.hidden_ratio / args.num_experts,
        target_active_ratio=fraction,
        routing="topk" if method.startswith("topk") else method,
        load_balance_weight=args.load_balance_weight if method == "topk_lb" else 0.0,
        capacity_factor=args.capacity_factor,
    )
    if method in ("relu", "dtsi"):
        moe["gate_gradient_leak"] = args.gate_gradient_leak
        moe["load_bias_rate"] = args.load_bias_rate
    if method == "dtsi":
        moe["dense_grad_weight"] = args.dtsi_dense_grad_weight
    return build_rankmixer(specs, moe=moe, **common)


def _reconfigure(model, layers, **attributes):
    """Set serving attributes (`inference_mode`, `capacity_factor`) on every MoE layer."""
    for layer in layers.values():
        for name, value in attributes.items():
            setattr(layer, name, value)
    model.predict_function = None  # re-trace with the new settings


def _served(model, layers, x, batch_size):
    """Predictions of the served path, and each MoE layer's inference stats for exactly them."""
    for layer in layers.values():
        layer.reset_inference_stats()
    pred = model.predict(x, batch_size=batch_size, verbose=0)["click"]
    return pred, [layer.inference_stats() for layer in layers.values()]


def _auc(labels, pred) -> float:
    import keras

    auc = keras.metrics.AUC()
    auc.update_state(labels, pred)
    return float(auc.result())


def _throughput(model, features, batch_size, repeats=2):
    model.predict(features, batch_size=batch_size, verbose=0)  # trace / compile
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(features, batch_size=batch_size, verbose=0)
        best = min(best, time.perf_counter() - start)
    return len(next(iter(features.values()))) / best


def run_one(method, fraction, seed, data, sizes, args):
    import keras

    from keras_rankmixer.training import (
        MoEMonitor,
        compile_for_ranking,
        find_moe_layers,
        plot_active_ratio,
    )

    keras.utils.set_random_seed(seed)
    (xtr, ytr), (xva, yva), (xte, yte) = (
        data["train_reconstructed"],
        data["valid"],
        data["test"],
    )
    model = build_model(method, fraction, sizes, args)
    compile_for_ranking(model, learning_rate=args.learning_rate, jit_compile=True)
    monitor = MoEMonitor(every_n_batches=5, per_token=False)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=args.patience, restore_best_weights=True
    )
    start = time.time()
    history = model.fit(
        xtr,
        ytr,
        validation_data=(xva, yva),
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[monitor, stop],
    )
    train_s = time.time() - start
    layers = find_moe_layers(model)
    pred, stats = _served(model, layers, xte, args.batch_size)
    logloss = float(keras.losses.binary_crossentropy(yte["click"], pred).numpy().mean())
    result = {
        "method": method + args.tag,
        "fraction": fraction,
        "seed": seed,
        "test_auc": _auc(yte["click"], pred),
        "test_logloss": logloss,
        "epochs": len(history.history["loss"]),
        "best_val_auc": float(max(history.history["val_auc"])),
        "train_s": round(train_s, 1),
        "params": int(model.count_params()),
    }
    if layers:
        result["active_ratio"] = float(np.mean([s["active_ratio"] for s in stats]))
        result["overflow_ratio"] = float(np.mean([s["overflow_ratio"] for s in stats]))
        result["train_active_ratio"] = float(
            np.mean([history.history[f"moe/{p}/active_ratio"][-1] for p in layers])
        )
        result["l1_lambda"] = [history.history[f"moe/{p}/l1_lambda"][-1] for p in layers]
        # the same served path at a tighter capacity: how much overflow and AUC that costs
        _reconfigure(model, layers, capacity_factor=args.tight_capacity_factor)
        tight, tight_stats = _served(model, layers, xte, args.batch_size)
        result["tight_capacity_factor"] = args.tight_capacity_factor
        result["tight_test_auc"] = _auc(yte["click"], tight)
        result["tight_overflow_ratio"] = float(np.mean([s["overflow_ratio"] for s in tight_stats]))
        # dense-mode predictions: same weights, every expert computed
        _reconfigure(model, layers, capacity_factor=args.capacity_factor, inference_mode="dense")
        dense_pred = model.predict(xte, batch_size=args.batch_size, verbose=0)["click"]
        result["sparse_vs_dense_max_abs"] = float(np.max(np.abs(dense_pred - pred)))
        result["dense_compute_test_auc"] = _auc(yte["click"], dense_pred)
        result["dense_compute_rows_per_s"] = round(_throughput(model, xte, args.batch_size))
        _reconfigure(model, layers, inference_mode="sparse")
        result["sparse_rows_per_s"] = round(_throughput(model, xte, args.batch_size))
        if args.fig4 and method == "dtsi" and fraction == 0.25 and seed == args.seeds[0]:
            plot_active_ratio(
                monitor,
                args.fig4,
                target=fraction,
                title=f"Frappe, dtsi, target active {fraction} (seed {seed})",
            )
            result["fig4"] = os.path.relpath(args.fig4, ROOT)
    elif tml_layers := _tml_moe_layers(model):
        # TokenMixerMoE: the served path is sparse (capacity-bounded dispatch); the overflow
        # is the layers' `dropped_ratio`, their fraction of selections beyond capacity in the
        # last test batch (they keep no running total). Then the same weights with every expert
        # computed (`dispatch="dense"`, the reference) and the throughput of both.
        result["top_k"] = tml_layers[0].top_k
        # exactly top_k of E routed experts per token and sample (the shared expert is extra)
        result["active_ratio"] = tml_layers[0].top_k / tml_layers[0].num_experts
        result["overflow_ratio"] = float(
            np.mean([float(layer.dropped_ratio.numpy()) for layer in tml_layers])
        )
        result["sparse_rows_per_s"] = round(_throughput(model, xte, args.batch_size))
        _reconfigure(model, dict(enumerate(tml_layers)), dispatch="dense")
        dense_pred = model.predict(xte, batch_size=args.batch_size, verbose=0)["click"]
        result["sparse_vs_dense_max_abs"] = float(np.max(np.abs(dense_pred - pred)))
        result["dense_compute_test_auc"] = _auc(yte["click"], dense_pred)
        result["dense_compute_rows_per_s"] = round(_throughput(model, xte, args.batch_size))
    else:
        result["dense_compute_rows_per_s"] = round(_throughput(model, xte, args.batch_size))
    return result


def _tml_moe_layers(model):
    from keras_rankmixer.layers.tokenmixer_moe import TokenMixerMoE

    return [x for x in model._flatten_layers(include_self=False) if isinstance(x, TokenMixerMoE)]


def load_results(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fig3_curves(cells):
    """Fig. 3's lines from `{(method, fraction): [row, ...]}`: `({method: [(fraction, mean AUC,
    std), ...]}, dense mean AUC or None)`. The dense runs (method "dense", or "dense" plus a
    --tag suffix such as "dense_E32") are every method's point at fraction 1."""
    dense = [r for (m, _), rs in cells.items() if m.startswith("dense") for r in rs]
    dense_auc = float(np.mean([r["test_auc"] for r in dense])) if dense else None
    curves = {}
    for method in sorted({m for m, _ in cells if not m.startswith("dense")}):
        pts = []
        for frac in (1.0,) + FRACTIONS:
            rs = cells.get((method, frac)) or (dense if frac == 1.0 else None)
            if rs:
                a = np.array([r["test_auc"] for r in rs])
                pts.append((frac, float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0))
        if pts:
            curves[method] = pts
    return curves, dense_auc


def report(rows, plot_path=None):
    cells = {}
    for r in rows:
        cells.setdefault((r["method"], r["fraction"]), []).append(r)
    header = (
        f"{'method':8s} {'active':>6s} {'n':>2s} {'test AUC mean':>13s} {'std':>7s} "
        f"{'logloss':>8s} {'measured active':>15s} {'overflow':>8s} {'AUC all-exp':>11s} "
        f"{'AUC tight':>9s} {'ovf tight':>9s} {'sparse rows/s':>13s} {'dense rows/s':>12s}"
    )
    print(header)
    print("-" * len(header))
    summary = {}
    for (method, frac), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        aucs = np.array([r["test_auc"] for r in rs])
        std = float(aucs.std(ddof=1)) if len(aucs) > 1 else float("nan")
        act = np.mean([r.get("active_ratio", 1.0) for r in rs])
        ovf = np.mean([r.get("overflow_ratio", 0.0) for r in rs])
        sps = np.mean([r.get("sparse_rows_per_s", float("nan")) for r in rs])
        dps = np.mean([r["dense_compute_rows_per_s"] for r in rs])
        ll = np.mean([r["test_logloss"] for r in rs])
        all_exp = np.mean([r.get("dense_compute_test_auc", np.nan) for r in rs])
        tight = np.mean([r.get("tight_test_auc", np.nan) for r in rs])
        tight_ovf = np.mean([r.get("tight_overflow_ratio", np.nan) for r in rs])
        print(
            f"{method:8s} {frac:6.3f} {len(rs):2d} {aucs.mean():13.4f} {std:7.4f} {ll:8.4f} "
            f"{act:15.3f} {ovf:8.3f} {all_exp:11.4f} {tight:9.4f} {tight_ovf:9.4f} "
            f"{sps:13.0f} {dps:12.0f}"
        )
        summary[f"{method}@{frac}"] = {
            "n": len(rs),
            "auc_mean": round(float(aucs.mean()), 5),
            "auc_std": round(std, 5),
            "active_ratio": round(float(act), 4),
            "overflow_ratio": round(float(ovf), 4),
            "per_seed_auc": [round(float(a), 4) for a in aucs],
            "params": int(np.mean([r["params"] for r in rs])),
            "all_experts_auc": round(float(all_exp), 5),
            "tight_capacity_auc": round(float(tight), 5),
            "tight_capacity_overflow": round(float(tight_ovf), 5),
        }
    if plot_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        curves, dense_auc = fig3_curves(cells)
        for method, pts in curves.items():
            f, m, s = map(np.array, zip(*pts, strict=True))
            ax.errorbar(f, m, yerr=s, marker="o", capsize=3, label=method)
        if dense_auc is not None:
            ax.axhline(dense_auc, color="k", ls="--", lw=1, label="dense (all experts)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 0.5, 0.25, 0.125], ["1", "1/2", "1/4", "1/8"])
        ax.invert_xaxis()
        ax.set_xlabel("active expert fraction")
        ax.set_ylabel("test AUC (mean +- std over seeds)")
        ax.set_title("Frappe_x1: AUC vs active fraction (paper Fig. 3)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot_path, dpi=80)
        plt.close(fig)
        print(f"plot: {plot_path}")
    print(json.dumps({"benchmark": "moe_frappe", "cells": summary}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "frappe_x1"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--embedding-dim", type=int, default=10)
    p.add_argument("--num-tokens", type=int, default=4)
    p.add_argument("--token-dim", type=int, default=32)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--hidden-ratio", type=float, default=4.0)
    p.add_argument("--num-experts", type=int, default=32)
    p.add_argument("--load-balance-weight", type=float, default=0.01)
    p.add_argument("--capacity-factor", type=float, default=2.0)
    p.add_argument(
        "--tight-capacity-factor",
        type=float,
        default=1.25,
        help="also measure test AUC and overflow of the served path at this capacity factor",
    )
    p.add_argument("--dtsi-dense-grad-weight", type=float, default=0.01)
    p.add_argument("--gate-gradient-leak", type=float, default=0.01)
    p.add_argument("--load-bias-rate", type=float, default=0.05)
    p.add_argument("--tag", default="", help="suffix for the method label (variants)")
    p.add_argument("--results", default=os.path.join(ROOT, "runs", "moe_frappe.jsonl"))
    p.add_argument("--fig4", default=os.path.join(HERE, "plots", "moe_frappe_fig4.png"))
    p.add_argument("--plot", default=None, help="with --report: AUC-vs-fraction PNG")
    p.add_argument("--report", action="store_true", help="only aggregate --results")
    args = p.parse_args(argv)

    if args.report:
        rows = load_results(args.results)
        if not rows:
            print(f"no results in {args.results}")
            return 1
        report(rows, args.plot)
        return 0
    if not os.path.exists(os.path.join(args.data, "test.csv")):
        print(f"Frappe data not found under {args.data}; nothing to do.")
        print(json.dumps({"benchmark": "moe_frappe", "skipped": "no data"}))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    if args.fig4:
        os.makedirs(os.path.dirname(args.fig4), exist_ok=True)
    data, sizes = load_frappe(args.data)
    done = {(r["method"], r["fraction"], r["seed"]) for r in load_results(args.results)}
    cells = []
    for seed in args.seeds:  # seed-major: a partial grid still covers every method
        for method in args.methods:
            for frac in [1.0] if method == "dense" else args.fractions:
                if (method + args.tag, frac, seed) not in done:
                    cells.append((method, frac, seed))
    print(f"{len(cells)} runs to do; results -> {args.results}", flush=True)
    for method, frac, seed in cells:
        result = run_one(method, frac, seed, data, sizes, args)
        print(json.dumps(result), flush=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(result) + "\n")
    report(load_results(args.results), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

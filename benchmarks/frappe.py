"""Frappe_x1 benchmark: RankMixer vs DCNv2 vs DNN (and RankMixer ablations), several seeds.

BARS settings: embedding dim 10, batch 4096, Adam lr 1e-3, early stopping on validation AUC
with patience 2 (the exact validation AUC, computed after every epoch); like FuxiCTR/BARS the
learning rate is divided by 10 when validation AUC does not improve (`--no-reduce-lr` turns it
off). Every model uses the same front-end (`features.embed_groups`, vocabularies adapted from
the training split) and the same L2 penalty on the embedding tables (`--embedding-l2`,
default 0.1, chosen on validation: best for RankMixer, within 0.0003 of the best for DCNv2
and DNN).

Tuning is on the validation split only: `--tune` trains a small grid of RankMixer configs (or
the one given with `--rankmixer`) and the baselines named in `--models`, and reports validation
AUC; the test split is never read in that mode.

The data (../shared/data/frappe_x1 relative to the repo root, or --data-dir) may not be
redistributed; the script skips with a message when it is absent. The train file there is
rebuilt from the raw log (valid/test are the exact BARS files), so numbers are close to, not
identical with, the BARS leaderboard.

Usage:
    nice -n 10 python benchmarks/frappe.py --seeds 3
    nice -n 10 python benchmarks/frappe.py --tune --max-epochs 30

Prints a table and, last, one JSON line with every result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "frappe_x1")
MODELS = (
    "rankmixer",
    "dcnv2",
    "dnn",
    "no_token_mixing",
    "shared_ffn",
    "no_residual",
    "no_layer_norm",
)
#: The RankMixer config of the comparison: T=5 tokens of two fields each, D=40, L=1, k=4, flatten
#: pooling and a regularised tower like the baselines' MLP (400-400-400, batch norm, dropout
#: 0.2) — the best on validation AUC of the tuning runs in RESULTS.md ("regularised tower").
#: Earlier recorded runs used L=2 with the (64,) GELU tower, and T=10 D=40 with mean pooling.
RANKMIXER = {
    "num_tokens": 5,
    "token_dim": 40,
    "num_layers": 1,
    "hidden_ratio": 4,
    "pooling": "flatten",
    "tower_units": (400, 400, 400),
    "tower_batch_norm": True,
    "tower_dropout": 0.2,
}
#: The --tune grid (T, D, L, k): one field per token (T=10) or two (T=5).
TUNE_GRID = [
    {"num_tokens": 10, "token_dim": 80, "num_layers": 2, "hidden_ratio": 4},
    {"num_tokens": 5, "token_dim": 40, "num_layers": 2, "hidden_ratio": 4},
    {"num_tokens": 10, "token_dim": 40, "num_layers": 2, "hidden_ratio": 4},
]
BASELINES = {
    "dnn": {"hidden_units": (400, 400, 400), "batch_norm": True, "dropout": 0.2},
    "dcnv2": {
        "num_cross_layers": 3,
        "hidden_units": (400, 400, 400),
        "batch_norm": True,
        "dropout": 0.2,
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--embedding-dim", type=int, default=10)
    p.add_argument("--embedding-l2", type=float, default=0.1)
    p.add_argument(
        "--tokenizer-l2", type=float, default=0.0, help="L2 on RankMixer's tokenizer kernel"
    )
    p.add_argument("--no-reduce-lr", action="store_true")
    p.add_argument(
        "--rankmixer",
        default=None,
        help="JSON of build_rankmixer kwargs, e.g. '{\"num_tokens\": 10, ...}'",
    )
    p.add_argument("--dropout", type=float, default=0.0, help="RankMixer FFN dropout")
    p.add_argument("--tune", action="store_true", help="grid over RankMixer configs, valid only")
    p.add_argument("--tune-configs", type=int, default=0, help="only the first N grid configs")
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--output", default=os.path.join(REPO, "runs", "frappe"))
    p.add_argument("--train-limit", type=int, default=0, help="use only N train rows (smoke)")
    p.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        metavar="JSONL",
        help="only print the table of earlier results (results.jsonl files)",
    )
    return p.parse_args(argv)


def load(data_dir, embedding_dim, train_limit=0, with_test=True):
    from keras_rankmixer.data import adapt_vocabularies, frappe_features, read_arrays

    files = {
        s: os.path.join(data_dir, f)
        for s, f in (
            ("train", "train_reconstructed.csv"),
            ("valid", "valid.csv"),
            ("test", "test.csv"),
        )
    }
    if not os.path.exists(files["train"]):
        files["train"] = os.path.join(data_dir, "train.csv")
    specs = frappe_features(embedding_dim=embedding_dim)
    splits = {}
    for split, path in files.items():
        if split == "test" and not with_test:
            continue  # tuning never reads the test split
        r = read_arrays(path, specs)
        print(f"[frappe] {split}: {r.report.summary()} ({os.path.basename(path)})")
        splits[split] = (r.features, r.labels)
    if train_limit:
        x, y = splits["train"]
        splits["train"] = (
            {k: v[:train_limit] for k, v in x.items()},
            {k: v[:train_limit] for k, v in y.items()},
        )
    specs = adapt_vocabularies(specs, splits["train"][0])
    return specs, splits


def run_one(name, config, specs, splits, seed, args, evaluate_test=True):
    import keras

    from keras_rankmixer.flops import count_model
    from keras_rankmixer.models.baselines import build_model, set_embedding_l2
    from keras_rankmixer.runs import evaluate_exact, load_history, training_callbacks

    keras.utils.set_random_seed(seed)
    kwargs = dict(BASELINES.get(name, config))
    if name not in BASELINES:
        kwargs.setdefault("dropout", args.dropout)
    model = build_model(name, specs, tasks=["label"], **kwargs)
    set_embedding_l2(model, args.embedding_l2)
    if args.tokenizer_l2 and name not in BASELINES:
        # the same penalty on the tokenizer's projection (it can otherwise grow to undo the
        # embedding penalty: embeddings / c, projection * c)
        model.get_layer("tokenizer").kernel.regularizer = keras.regularizers.L2(args.tokenizer_l2)
    stats = count_model(model)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss={"label": "binary_crossentropy"},
        jit_compile=not args.no_jit,
    )
    tag = json.dumps(kwargs, sort_keys=True) if name not in BASELINES else ""
    # one directory per process and run: parallel invocations never share a history file
    run_dir = os.path.join(
        args.output, "runs", f"{name}_s{seed}_{abs(hash(tag)) % 10**6}_p{os.getpid()}"
    )
    if os.path.exists(os.path.join(run_dir, "history.json")):
        os.remove(os.path.join(run_dir, "history.json"))
    callbacks = training_callbacks(
        run_dir,
        splits["valid"],
        patience=args.patience,
        reduce_lr_on_plateau=not args.no_reduce_lr,
        resume=False,
        plot=False,
    )
    x, y = splits["train"]
    start = time.time()
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.max_epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.time() - start
    history = load_history(os.path.join(run_dir, "history.json"))
    best = max(history, key=lambda h: h["val_auc_exact"])
    result = {
        "model": name,
        "seed": seed,
        "config": kwargs,
        "params": stats["params"],
        "dense_params": stats["dense_params"],
        "flops_per_sample": stats["flops_per_sample"],
        "epochs": len(history),
        "best_epoch": best["epoch"] + 1,
        "valid_auc": best["val_auc_exact"],
        "valid_logloss": best["val_logloss_exact"],
        "train_seconds": round(seconds, 1),
    }
    if evaluate_test:
        test = evaluate_exact(model, splits["test"])
        result["test_auc"] = test["auc"]
        result["test_logloss"] = test["logloss"]
    print(f"[frappe] {json.dumps(result)}", flush=True)
    return result


def _settings_tag(r):
    """The regularisation settings a run differs by (results of several sweeps side by side)."""
    s = r.get("settings", {})
    tag = f" l2={s.get('embedding_l2', 0.0):g}"
    if r["model"] not in BASELINES:  # no tokenizer; the baselines' dropout is in their config
        if s.get("tokenizer_l2"):
            tag += f" tokenizer_l2={s['tokenizer_l2']:g}"
        tag += f" dropout={s.get('dropout', 0.0):g}"
    return tag


def summarize(results, key_fields=("model",)):
    groups = {}
    seen = set()
    for r in results:
        # the same model, config and seed run twice (by parallel invocations) counts once
        ident = (r["model"], json.dumps(r["config"], sort_keys=True), r["seed"], _settings_tag(r))
        if ident in seen:
            continue
        seen.add(ident)
        key = (
            r["model"]
            if r["model"] in BASELINES
            else (r["model"] + " " + json.dumps(r["config"], sort_keys=True))
        ) + _settings_tag(r)
        groups.setdefault(key, []).append(r)
    rows = []
    for rs in groups.values():
        row = {
            "model": rs[0]["model"],
            "config": rs[0]["config"],
            "seeds": len(rs),
            "settings": _settings_tag(rs[0]).strip(),
            "params": rs[0]["params"],
            "flops_per_sample": rs[0].get("flops_per_sample", 0),
            "train_seconds_mean": round(float(np.mean([r["train_seconds"] for r in rs])), 1),
            "epochs_mean": round(float(np.mean([r["epochs"] for r in rs])), 1),
        }
        for metric in ("valid_auc", "valid_logloss", "test_auc", "test_logloss"):
            vals = [r[metric] for r in rs if metric in r]
            if vals:
                row[f"{metric}_mean"] = float(np.mean(vals))
                row[f"{metric}_std"] = float(np.std(vals))
        rows.append(row)
    return rows


def print_table(rows):
    head = (
        f"{'model':<18} {'seeds':>5} {'params':>9} {'valid AUC':>17} {'test AUC':>17} "
        f"{'test logloss':>17} {'epochs':>6} {'train s':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:

        def ms(m, r=r):
            if f"{m}_mean" not in r:
                return f"{'-':>17}"
            return f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}".rjust(17)

        print(
            f"{r['model']:<18} {r['seeds']:>5} {r['params']:>9,} {ms('valid_auc')} "
            f"{ms('test_auc')} {ms('test_logloss')} {r['epochs_mean']:>6} "
            f"{r['train_seconds_mean']:>8}"
        )
        extra = json.dumps(r["config"], sort_keys=True) if r["model"] not in BASELINES else ""
        print(f"{'':<18} {r['settings']} {extra}")


def describe_rankmixer(cfg: dict) -> str:
    """A short label for a RankMixer config: T, D, L, k, pooling, and the tower when it sets one
    (its activation when it is not the default GELU)."""
    text = "T={num_tokens} D={token_dim} L={num_layers} k={hidden_ratio}".format(**cfg)
    if "pooling" in cfg:
        text += f" {cfg['pooling']} pooling"
    if "tower_units" in cfg:
        text += f", tower {tuple(cfg['tower_units'])}"
    if cfg.get("tower_batch_norm"):
        text += " + BN"
    if cfg.get("tower_dropout"):
        text += f" + dropout {cfg['tower_dropout']:g}"
    if cfg.get("tower_activation", "gelu") != "gelu":
        text += f" ({cfg['tower_activation']})"
    return text


def print_markdown(rows):
    """The same table as Markdown (for benchmarks/RESULTS.md)."""
    print(
        "| model | config | regularisation | seeds | params | FLOPs/sample | valid AUC | test AUC "
        "| test logloss | epochs | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cfg = r["config"]
        if r["model"] not in BASELINES:
            cfg = describe_rankmixer(cfg)
        else:
            cfg = json.dumps(cfg, sort_keys=True)

        def ms(m, r=r):
            if f"{m}_mean" not in r:
                return "-"
            return f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}"

        print(
            f"| {r['model']} | {cfg} | {r['settings']} | {r['seeds']} | {r['params']:,} | "
            f"{r.get('flops_per_sample', 0):,} | {ms('valid_auc')} | {ms('test_auc')} | "
            f"{ms('test_logloss')} | {r['epochs_mean']} | {r['train_seconds_mean']} |"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize:
        results = []
        for path in args.summarize:
            with open(path) as f:
                results += [json.loads(line) for line in f if line.strip()]
        rows = summarize(results)
        print(f"Frappe_x1, summary of {len(results)} runs from {args.summarize}")
        print_table(rows)
        print()
        print_markdown(rows)
        print(json.dumps({"benchmark": "frappe_x1", "summary_of": args.summarize, "rows": rows}))
        return 0
    if not os.path.exists(os.path.join(args.data_dir, "valid.csv")):
        print(
            f"[frappe] SKIPPED: Frappe_x1 data not found in {args.data_dir!r} "
            "(pass --data-dir; the data may not be redistributed)."
        )
        print(json.dumps({"benchmark": "frappe_x1", "skipped": True}))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    specs, splits = load(args.data_dir, args.embedding_dim, args.train_limit, not args.tune)
    rm_config = json.loads(args.rankmixer) if args.rankmixer else dict(RANKMIXER)
    os.makedirs(args.output, exist_ok=True)
    log_path = os.path.join(args.output, "tune.jsonl" if args.tune else "results.jsonl")
    results = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.tune:
        grid = TUNE_GRID[: args.tune_configs] if args.tune_configs else TUNE_GRID
        if args.rankmixer:
            grid = [rm_config]
        jobs = [
            (m, c, s)
            for m in args.models.split(",")
            for c in (grid if m not in BASELINES else [None])
            for s in seeds
        ]
    else:
        jobs = [(m, rm_config, s) for s in seeds for m in args.models.split(",")]
    for name, config, seed in jobs:
        r = run_one(name, config, specs, splits, seed, args, evaluate_test=not args.tune)
        r["settings"] = {
            k: getattr(args, k)
            for k in (
                "batch_size",
                "learning_rate",
                "embedding_dim",
                "embedding_l2",
                "tokenizer_l2",
                "patience",
                "max_epochs",
                "no_reduce_lr",
                "dropout",
            )
        }
        results.append(r)
        with open(log_path, "a") as f:
            f.write(json.dumps(r) + "\n")
    rows = summarize(results)
    print()
    print(
        f"Frappe_x1, CPU ({os.cpu_count()} cores), {'tuning (validation only)' if args.tune else 'test'}"
    )
    print_table(rows)
    print(json.dumps({"benchmark": "frappe_x1", "tune": args.tune, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    sys.exit(main())

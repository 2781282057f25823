"""`rankmixer demo`: train the tiny preset on synthetic clicks, end to end."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="train the tiny preset on synthetic clicks, end to end"
    )
    demo.add_argument("--samples", type=int, default=200_000)
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--batch-size", type=int, default=1024)
    demo.add_argument("--learning-rate", type=float, default=1e-3)
    demo.add_argument("--preset", default="tiny")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", default="runs/demo")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import keras

    from keras_rankmixer.data import make_click_data
    from keras_rankmixer.flops import count_model
    from keras_rankmixer.models import build_from_preset
    from keras_rankmixer.training import compile_for_ranking

    keras.utils.set_random_seed(args.seed)
    print(f"[demo] generating {args.samples:,} synthetic click rows (seed {args.seed}) ...")
    data = make_click_data(args.samples, seed=args.seed)
    train, valid = data.split(0.8)
    model = build_from_preset(args.preset, data.specs, tasks=["click"])
    stats = count_model(model)
    print(
        f"[demo] RankMixer preset '{args.preset}': {stats['dense_params']:,} dense + "
        f"{stats['embedding_params']:,} embedding params, "
        f"{stats['flops_per_sample']:,} FLOPs/sample"
    )
    compile_for_ranking(model, learning_rate=args.learning_rate, jit_compile=True)
    start = time.time()
    model.fit(
        train.features,
        train.labels,
        validation_data=(valid.features, valid.labels),
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=[
            # Click logs overfit after an epoch or two (rare ids get memorised): keep the best.
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=1, restore_best_weights=True
            )
        ],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    results = model.evaluate(
        valid.features, valid.labels, batch_size=4096, verbose=0, return_dict=True
    )
    oracle = keras.metrics.AUC()
    oracle.update_state(valid.labels["click"], valid.probabilities["click"])
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.keras")
    model.save(path)
    metrics = {
        "valid_auc": float(results["auc"]),
        "valid_logloss": float(results["loss"]),
        "oracle_auc": float(oracle.result()),
        "train_seconds": round(time.time() - start, 1),
        "model": path,
    }
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(
        f"[demo] validation AUC {metrics['valid_auc']:.4f} (Bayes-optimal {metrics['oracle_auc']:.4f}), "
        f"logloss {metrics['valid_logloss']:.4f}; trained in {metrics['train_seconds']} s"
    )
    print(f"[demo] model saved to {path}")
    return 0

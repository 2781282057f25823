"""`rankmixer demo`: train the tiny preset on synthetic clicks, end to end."""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="train the tiny preset on synthetic clicks, end to end",
        description=(
            "Generate a synthetic click log (keras_rankmixer.data.make_click_data), train a "
            "RankMixer preset on 80%% of it with early stopping on validation AUC, and print "
            "validation / test AUC beside the Bayes-optimal AUC of the generator. Writes a "
            "run directory (model.keras, history.json, curves.png, metrics.json)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--samples", type=int, default=200_000, help="synthetic rows (80%% train)")
    demo.add_argument("--epochs", type=int, default=3, help="maximum epochs (early stopping)")
    demo.add_argument("--batch-size", type=int, default=1024, help="rows per training step")
    demo.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    demo.add_argument("--preset", default="tiny", help="RankMixer size: tiny, small, ...")
    demo.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    demo.add_argument("--output", default="runs/demo", help="the run directory to write")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer.commands.train import printer
    from keras_rankmixer.training.run_dir import METRICS_FILE
    from keras_rankmixer.training.runner import build_and_train

    print(
        f"[demo] {args.samples:,} synthetic click rows (seed {args.seed}), preset '{args.preset}'"
    )
    config = {
        "model": "rankmixer",
        "preset": args.preset,
        "synthetic_samples": args.samples,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        # Click logs overfit after an epoch or two (rare ids get memorised): keep the best.
        "patience": 1,
        "run_dir": args.output,
        # A finished demo is retrained; an interrupted one resumes (same command again).
        "overwrite": os.path.exists(os.path.join(args.output, METRICS_FILE)),
    }
    metrics = build_and_train(config, log=printer("train"))
    print(
        f"[demo] validation AUC {metrics['valid_auc']:.4f} "
        f"(Bayes-optimal {metrics['valid_oracle_auc']:.4f}), "
        f"logloss {metrics['valid_logloss']:.4f}; test AUC {metrics['test_auc']:.4f}; "
        f"trained in {metrics['train_seconds_this_session']} s"
    )
    print(
        f"[demo] run directory {args.output}: model.keras, history.json, curves.png, metrics.json"
    )
    return 0

"""Frappe_x1 benchmark: RankMixer vs DCNv2 vs DNN (and RankMixer ablations), several seeds.

A thin wrapper of `benchmarks/compare.py --dataset frappe` (every flag of compare.py works
here; `--rankmixer JSON` sets the config of every RankMixer variant, `--dropout` their FFN
dropout). BARS settings: embedding dim 10, batch 4096, Adam lr 1e-3, early stopping on the
exact validation AUC with patience 2, learning rate / 10 on a plateau (`--no-reduce-lr` turns
it off), the same L2 penalty on every model's embedding tables (`--embedding-l2`, default 0.1).
`--tune` trains each model's grid on the training split and reports validation AUC only (the
test split is never read).

The data (../shared/data/frappe_x1 relative to the repo root, or --data-dir) may not be
redistributed; the script skips with a message when it is absent.

Usage:
    nice -n 10 python benchmarks/frappe.py --seeds 3
    nice -n 10 python benchmarks/frappe.py --tune --max-epochs 30

Prints a table and, last, one JSON line with every result.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import compare  # noqa: E402
from benchmarks.compare import describe_rankmixer, print_markdown, summarize  # noqa: E402, F401

#: Every model name the Frappe comparison runs by default (baselines and ablations).
MODELS = (
    "rankmixer",
    "dcnv2",
    "dnn",
    "no_token_mixing",
    "shared_ffn",
    "no_residual",
    "no_layer_norm",
)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--models" or a.startswith("--models=") for a in argv):
        argv += ["--models", ",".join(MODELS)]
    return compare.main(["--dataset", "frappe", *argv])


if __name__ == "__main__":
    sys.exit(main())

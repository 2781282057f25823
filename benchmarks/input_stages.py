"""Where the native reader's CPU time per row goes, stage by stage (issue #20).

On a synthetic Frappe-like CSV (label + 10 integer ids, `--rows` rows), CPU seconds per row
(this process, best of `--rounds` full passes) of:

1. `read+split`: the file read by one op and split into lines, in one `tf.data` element;
   `blocks`: the same lines cut into blocks of `--block-rows` lines by a `map` that slices
   them (what `make_native_dataset` does before parsing; emulated here); both output only
   each element's size, so no strings are copied out to Python;
2. `blocks+cells`: the same with every block split into cells and converted to int64 in a
   parallel `map` (the fast path's core ops, without the reader's checks and report);
3. `native`: `make_native_dataset` itself (block size `--block-rows`);
4. `python`: `make_dataset` (the Python generator reader).

CPU time rather than wall time, so that the split is readable on a shared machine. Prints a
Markdown table and, last, one JSON line.

    nice -n 10 .venv/bin/python benchmarks/input_stages.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

COLUMNS = ["label", "user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
           "weather", "country", "city"]  # fmt: skip


def cpu_per_row(ds, rows: int, rounds: int) -> float:
    for _ in ds.take(1):
        pass
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in ds:
            pass
        best = min(best, time.process_time() - start)
    return best / rows * 1e6


def stages(path: str, rows: int, block: int, rounds: int) -> dict[str, float]:
    import tensorflow as tf

    from keras_rankmixer.data import frappe_features, make_dataset
    from keras_rankmixer.data.native import make_native_dataset

    width = len(COLUMNS)

    def blocks(_):
        lines = tf.strings.split(tf.io.read_file(path), "\n")[1:-1]
        count = (tf.size(lines, out_type=tf.int64) + block - 1) // block
        return tf.data.Dataset.range(count).map(lambda k: lines[k * block : (k + 1) * block])

    def cells(lines):
        c = tf.strings.split(lines, sep=",").to_tensor("", shape=[None, width])
        return tf.strings.to_number(tf.where(tf.equal(c, ""), "-1", c), tf.int64)

    base = tf.data.Dataset.range(1).flat_map(blocks)
    specs = frappe_features(embedding_dim=10)
    whole = tf.data.Dataset.range(1).map(
        lambda _: tf.size(tf.strings.split(tf.io.read_file(path), "\n"))
    )
    return {
        "read+split": cpu_per_row(whole, rows, rounds),
        "blocks": cpu_per_row(base.map(tf.size).prefetch(2), rows, rounds),
        "blocks+cells": cpu_per_row(
            base.map(cells, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2), rows, rounds
        ),
        "native": cpu_per_row(
            make_native_dataset(path, specs, batch_size=4096, block_rows=block), rows, rounds
        ),
        "python": cpu_per_row(make_dataset(path, specs, batch_size=4096), rows, rounds),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--block-rows", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 900, size=(args.rows, len(COLUMNS)))
    ids[:, 0] = rng.integers(0, 2, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frappe_like.csv")
        with open(path, "w") as f:
            f.write(",".join(COLUMNS) + "\n")
            f.write("\n".join(",".join(map(str, r)) for r in ids) + "\n")
        result = stages(path, args.rows, args.block_rows, args.rounds)
    print("| stage | CPU us/row |\n|---|---|")
    for name, us in result.items():
        print(f"| {name} | {us:.2f} |")
    out = {"benchmark": "input_stages", "rows": args.rows, "block_rows": args.block_rows,
           "cpu_us_per_row": {k: round(v, 3) for k, v in result.items()},
           "loadavg": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

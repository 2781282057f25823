"""Input-pipeline throughput: rows/s of `readers.make_dataset` (Python generator) vs
`native.make_native_dataset` (TF ops, parallel map), beside the training step's samples/s.

For every file shape (`frappe`: label + 10 integer ids, 11 columns; `census`: 39 features
(7 numeric, 32 ids) + 2 labels, 41 columns), format (CSV, TFRecord) and thread count (the
dataset's private thread pool), one full pass over the file is timed for each engine, the
two engines **interleaved round by round** (python, native, python, native, ...; the order
alternates every round) so that both see the same load on a shared machine; every number is
the median over rounds, `speedup` is the median of the per-round ratios. The files are
synthetic (written to a temporary directory); with `--real`, Frappe_x1's
`train_reconstructed.csv` and the Census-Income training split (prepared into the
temporary directory by `keras_rankmixer.data.datasets.prepare_census`, if that module is
present) from `../shared/data` are measured too, read in place / never copied into the
repository.

Beside them: the training step of a small RankMixer on the same features (`--preset`,
`jit_compile=True` unless `--train-jit off`, `train_on_batch` on one in-memory batch of
`--batch-size` rows, measured once per feature set), in samples/s. If a reader's rows/s is below it, training from that reader is input-bound.

With `--repeat N` each timed pass reads the file N times through one iterator, as a file N
times as long would be read: the per-pass set-up (building the iterator, the first batch) is
paid once, so the rows/s approach the steady state that feeds a long training run; `rows` is
the rows of one timed pass.

Usage:

    nice -n 10 .venv/bin/python benchmarks/input_pipeline.py --rows 200000 --rounds 3 --real

Prints a Markdown table and, last, one JSON line (with `loadavg` before and after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from keras_rankmixer.features import CategoricalFeature, NumericFeature  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared", "data")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="rows per synthetic file")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--formats", nargs="+", default=["csv", "tfrecord"],
                   choices=["csv", "tfrecord"])  # fmt: skip
    p.add_argument("--widths", nargs="+", default=["frappe", "census"],
                   choices=["frappe", "census"])  # fmt: skip
    p.add_argument("--engines", nargs="+", default=["python", "native"],
                   choices=["python", "native"])  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--block-rows", type=int, default=8192, help="native: lines per parse call")
    p.add_argument("--repeat", type=int, default=1,
                   help="read each file this many times through one iterator per timed pass "
                        "(a file N times as long: the per-pass set-up paid once)")  # fmt: skip
    p.add_argument(
        "--autotune",
        choices=("on", "off"),
        default="off",
        help="tf.data's autotuning model (the readers' default: off)",
    )
    p.add_argument("--real", action="store_true", help="also the files in ../shared/data")
    p.add_argument("--preset", default="tiny", help="model of the training-step column")
    p.add_argument("--train-steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--no-train", action="store_true", help="skip the training-step column")
    p.add_argument("--train-jit", choices=("on", "off"), default="on", help="XLA for the step")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- files


def frappe_like(rows, rng):
    """label + 10 integer id columns (ids below 5500, as Frappe_x1's)."""
    specs = [CategoricalFeature(f"f{i}", vocabulary_size=5500, embedding_dim=8,
                                group=C.GROUPS[i % 3]) for i in range(10)]  # fmt: skip
    cols = {"label": rng.integers(0, 2, rows)}
    cols.update({f.name: rng.integers(0, 5500, rows) for f in specs})
    return specs, ["label"], cols


def census_like(rows, rng):
    """39 features (7 numeric integers with some empty cells, 32 small ids) + 2 labels."""
    num = [NumericFeature(f"n{i}", embedding_dim=8, group="num") for i in range(7)]
    cat = [CategoricalFeature(f"c{i}", vocabulary_size=64, embedding_dim=8,
                              group=C.GROUPS[i % 3]) for i in range(32)]  # fmt: skip
    cols = {f.name: rng.integers(0, 64, rows) for f in cat}
    for f in num:
        v = rng.integers(0, 100_000, rows).astype(object)
        v[rng.random(rows) < 0.02] = ""
        cols[f.name] = v
    cols["income"] = rng.integers(0, 2, rows)
    cols["never_married"] = rng.integers(0, 2, rows)
    return num + cat, ["income", "never_married"], cols


def write_csv(path, cols):
    names = list(cols)
    rows = len(cols[names[0]])
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        text = np.stack([np.asarray(cols[c]).astype(str) for c in names], 1)
        f.writelines(",".join(r) + "\n" for r in text)
    return rows


def write_tfrecord(path, cols, specs):
    import tensorflow as tf

    kinds = {f.name: f.kind for f in specs}
    rows = len(next(iter(cols.values())))
    with tf.io.TFRecordWriter(path) as w:
        for i in range(rows):
            feat = {}
            for c, v in cols.items():
                x = v[i]
                if x == "":
                    continue
                if kinds.get(c) in (None, "numeric"):
                    feat[c] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x)]))
                else:
                    feat[c] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x)]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    return rows


def real_files(tmp):
    """(name, path, specs, labels) for the shared Frappe / Census files that exist."""
    from keras_rankmixer.data import frappe_features

    out = []
    frappe = os.path.join(SHARED, "frappe_x1", "train_reconstructed.csv")
    if os.path.exists(frappe):
        out.append(("frappe_x1 train (real)", frappe, frappe_features(embedding_dim=8), ["label"]))
    census = os.path.join(SHARED, "census_income", "census-income.test.gz")
    try:
        from keras_rankmixer.data import datasets
    except ImportError:
        datasets = None
    if os.path.exists(census) and datasets is not None:
        paths = datasets.prepare_census(census, os.path.join(tmp, "census"))
        out.append(("census train (real)", paths["train"], datasets.census_features(8),
                    list(datasets.CENSUS_TASKS)))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- timing


def make(engine, path, specs, labels, batch_size, threads, block_rows, repeat=1, autotune=False):
    import tensorflow as tf

    from keras_rankmixer.data import make_dataset
    from keras_rankmixer.data.native import make_native_dataset

    if engine == "native":
        ds = make_native_dataset(path, specs, labels, batch_size=batch_size, autotune=autotune,
                                 num_threads=threads, block_rows=block_rows)  # fmt: skip
    else:
        ds = make_dataset(path, specs, labels, batch_size=batch_size, autotune=autotune)
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    return ds.repeat(repeat) if repeat > 1 else ds


def one_pass(ds) -> tuple[int, float, float]:
    """(rows, wall seconds, process CPU seconds) of one full pass."""
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for _, y in ds:
        rows += int(next(iter(y.values())).shape[0])
    return rows, time.perf_counter() - start, time.process_time() - cpu


def train_rate(specs, labels, batch, args) -> dict:
    """samples/s of `train_on_batch` for a `--preset` RankMixer on `specs` (XLA)."""
    import keras

    from keras_rankmixer.models import build_from_preset
    from keras_rankmixer.training import compile_for_ranking

    model = build_from_preset(args.preset, specs, tasks=labels)
    compile_for_ranking(model, jit_compile=args.train_jit == "on")
    x, y = batch
    x = {k: v.numpy() for k, v in x.items()}
    y = {k: v.numpy().reshape(-1, 1).astype("float32") for k, v in y.items()}
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.train_steps):
            model.train_on_batch(x, y)
        times.append((time.perf_counter() - start) / args.train_steps)
    keras.backend.clear_session()
    n = len(next(iter(y.values())))
    return {"preset": args.preset, "batch_size": n, "samples_per_s": n / statistics.median(times)}


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="input_pipeline_") as tmp:
        return _run(args, tmp)


def _run(args, tmp) -> dict:
    load_before = C.load_info()
    rng = np.random.default_rng(0)
    cases = []  # (name, fmt, path, specs, labels, columns)
    for width in args.widths:
        specs, labels, cols = (frappe_like if width == "frappe" else census_like)(args.rows, rng)
        ncols = len(cols)
        for fmt in args.formats:
            path = os.path.join(tmp, f"{width}.{fmt}")
            if fmt == "csv":
                write_csv(path, cols)
            else:
                write_tfrecord(path, cols, specs)
            cases.append((f"{width}-like (synthetic)", fmt, path, specs, labels, ncols))
    if args.real:
        for name, path, specs, labels in real_files(tmp):
            with open(path) as f:
                ncols = len(f.readline().split(","))
            cases.append((name, "csv", path, specs, labels, ncols))

    results = []
    trains = {}  # one training-step measurement per feature set
    for name, fmt, path, specs, labels, ncols in cases:
        train = None
        if not args.no_train:
            key = tuple(f.name for f in specs)
            if key not in trains:
                first = make("native", path, specs, labels, args.batch_size, None, args.block_rows)
                trains[key] = train_rate(specs, labels, next(iter(first)), args)
            train = trains[key]
        for threads in args.threads:
            datasets = {e: make(e, path, specs, labels, args.batch_size, threads,
                                args.block_rows, args.repeat, args.autotune == "on")
                        for e in args.engines}  # fmt: skip
            for ds in datasets.values():  # warm-up: tracing, file cache
                next(iter(ds))
            samples = {e: [] for e in args.engines}
            for r in range(args.rounds):
                order = args.engines if r % 2 == 0 else args.engines[::-1]
                for e in order:
                    samples[e].append(one_pass(datasets[e]))
            rows = {e: samples[e][0][0] for e in args.engines}
            if len(set(rows.values())) != 1:
                raise RuntimeError(f"{name} {fmt}: engines read different row counts {rows}")
            row = {"data": name, "format": fmt, "columns": ncols, "rows": rows[args.engines[0]],
                   "repeat": args.repeat, "threads": threads}  # fmt: skip
            for e in args.engines:
                walls = [w for _, w, _ in samples[e]]
                cpus = [c for _, _, c in samples[e]]
                row[f"{e}_rows_per_s"] = row["rows"] / statistics.median(walls)
                row[f"{e}_cpu_s_per_mrow"] = statistics.median(cpus) / row["rows"] * 1e6
            if {"python", "native"} <= set(args.engines):
                ratios = [p[1] / n[1] for p, n in zip(samples["python"], samples["native"],
                                                      strict=True)]  # fmt: skip
                row["speedup"] = statistics.median(ratios)
                # Load-robust cross-check: CPU seconds of this process per row, python / native.
                row["cpu_speedup"] = row["python_cpu_s_per_mrow"] / row["native_cpu_s_per_mrow"]
            if train:
                row["train_samples_per_s"] = train["samples_per_s"]
                row["train_preset"] = train["preset"]
            results.append(row)
            print(f"# {name} {fmt} threads={threads}: "
                  + ", ".join(f"{e} {row[f'{e}_rows_per_s']:,.0f} rows/s" for e in args.engines),
                  flush=True)  # fmt: skip
    columns = ["data", "format", "columns", "rows", "repeat", "threads"]
    columns += [f"{e}_rows_per_s" for e in args.engines]
    columns += ["speedup", "cpu_speedup"] if "speedup" in results[0] else []
    columns += ["train_samples_per_s"] if not args.no_train else []
    C.print_table(results, columns)
    payload = {
        "benchmark": "input_pipeline",
        "results": results,
        "loadavg_before": load_before,
        "loadavg_after": C.load_info(),
        "cpu_count": os.cpu_count(),
        "device": C.device_name(),
        "config": {k: v for k, v in vars(args).items()},
    }
    C.print_json(payload)
    return payload


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()

"""Pipeline: `make_dataset` batches, shuffles (within windows of chunks, across files),
reports every row once per epoch under `fit`, and keeps the `DataError` tf.data wraps."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from helpers import run_json_script
from reader_cases import write

from keras_rankmixer.data import DataError, make_dataset
from keras_rankmixer.features import CategoricalFeature


def test_make_dataset_batches_shuffles_and_reports(tmp_path):
    rows = "".join(f"{i % 2},{i}\n" for i in range(10))
    path = write(tmp_path, "a.csv", "label,user\n" + rows)
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    ds = make_dataset(path, spec, batch_size=4, chunk_rows=3)
    batches = [(x["user"].numpy(), y["label"].numpy()) for x, y in ds]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), np.arange(10))
    assert ds.report.rows_read == 10
    shuffled = make_dataset(path, spec, batch_size=10, shuffle=True, seed=3, chunk_rows=10)
    first = next(iter(shuffled))[0]["user"].numpy()
    again = next(iter(make_dataset(path, spec, batch_size=10, shuffle=True, seed=3)))
    assert sorted(first.tolist()) == list(range(10)) and first.tolist() != list(range(10))
    np.testing.assert_array_equal(first, again[0]["user"].numpy())
    labels = next(iter(shuffled))[1]["label"].numpy()
    assert labels.dtype == np.int64


def test_shuffle_window_mixes_rows_of_several_files(tmp_path):
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    for i in range(2):  # file i holds users 10*i .. 10*i+9
        write(
            tmp_path, f"p{i}.csv", "label,user\n" + "".join(f"1,{10 * i + j}\n" for j in range(10))
        )
    glob = os.path.join(str(tmp_path), "p*.csv")

    def first_half_files(shuffle_chunks):
        ds = make_dataset(glob, spec, batch_size=20, shuffle=True, seed=1, chunk_rows=10,
                          shuffle_chunks=shuffle_chunks)  # fmt: skip
        users = next(iter(ds))[0]["user"].numpy()
        assert sorted(users.tolist()) == list(range(20))  # every row once
        return {int(u) // 10 for u in users[:10]}  # the files the first 10 rows came from

    assert len(first_half_files(1)) == 1  # one chunk at a time: no mixing across files
    assert first_half_files(2) == {0, 1}
    with pytest.raises(ValueError, match="shuffle_chunks"):
        make_dataset(glob, spec, shuffle_chunks=0)


_FIT_READS = """
import json, sys
import keras_rankmixer as kr
from keras_rankmixer.data import make_dataset
from keras_rankmixer.features import CategoricalFeature

spec = [CategoricalFeature("user", vocabulary_size=200)]
ds = make_dataset(sys.argv[1], spec, batch_size=32, chunk_rows=64)
model = kr.build_rankmixer(spec, 2, 8, 1, 1, tasks=["label"])
model.compile("sgd", {"label": "binary_crossentropy"}, jit_compile=True)
model.fit(ds, epochs=2, verbose=0)
print(json.dumps({"rows_read": ds.report.rows_read, "steps": int(model.optimizer.iterations)}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_reads_every_row_once_per_epoch_plus_the_jax_build_batch(tmp_path, backend):
    """Two 64-row files, 2 epochs of batch 32: 8 steps; the report counts 256 rows, plus on JAX
    the one chunk that Keras' `fit` reads through a pass of its own to build the step."""
    for i in range(2):
        write(
            tmp_path, f"part-{i}.csv", "label,user\n" + "".join(f"{j % 2},{j}\n" for j in range(64))
        )
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = run_json_script(
        [sys.executable, "-c", _FIT_READS, os.path.join(str(tmp_path), "part-*.csv")], env
    )
    assert result["steps"] == 8
    assert result["rows_read"] == 256 + (64 if backend == "jax" else 0)


def test_dataset_keeps_the_data_error_that_tf_data_wraps(tmp_path):
    import tensorflow as tf

    path = write(tmp_path, "late.csv", "label,user\n" + "1,3\n" * 40 + "0,abc\n")
    ds = make_dataset(path, [CategoricalFeature("user", vocabulary_size=10)], chunk_rows=8)
    with pytest.raises(tf.errors.InvalidArgumentError):
        for _ in ds:
            pass
    assert len(ds.errors) == 1 and isinstance(ds.errors[0], DataError)
    assert "late.csv, line 42, column 'user': not an integer id" in str(ds.errors[0])


@pytest.mark.parametrize("engine", ["python", "native"])
def test_repeat_epochs_gives_each_epoch_the_batches_of_a_new_iterator(tmp_path, engine):
    """`repeat_epochs`: pass k of one iterator = epoch k of a new iterator per epoch, batch for
    batch (shuffled differently every pass), each pass ending with its partial batch."""
    from keras_rankmixer.data import repeat_epochs
    from keras_rankmixer.data.native import make_native_dataset

    make = make_native_dataset if engine == "native" else make_dataset
    rows = "".join(f"{i % 2},{i}\n" for i in range(50))
    path = write(tmp_path, "a.csv", "label,user\n" + rows)
    spec = [CategoricalFeature("user", vocabulary_size=100)]

    def build():
        return make(path, spec, batch_size=8, shuffle=True, seed=5, chunk_rows=16)

    fresh = build()
    epochs = [[x["user"].numpy() for x, _ in fresh] for _ in range(3)]
    ds = build()
    repeated, steps = repeat_epochs(ds, 50, 8)
    assert steps == 7 and [len(b) for b in epochs[0]] == [8] * 6 + [2]
    it = iter(repeated)
    passes = [[next(it)[0]["user"].numpy() for _ in range(steps)] for _ in range(3)]
    for want, got in zip(epochs, passes, strict=True):
        assert len(want) == len(got)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)
        assert sorted(np.concatenate(got).tolist()) == list(range(50))
    assert not np.array_equal(np.concatenate(passes[0]), np.concatenate(passes[1]))
    assert repeated.report is ds.report and repeated.errors is ds.errors
    assert repeated.files == ds.files and getattr(repeated, "engine", None) == getattr(
        ds, "engine", None
    )
    with pytest.raises(ValueError, match="rows"):
        repeat_epochs(ds, 0, 8)


def test_exact_auc_reads_a_repeating_dataset_one_pass_per_epoch(tmp_path):
    """`ExactAUC(validation_steps=...)` over `repeat_epochs`' dataset scores each epoch on the
    same rows as a new iterator would (the same AUC and logloss every epoch)."""
    from keras_rankmixer.data import repeat_epochs
    from keras_rankmixer.data.native import make_native_dataset
    from keras_rankmixer.models import build_rankmixer
    from keras_rankmixer.training.callbacks import ExactAUC

    rng = np.random.default_rng(0)
    rows = "".join(f"{int(rng.random() < 0.4)},{rng.integers(0, 20)}\n" for _ in range(90))
    path = write(tmp_path, "v.csv", "click,user\n" + rows)
    spec = [CategoricalFeature("user", vocabulary_size=20, embedding_dim=4)]
    model = build_rankmixer(spec, 2, 4, 1)
    plain = make_native_dataset(path, spec, ["click"], batch_size=16)
    repeated, steps = repeat_epochs(
        make_native_dataset(path, spec, ["click"], batch_size=16), 90, 16
    )
    with pytest.raises(ValueError, match="validation_steps"):
        ExactAUC(repeated, validation_steps=0)
    scores = []
    for cb in (ExactAUC(plain), ExactAUC(repeated, validation_steps=steps)):
        cb.set_model(model)
        for epoch in range(3):
            logs = {}
            cb.on_epoch_end(epoch, logs)
            scores.append((logs["val_auc_exact"], logs["val_logloss_exact"]))
    assert 0 < scores[0][0] < 1 and len(set(scores)) == 1
    # a dataset that does not repeat runs out: a clear error, not an AUC of fewer rows
    short = ExactAUC(plain, validation_steps=steps)
    short.set_model(model)
    short.on_epoch_end(0, {})
    with pytest.raises(ValueError, match="gave 0 batch.*repeat_epochs"):
        short.on_epoch_end(1, {})


@pytest.mark.parametrize("engine", ["python", "native"])
def test_readers_turn_off_tf_data_autotuning_unless_asked(tmp_path, engine):
    # TF 2.21's autotuning thread can hold an iterator's deletion for up to its sleep
    # period (measured: 37 s after 45 s of reading), so both readers turn the model off by
    # default; the rows are the same either way, and `autotune=True` turns it back on.
    from keras_rankmixer.data.native import make_native_dataset

    make = make_native_dataset if engine == "native" else make_dataset
    path = write(tmp_path, "a.csv", "label,user\n" + "".join(f"{i % 2},{i}\n" for i in range(9)))
    spec = [CategoricalFeature("user", vocabulary_size=100)]
    threads = {"num_threads": 2} if engine == "native" else {}
    off = make(path, spec, batch_size=4, shuffle=True, seed=1, repeat=True, **threads)
    on = make(path, spec, batch_size=4, shuffle=True, seed=1, repeat=True, autotune=True)
    assert off.options().autotune.enabled is False
    assert on.options().autotune.enabled is True
    if engine == "native":
        assert off.engine == "native" and off.options().threading.private_threadpool_size == 2
    rows = [sum((x["user"].numpy().tolist() for x, _ in ds.take(6)), []) for ds in (off, on)]
    assert rows[0] == rows[1]
    assert sorted(rows[0][:9]) == list(range(9))  # the first pass: every row once

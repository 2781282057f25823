"""The `tf.data` pipeline: files streamed chunk by chunk into batches for `model.fit`.

`make_dataset(paths, specs, ...)` reads the files with the sources' chunk iterators
(`keras_rankmixer.data.sources`), converted and checked by the schema
(`keras_rankmixer.data.schema`) exactly as `read_arrays`, in a Python generator, and returns
a batched, prefetched `tf.data.Dataset` of `(features dict, labels dict)`. How to read is a
`ReadOptions` (`options=`). `keras_rankmixer.data.native.make_native_dataset` is the same
dataset parsed by TensorFlow ops in a parallel map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from keras_rankmixer.data.options import ReadOptions
from keras_rankmixer.data.schema import DataError, _np_dtype
from keras_rankmixer.data.sources import _iter_chunks, _start
from keras_rankmixer.features import Feature


def _finalize(features: dict, specs) -> dict:
    out = {}
    for f in specs:
        x = features[f.name]
        out[f.name] = x.astype("float32") if f.kind == "numeric" else x
    return out


def make_dataset(
    paths: str | Sequence[str],
    specs: Sequence[Feature],
    label_columns: Sequence[str] | str = ("label",),
    *,
    batch_size: int = 4096,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    cache: bool = False,
    shuffle_chunks: int = 1,
    autotune: bool = False,
    options: ReadOptions | None = None,
    **keywords: Any,
):
    """A batched, prefetched `tf.data.Dataset` of `(features dict, labels dict)` from files.

    Files are read chunk by chunk (`chunk_rows` rows) in a Python generator, converted and
    checked exactly as in `read_arrays`, and re-batched to `batch_size`. With `shuffle`, the
    file order and the rows inside each window of `shuffle_chunks` consecutive chunks are
    permuted, differently every epoch but deterministically for a given `seed` (a window
    spans files, so rows of different files mix; it holds up to `shuffle_chunks * chunk_rows`
    rows in memory). The returned dataset has a `report` attribute (a `ReadReport`,
    cumulative over epochs), a `files` attribute (this shard's files) and an `errors` list:
    a `DataError` raised while iterating reaches the caller wrapped by tf.data as an
    `InvalidArgumentError`, and the original is appended to `errors`.

    Args:
        paths, specs, label_columns: As in `read_arrays`.
        options: How to read the files (a `ReadOptions`; None: the defaults).
        **keywords: The `ReadOptions` fields as keyword arguments (compatibility), merged
            with `options`; a field given both ways is a `TypeError`.
        batch_size: Rows per batch.
        shuffle: Shuffle file order and rows within each window of `shuffle_chunks` chunks.
        shuffle_chunks: Chunks per shuffle window (1: rows mix only inside a chunk).
        seed: Shuffle seed.
        repeat: Repeat forever.
        drop_remainder: Drop the last partial batch (static batch shapes).
        cache: Cache the converted rows in memory after the first pass.
        autotune: Turn on tf.data's autotuning model (`tf.data.Options().autotune`). Off by
            default: see `reader_options`.

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,4\\n1,5\\n")
    >>> ds = make_dataset(path, [CategoricalFeature("user", vocabulary_size=10)], batch_size=2)
    >>> [len(y["label"]) for _, y in ds]
    [2, 1]
    """
    import tensorflow as tf

    from keras_rankmixer.layers._checks import check_positive

    check_positive("batch_size", batch_size, integer=True)
    check_positive("shuffle_chunks", shuffle_chunks, integer=True)
    options, converter, files, report = _start(
        paths, specs, label_columns, options, keywords, "make_dataset"
    )
    errors: list[DataError] = []
    epoch = [0]

    def permuted(window: list, rng) -> tuple[dict, dict]:
        """The window's chunks as one block of rows in a random order."""
        feats, labels = (
            {k: np.concatenate([part[i][k] for part in window]) for k in window[0][i]}
            for i in (0, 1)
        )
        perm = rng.permutation(len(next(iter(labels.values()))))
        return {k: v[perm] for k, v in feats.items()}, {k: v[perm] for k, v in labels.items()}

    def generate() -> Iterator:
        # tf.data runs this in its own thread and re-raises an error as an opaque
        # InvalidArgumentError ("... [[{{node PyFunc}}]]"); keep the DataError itself so the
        # caller can report it (`dataset.errors`).
        try:
            yield from rows()
        except DataError as e:
            errors.append(e)
            raise

    def rows() -> Iterator:
        rng = np.random.default_rng([seed, epoch[0]])
        epoch[0] += 1
        order = list(files)
        if shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        window = []
        for feats, labels in _iter_chunks(order, converter, report, options):
            if not len(next(iter(labels.values()))):
                continue
            feats = _finalize(feats, converter.specs)
            if not shuffle:
                yield feats, labels
                continue
            window.append((feats, labels))
            if len(window) == shuffle_chunks:
                yield permuted(window, rng)
                window = []
        if window:
            yield permuted(window, rng)

    signature = (
        {
            f.name: tf.TensorSpec(
                (None,) + tuple(f.input_shape),
                tf.string if f.dtype == "string" else tf.as_dtype(_np_dtype(f)),
            )
            for f in converter.specs
        },
        {c: tf.TensorSpec((None,), tf.int64) for c in converter.label_columns},
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    ds = ds.with_options(reader_options(autotune=autotune))
    ds.report = report
    ds.files = files
    ds.errors = errors
    return ds


def reader_options(*, autotune: bool = False, num_threads: int | None = None):
    """The `tf.data.Options` both readers set on their datasets.

    tf.data's autotuning model is off unless `autotune`: in TF 2.21 its thread (one per
    iterator) sleeps between rounds for a period that grows with the iterator's age, and
    deleting the iterator waits for that sleep to end. Measured (benchmarks/RESULTS.md,
    session of 2026-12-08): an iterator read for 45 s took 37 s to delete, and `fit`
    stalled 16-35 s on return in several `rankmixer train` runs. Without the model,
    `AUTOTUNE` parallelism is the thread pool's size (the cores, at most 16) and
    `prefetch(AUTOTUNE)` keeps its own buffer tuning.

    Args:
        autotune: Turn on the autotuning model.
        num_threads: Size of the dataset's private thread pool (None: TF's default).

    Example:

    >>> reader_options().autotune.enabled
    False
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    if num_threads:
        options.threading.private_threadpool_size = num_threads
    return options


#: What `make_dataset` / `make_native_dataset` attach to their datasets.
DATASET_ATTRIBUTES = ("report", "files", "errors", "engine")


def repeat_epochs(dataset, rows: int, batch_size: int):
    """`(dataset, steps)`: the dataset's passes one after another through one iterator.

    Each pass of a reader's dataset ends with its own last (possibly partial) batch, so
    `model.fit(repeated, steps_per_epoch=steps)` with `steps = ceil(rows / batch_size)` trains
    every epoch on exactly the batches a new iterator per epoch would give (the readers'
    shuffles differ per pass either way), while the iterator's set-up (tf.data's graph
    optimisation and the parse functions' instantiation, ~0.5 s for the native reader) is paid
    once instead of every epoch (Keras keeps a `steps_per_epoch` iterator across epochs).
    `rows` must be the rows of one pass (the report of a check pass, `report.rows_kept`); the
    dataset's `report`, `files`, `errors` and `engine` carry over (the report stays
    cumulative over passes). Pair it with `ExactAUC(..., validation_steps=steps)` for a
    validation split; `rankmixer train` does both. Measured (benchmarks/RESULTS.md, session
    of 2026-12-08): epochs after the first ~0.5 s faster on Frappe_x1 and Census, the same
    validation AUC.

    Args:
        dataset: A `make_dataset` or `make_native_dataset` dataset, not repeating.
        rows: Rows of one pass.
        batch_size: The dataset's batch size.

    Returns:
        The repeating dataset and its batches per pass.

    Example:

    >>> import os, tempfile
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
    >>> _ = open(path, "w").write("label,user\\n1,3\\n0,4\\n1,5\\n")
    >>> ds = make_dataset(path, [CategoricalFeature("user", vocabulary_size=10)], batch_size=2)
    >>> repeated, steps = repeat_epochs(ds, 3, 2)
    >>> [len(y["label"]) for _, y in repeated.take(2 * steps)]
    [2, 1, 2, 1]
    """
    from keras_rankmixer.layers._checks import check_positive

    check_positive("rows", rows, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    out = dataset.repeat()
    for name in DATASET_ATTRIBUTES:
        if hasattr(dataset, name):
            setattr(out, name, getattr(dataset, name))
    return out, -(-rows // batch_size)

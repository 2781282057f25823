"""Id lookup and embedding for categorical and multi-valued (sequence) features."""

from __future__ import annotations

import keras
from keras import ops

from keras_rankmixer.layers._checks import check_positive
from keras_rankmixer.types import InitializerLike, RegularizerLike


@keras.saving.register_keras_serializable(package="keras_rankmixer")
class CategoricalEmbedding(keras.layers.Layer):
    """Map raw categorical values to embedding rows, with one reserved slot for OOV/missing.

    Row 0 of the table is the **reserved slot**: out-of-vocabulary values and missing values
    (any negative integer id, conventionally -1; the empty string for string features) all map
    to it. Known values map to rows `1..N`. The lookup is chosen by the arguments:

    - `vocabulary_size=N` (integer ids): ids in `[0, N)` map to `id + 1`; anything else to 0.
    - `vocabulary=[...]` (integers or strings): value `vocabulary[i]` maps to `i + 1`. Integer
      vocabularies use a sorted search (XLA-friendly); string vocabularies a `StringLookup`.
    - `num_hash_bins=M`: integer ids map to `(id mod M) + 1`; strings to
      `Hashing(M)(value) + 1` (FarmHash fingerprint). Negative ids / empty strings go to 0.

    With `pooling` ("mean" or "sum") the input is multi-valued, shape `(batch, L)`, padded with
    -1 (or "" for strings); padded entries are excluded from the pool and an all-padding row
    pools to zeros. OOV entries are pooled with the reserved row.

    String inputs run TensorFlow string ops, which XLA cannot compile: a model with string
    features reports `supports_jit = False`, so `compile(jit_compile="auto")` trains it without
    XLA. Hash strings to integer ids in the input pipeline for XLA training.

    Args:
        embedding_dim: Embedding width.
        vocabulary_size: Number of valid integer ids `[0, N)`.
        vocabulary: Explicit list of known values.
        num_hash_bins: Number of hash buckets.
        input_dtype: `"int64"` or `"string"`.
        pooling: None (single value), `"mean"` or `"sum"` (multi-valued).
        embeddings_initializer: Table initializer.
        embeddings_regularizer: Optional table regularizer.
        **kwargs: Base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> emb = CategoricalEmbedding(embedding_dim=4, vocabulary_size=10)
    >>> tuple(emb(np.array([3, -1, 12])).shape)
    (3, 4)
    >>> [int(i) for i in emb.lookup(np.array([3, -1, 12]))]
    [4, 0, 0]
    """

    def __init__(
        self,
        embedding_dim: int,
        vocabulary_size: int | None = None,
        vocabulary: list | None = None,
        num_hash_bins: int | None = None,
        input_dtype: str = "int64",
        pooling: str | None = None,
        embeddings_initializer: InitializerLike = "uniform",
        embeddings_regularizer: RegularizerLike = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("embedding_dim", embedding_dim, integer=True)
        options = {
            "vocabulary_size": vocabulary_size,
            "vocabulary": vocabulary,
            "num_hash_bins": num_hash_bins,
        }
        given = [k for k, v in options.items() if v]
        if len(given) != 1:
            raise ValueError(
                "CategoricalEmbedding needs exactly one of `vocabulary_size`, `vocabulary` or "
                f"`num_hash_bins`; got {given or 'none'}."
            )
        check_positive("vocabulary_size", vocabulary_size, allow_none=True, integer=True)
        check_positive("num_hash_bins", num_hash_bins, allow_none=True, integer=True)
        if input_dtype not in ("int64", "int32", "string"):
            raise ValueError(
                f"`input_dtype` must be 'int64', 'int32' or 'string', got {input_dtype!r}."
            )
        if input_dtype == "string" and vocabulary_size:
            raise ValueError(
                "String features need `vocabulary` or `num_hash_bins`, not `vocabulary_size`."
            )
        if pooling not in (None, "mean", "sum"):
            raise ValueError(f"`pooling` must be None, 'mean' or 'sum', got {pooling!r}.")
        if vocabulary is not None:
            vocabulary = list(vocabulary)
            if len(set(vocabulary)) != len(vocabulary):
                raise ValueError("`vocabulary` has duplicate values.")
            if input_dtype != "string":
                vocabulary = sorted(int(v) for v in vocabulary)
        self.embedding_dim = embedding_dim
        self.vocabulary_size = vocabulary_size
        self.vocabulary = vocabulary
        self.num_hash_bins = num_hash_bins
        self.value_dtype = input_dtype
        self.pooling = pooling
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.num_rows = 1 + (vocabulary_size or num_hash_bins or len(vocabulary or ()))
        self._string_lookup = None
        if input_dtype == "string":
            self.supports_jit = False
            if vocabulary is not None:
                self._string_lookup = keras.layers.StringLookup(
                    vocabulary=vocabulary, num_oov_indices=1, dtype="int64", name="lookup"
                )
            else:
                self._string_lookup = keras.layers.Hashing(num_bins=num_hash_bins, name="lookup")
        self.embedding = keras.layers.Embedding(
            self.num_rows,
            embedding_dim,
            embeddings_initializer=self.embeddings_initializer,
            embeddings_regularizer=self.embeddings_regularizer,
            dtype=self.dtype_policy,
            name="embedding",
        )

    def build(self, input_shape) -> None:
        self.embedding.build((None,))
        self.built = True

    def lookup(self, inputs):
        """Row indices (int32) of `inputs` in the table; 0 is the reserved OOV/missing slot."""
        if self.value_dtype == "string":
            import tensorflow as tf  # string ops exist only in TensorFlow

            inputs = tf.convert_to_tensor(inputs)
            idx = tf.cast(self._string_lookup(inputs), "int32")
            if self.num_hash_bins:
                idx = idx + 1
            return tf.where(tf.equal(inputs, ""), tf.zeros_like(idx), idx)
        x = ops.cast(inputs, "int64")
        if self.vocabulary_size:
            valid = ops.logical_and(x >= 0, x < self.vocabulary_size)
            idx = x + 1
        elif self.num_hash_bins:
            valid = x >= 0
            idx = ops.mod(x, self.num_hash_bins) + 1
        else:
            table = ops.convert_to_tensor(self.vocabulary, dtype="int64")
            # searchsorted on the flat ids: TensorFlow's needs values of rank 1 for a 1-D
            # table, and sequence features give (batch, length)
            flat = ops.reshape(x, (-1,))
            pos = ops.reshape(ops.cast(ops.searchsorted(table, flat), "int64"), ops.shape(x))
            pos = ops.minimum(pos, len(self.vocabulary) - 1)
            valid = ops.equal(ops.take(table, pos), x)
            idx = pos + 1
        return ops.cast(ops.where(valid, idx, ops.zeros_like(idx)), "int32")

    def _present(self, inputs):
        if self.value_dtype == "string":
            import tensorflow as tf

            return tf.not_equal(inputs, "")
        return ops.cast(inputs, "int64") >= 0

    def call(self, inputs):
        embedded = self.embedding(self.lookup(inputs))
        if self.pooling is None:
            return embedded
        present = ops.cast(self._present(inputs), embedded.dtype)[..., None]
        pooled = ops.sum(embedded * present, axis=-2)
        if self.pooling == "mean":
            pooled = pooled / ops.maximum(ops.sum(present, axis=-2), 1.0)
        return pooled

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.pooling is not None:
            shape = shape[:-1]
        return shape + (self.embedding_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "vocabulary_size": self.vocabulary_size,
                "vocabulary": self.vocabulary,
                "num_hash_bins": self.num_hash_bins,
                "input_dtype": self.value_dtype,
                "pooling": self.pooling,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
            }
        )
        return config

import numpy as np
import pytest
from helpers import BACKEND, assert_all_close, config_round_trip, to_numpy

from keras_rankmixer.layers import CategoricalEmbedding, NumericEmbedding


def test_vocabulary_size_lookup_reserves_row_zero():
    emb = CategoricalEmbedding(embedding_dim=3, vocabulary_size=5)
    ids = np.array([0, 4, 5, -1, -7, 2])
    assert to_numpy(emb.lookup(ids)).tolist() == [1, 5, 0, 0, 0, 3]
    out = to_numpy(emb(ids))
    table = to_numpy(emb.embedding.embeddings)
    assert table.shape == (6, 3)
    np.testing.assert_allclose(out, table[[1, 5, 0, 0, 0, 3]])


def test_hashing_and_integer_vocabulary_lookup():
    hashed = CategoricalEmbedding(embedding_dim=2, num_hash_bins=7)
    assert to_numpy(hashed.lookup(np.array([0, 7, 15, -1]))).tolist() == [1, 1, 2, 0]
    vocab = CategoricalEmbedding(embedding_dim=2, vocabulary=[30, 10, 20])
    assert to_numpy(vocab.lookup(np.array([10, 20, 30, 25, 99, -1, 0]))).tolist() == [
        1,
        2,
        3,
        0,
        0,
        0,
        0,
    ]


def test_sequence_mean_pooling_ignores_padding():
    emb = CategoricalEmbedding(embedding_dim=4, vocabulary_size=10, pooling="mean")
    ids = np.array([[1, 2, -1], [-1, -1, -1], [3, 3, 3], [1, 50, -1]])
    out = to_numpy(emb(ids))
    table = to_numpy(emb.embedding.embeddings)
    np.testing.assert_allclose(out[0], (table[2] + table[3]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[1], np.zeros(4), atol=1e-7)
    np.testing.assert_allclose(out[2], table[4], atol=1e-6)
    np.testing.assert_allclose(out[3], (table[2] + table[0]) / 2, atol=1e-6)  # OOV -> row 0


def test_sequence_with_integer_vocabulary():
    # an explicit vocabulary (what adapt_vocabularies writes) on a (batch, length) sequence:
    # the searchsorted lookup must work on rank-2 ids (TensorFlow's needs rank 1 values)
    emb = CategoricalEmbedding(embedding_dim=3, vocabulary=[10, 20, 30], pooling="mean")
    ids = np.array([[10, 30, -1], [25, 20, 20], [-1, -1, -1]])
    assert to_numpy(emb.lookup(ids)).tolist() == [[1, 3, 0], [0, 2, 2], [0, 0, 0]]
    out = to_numpy(emb(ids))
    table = to_numpy(emb.embedding.embeddings)
    np.testing.assert_allclose(out[0], (table[1] + table[3]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[1], (table[0] + 2 * table[2]) / 3, atol=1e-6)  # OOV row 0
    np.testing.assert_allclose(out[2], np.zeros(3), atol=1e-7)


def test_numeric_normalisation_and_missing():
    emb = NumericEmbedding(embedding_dim=3, mean=2.0, std=4.0)
    x = np.array([2.0, 6.0, np.nan, np.inf], "float32")
    emb(x)
    emb.bias.assign(np.array([0.5, -0.5, 0.25], "float32"))
    w, b = to_numpy(emb.kernel), to_numpy(emb.bias)
    emb.missing.assign(np.array([9.0, 9.0, 9.0], "float32"))
    out = to_numpy(emb(x))
    np.testing.assert_allclose(out[0], b, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0 * w + b, atol=1e-6)
    np.testing.assert_allclose(out[2], [9, 9, 9])
    np.testing.assert_allclose(out[3], [9, 9, 9])
    assert np.isfinite(out).all()


def test_numeric_log1p_transform():
    emb = NumericEmbedding(embedding_dim=2, transform="log1p")
    z, _ = emb.normalize(np.array([0.0, np.e - 1, -(np.e - 1)], "float32"))
    assert_all_close(z, [0.0, 1.0, -1.0], atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="string features use TensorFlow string ops")
def test_string_vocabulary_and_hashing():
    vocab = CategoricalEmbedding(embedding_dim=2, vocabulary=["a", "b"], input_dtype="string")
    assert to_numpy(vocab.lookup(np.array(["a", "b", "zzz", ""]))).tolist() == [1, 2, 0, 0]
    hashed = CategoricalEmbedding(embedding_dim=2, num_hash_bins=5, input_dtype="string")
    idx = to_numpy(hashed.lookup(np.array(["x", "y", ""])))
    assert idx[2] == 0 and all(1 <= i <= 5 for i in idx[:2])
    assert not hashed.supports_jit


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"embedding_dim": 4}, "exactly one"),
        ({"embedding_dim": 4, "vocabulary_size": 3, "num_hash_bins": 3}, "exactly one"),
        ({"embedding_dim": 0, "vocabulary_size": 3}, "embedding_dim"),
        ({"embedding_dim": 4, "vocabulary_size": 3, "pooling": "max"}, "pooling"),
        ({"embedding_dim": 4, "vocabulary": [1, 1]}, "duplicate"),
        ({"embedding_dim": 4, "vocabulary_size": 3, "input_dtype": "string"}, "String"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CategoricalEmbedding(**kwargs)


def test_numeric_bad_arguments():
    with pytest.raises(ValueError, match="std"):
        NumericEmbedding(embedding_dim=2, std=0.0)
    with pytest.raises(ValueError, match="transform"):
        NumericEmbedding(embedding_dim=2, transform="log")


def test_config_round_trips():
    for layer in (
        CategoricalEmbedding(embedding_dim=2, vocabulary=[3, 1], pooling="sum"),
        NumericEmbedding(embedding_dim=2, mean=1.0, std=3.0, transform="log1p"),
    ):
        assert config_round_trip(layer).get_config() == layer.get_config()

"""GroupTokenizer, SharedMLPTokenizer and TokenReadout against NumPy; round trips, jit fit.

Batch 2 everywhere, so eager JAX reuses its compiled ops across the tests."""

import keras
import numpy as np
import pytest
from helpers import assert_all_close, assert_gradients_reach_all, random_tokens, to_numpy
from layer_checks import assert_config_round_trip, assert_round_trips, jit_fit_layer, randomize
from tokenmixer_reference import gelu

from keras_rankmixer.layers import GroupTokenizer, SharedMLPTokenizer, TokenReadout

WIDTHS = (6, 3, 5)


def groups(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, w)).astype("float32") for w in WIDTHS]


def mlp_reference(mlp, x, act=gelu):
    w1, b1, w2, b2 = (
        to_numpy(w)
        for w in (mlp.dense_1.kernel, mlp.dense_1.bias, mlp.dense_2.kernel, mlp.dense_2.bias)
    )
    return act(x @ w1 + b1) @ w2 + b2


def test_group_tokens_are_per_group_mlps_and_global_token_comes_first():
    g = groups()
    tok = GroupTokenizer(token_dim=8)
    tok.build([x.shape for x in g])
    randomize(tok)
    y = to_numpy(tok(g))
    assert y.shape == (2, 4, 8) and tok.num_tokens == 4
    assert_all_close(y[:, 0], mlp_reference(tok.global_mlp, np.concatenate(g, -1)), atol=1e-4)
    for i, x in enumerate(g):
        assert_all_close(y[:, i + 1], mlp_reference(tok.group_mlps[i], x), atol=1e-4)
    # hidden width max(input width, D): 8 for the groups, 14 for the global MLP
    assert [m.dense_1.units for m in tok.group_mlps] == [8, 8, 8]
    assert tok.global_mlp.dense_1.units == 14


def test_group_token_sees_only_its_group():
    g = groups()
    tok = GroupTokenizer(token_dim=8)
    y1 = to_numpy(tok(g))
    g2 = [x.copy() for x in g]
    g2[1] += 1.0
    y2 = to_numpy(tok(g2))
    changed = [not np.allclose(y1[:, t], y2[:, t]) for t in range(4)]
    assert changed == [True, False, True, False]  # the global token and group 1's token


def test_without_global_token_and_explicit_hidden_dim():
    g = groups()
    tok = GroupTokenizer(token_dim=4, global_token=False, hidden_dim=3, activation="relu")
    tok.build([x.shape for x in g])
    randomize(tok, seed=2)
    y = tok(g)
    assert tuple(y.shape) == (2, 3, 4) and tok.global_mlp is None
    for i, x in enumerate(g):
        assert tok.group_mlps[i].dense_1.units == 3
        ref = mlp_reference(tok.group_mlps[i], x, act=lambda v: np.maximum(v, 0))
        assert_all_close(to_numpy(y)[:, i], ref, atol=1e-5)


def test_one_tensor_is_one_group():
    x = groups()[0]
    tok = GroupTokenizer(token_dim=8)
    y = to_numpy(tok(x))
    assert y.shape == (2, 2, 8)
    assert tok.compute_output_shape((None, 6)) == (None, 2, 8)


def test_shared_mlp_tokenizer_cuts_one_mlp_output_into_tokens():
    g = groups()
    tok = SharedMLPTokenizer(num_tokens=5, token_dim=4)
    tok.build([x.shape for x in g])
    randomize(tok, seed=3)
    assert tok.mlp.dense_1.units == 14 and tok.mlp.dense_2.units == 20  # max(E, D), T*D
    z = mlp_reference(tok.mlp, np.concatenate(g, -1))
    assert_all_close(tok(g), z.reshape(2, 5, 4), atol=1e-4)
    assert_all_close(tok(np.concatenate(g, -1)), z.reshape(2, 5, 4), atol=1e-4)
    assert tok.compute_output_shape([(None, w) for w in WIDTHS]) == (None, 5, 4)


def test_readout_modes_match_numpy():
    x = random_tokens(2, 4, 5)
    assert_all_close(TokenReadout("global")(x), x[:, 0], atol=0, rtol=0)
    assert_all_close(TokenReadout("mean")(x), x.mean(1), atol=1e-6)
    assert_all_close(TokenReadout("flatten")(x), x.reshape(2, 20), atol=0, rtol=0)
    assert TokenReadout("flatten").compute_output_shape((None, 4, 5)) == (None, 20)
    assert assert_config_round_trip(TokenReadout("mean", name="r")).mode == "mean"


@pytest.mark.parametrize(
    "layer",
    [
        lambda: GroupTokenizer(token_dim=4, bias_initializer="ones"),
        lambda: SharedMLPTokenizer(num_tokens=3, token_dim=4, bias_initializer="ones"),
    ],
)
def test_gradients_reach_every_weight(layer):
    assert_gradients_reach_all(layer(), groups(batch=2))


@pytest.mark.parametrize(
    "make",
    [
        lambda: GroupTokenizer(8, hidden_dim=6, dropout=0.1, activation="gelu_tanh", name="tok"),
        lambda: SharedMLPTokenizer(4, 8, hidden_dim=6, use_bias=False, name="tok"),
    ],
)
def test_config_and_keras_file_round_trip(make, tmp_path):
    assert_round_trips(make(), groups(seed=5), tmp_path, readout=TokenReadout("flatten"))


def test_mixed_bfloat16():
    g = groups()
    for tok in (
        GroupTokenizer(token_dim=8, dtype="mixed_bfloat16"),
        SharedMLPTokenizer(num_tokens=2, token_dim=8, dtype="mixed_bfloat16"),
    ):
        y = tok(g)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        assert all(w.dtype == "float32" for w in tok.weights)


def test_jit_compiled_fit_step():
    jit_fit_layer(GroupTokenizer(token_dim=4), groups(batch=4), readout=TokenReadout("global"))


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: GroupTokenizer(token_dim=0), "token_dim"),
        (lambda: GroupTokenizer(token_dim=4, hidden_dim=0), "hidden_dim"),
        (lambda: GroupTokenizer(token_dim=4, dropout=1.0), "dropout"),
        (lambda: GroupTokenizer(token_dim=4, activation="bogus"), "activation"),
        (lambda: SharedMLPTokenizer(num_tokens=0, token_dim=4), "num_tokens"),
        (lambda: SharedMLPTokenizer(num_tokens=2, token_dim=2.5), "token_dim"),
        (lambda: TokenReadout("max"), "mode"),
    ],
)
def test_bad_arguments_name_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="GroupTokenizer"):
        GroupTokenizer(token_dim=4)(random_tokens(2, 3, 4))
    with pytest.raises(ValueError, match="TokenReadout"):
        TokenReadout()(np.ones((2, 3), "float32"))

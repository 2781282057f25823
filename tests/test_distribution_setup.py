"""Set-up checks of `keras_rankmixer.distribution` that need no devices (any backend, in-process)."""

from __future__ import annotations

import argparse

import keras
import pytest

from keras_rankmixer import distribution as dist_lib
from keras_rankmixer.commands import _distribution as cli_dist
from keras_rankmixer.distribution import DistributionSetupError


def _args(**kw):
    base = dict(distribution=None, mesh=None, coordinator=None, num_processes=None, process_id=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(
    "mesh, expected", [("2x4", (2, 4)), (" 1X8 ", (1, 8)), ((4, 2), (4, 2)), ([1, 1], (1, 1))]
)
def test_parse_mesh(mesh, expected):
    assert dist_lib.parse_mesh(mesh) == expected


@pytest.mark.parametrize("mesh", ["2by2", "2x", "x4", "0x4", (2,), (2, 2, 2), (2.0, 2), (True, 1)])
def test_parse_mesh_rejects(mesh):
    with pytest.raises(DistributionSetupError, match="mesh"):
        dist_lib.parse_mesh(mesh)


def test_process_shard_round_robin_and_uneven():
    files = [f"f{i}" for i in range(5)]
    shards = [dist_lib.process_shard(files, 2, i) for i in range(2)]
    assert shards == [["f0", "f2", "f4"], ["f1", "f3"]]  # the first 5 % 2 processes get one more
    assert sorted(shards[0] + shards[1]) == files
    with pytest.raises(DistributionSetupError, match="every process needs at least one"):
        dist_lib.process_shard(files[:1], 2, 0)
    with pytest.raises(DistributionSetupError, match="process_id"):
        dist_lib.process_shard(files, 2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coordinator": "localhost"}, "HOST:PORT"),
        ({"coordinator": "h:99999"}, "HOST:PORT"),
        ({"num_processes": 0}, "num_processes"),
        ({"process_id": -1}, "process_id"),
        ({"process_id": 2}, r"process_id. must be in \[0, 2\)"),
        ({"cpu_collectives": "nccl"}, "cpu_collectives"),
    ],
)
def test_initialize_multi_host_rejects_bad_arguments(kwargs, match):
    call = {"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 0, **kwargs}
    with pytest.raises(DistributionSetupError, match=match):
        dist_lib.initialize_multi_host(**call)


def test_resolve_jit_compile_with_an_explicit_strategy():
    strategy = object()  # any non-default strategy object
    assert dist_lib.resolve_jit_compile("auto", strategy) is False
    assert dist_lib.resolve_jit_compile(False, strategy) is False
    with pytest.raises(DistributionSetupError, match="jit_compile=True is not supported"):
        dist_lib.resolve_jit_compile(True, strategy)
    with pytest.raises(DistributionSetupError, match="jit_compile"):
        dist_lib.resolve_jit_compile("yes")
    assert dist_lib.resolve_jit_compile(True) is True  # no strategy in scope here


def test_configure_training_without_distribution_is_a_no_op():
    config = {"train": None, "batch_size": 64}
    out, scope = cli_dist.configure_training(_args(), config)
    assert out == config and scope is None


@pytest.mark.parametrize(
    "kwargs, config, match",
    [
        ({"mesh": "2x2"}, {}, "need --distribution"),
        ({"coordinator": "127.0.0.1:1"}, {}, "need --distribution"),
        (
            {"distribution": "data", "coordinator": "127.0.0.1:1", "num_processes": 2},
            {"train": None},
            "needs --train files",
        ),
    ],
)
def test_configure_training_rejects_bad_flag_combinations(kwargs, config, match):
    with pytest.raises(DistributionSetupError, match=match):
        cli_dist.configure_training(_args(**kwargs), {"batch_size": 64, **config})


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF-backend rules")
def test_configure_training_on_tensorflow_refuses_model_parallel_and_multi_host():
    for kwargs in (
        {"distribution": "model", "mesh": "1x2"},
        {"distribution": "data", "mesh": "2x1"},
    ):
        with pytest.raises(DistributionSetupError, match="KERAS_BACKEND=jax"):
            cli_dist.configure_training(_args(**kwargs), {"train": ["x"], "batch_size": 64})
    with pytest.raises(DistributionSetupError, match="needs the JAX backend"):
        dist_lib.model_parallel("1x2")
    with pytest.raises(DistributionSetupError, match="needs the JAX backend"):
        dist_lib.data_parallel()

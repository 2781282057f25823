"""The Ranker task: towers per task, compile defaults and overrides, from_preset, lookups."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_all_close, keras_file_round_trip

import keras_rankmixer as kr
from keras_rankmixer.training import compile_for_ranking, ranking_compile_arguments

SPECS = [
    kr.CategoricalFeature("user", vocabulary_size=20, embedding_dim=4, group="user"),
    kr.CategoricalFeature("item", vocabulary_size=10, embedding_dim=4, group="item"),
]
X = {"user": np.arange(32) % 20, "item": np.arange(32) % 10}
Y = {"click": (np.arange(32) % 2).astype("float32"), "like": (np.arange(32) % 3 == 0) * 1.0}


def backbone(**kwargs):
    return kr.RankMixerBackbone(SPECS, num_tokens=2, token_dim=8, num_layers=1, **kwargs)


def test_default_compile():
    ranker = kr.Ranker(backbone(), tasks=["click", "like"])
    ranker.compile()
    assert isinstance(ranker.optimizer, keras.optimizers.Adam)
    assert float(ranker.optimizer.learning_rate) == pytest.approx(1e-3)
    config = ranker.get_compile_config()
    assert config["loss"] == {"click": "binary_crossentropy", "like": "binary_crossentropy"}
    assert config["loss_weights"] is None and config["jit_compile"] is True
    logs = ranker.evaluate(X, Y, verbose=0, return_dict=True)
    assert {"loss", "click_auc", "like_auc"} <= set(logs)
    # one copy of the defaults: compile_for_ranking gives the same compile state
    other = compile_for_ranking(kr.Ranker(backbone(), tasks=["click", "like"])).get_compile_config()
    for c in (config, other):
        c["optimizer"]["config"].pop("name")  # "adam", "adam_1", ...
    assert other == config


def test_task_loss_weights_are_the_default_loss_weights():
    ranker = kr.Ranker(backbone(), tasks={"click": None, "like": {"loss_weight": 0.25}})
    assert ranker.tasks == ["click", "like"]
    assert ranker.default_loss_weights == {"click": 1.0, "like": 0.25}
    ranker.compile(jit_compile=False)
    assert ranker.get_compile_config()["loss_weights"] == {"click": 1.0, "like": 0.25}
    logs = ranker.evaluate(X, Y, verbose=0, return_dict=True)
    bce = keras.losses.BinaryCrossentropy()
    pred = ranker.predict(X, verbose=0)
    want = float(bce(Y["click"][:, None], pred["click"])) + 0.25 * float(
        bce(Y["like"][:, None], pred["like"])
    )
    assert logs["loss"] == pytest.approx(want, rel=1e-5)
    # an explicit loss_weights wins
    ranker.compile(loss_weights={"click": 0.0, "like": 1.0}, jit_compile=False)
    logs = ranker.evaluate(X, Y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(float(bce(Y["like"][:, None], pred["like"])), rel=1e-5)


def test_every_compile_default_can_be_overridden():
    ranker = kr.Ranker(backbone())
    ranker.compile(optimizer="sgd", learning_rate=0.5, jit_compile=False, steps_per_execution=2)
    assert isinstance(ranker.optimizer, keras.optimizers.SGD)
    assert float(ranker.optimizer.learning_rate) == pytest.approx(0.5)
    config = ranker.get_compile_config()
    assert config["jit_compile"] is False and config["steps_per_execution"] == 2
    ranker.compile(
        optimizer=keras.optimizers.RMSprop(1e-2),
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.BinaryAccuracy(name="acc")],
    )
    assert isinstance(ranker.optimizer, keras.optimizers.RMSprop)
    logs = ranker.evaluate(X, Y["click"], verbose=0, return_dict=True)
    assert set(logs) == {"loss", "acc"}
    with pytest.raises(ValueError, match="learning_rate"):
        ranker.compile(optimizer=keras.optimizers.Adam(), learning_rate=0.1)


def test_compile_state_is_restored_on_loading(tmp_path):
    ranker = kr.Ranker(backbone(), tasks={"click": {}, "like": {"loss_weight": 0.5}})
    # "auto": XLA on JAX, none on a TF CPU
    ranker.compile(optimizer="adagrad", learning_rate=0.05, jit_compile="auto")
    ranker.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    loaded = keras_file_round_trip(ranker, tmp_path)
    assert isinstance(loaded.optimizer, keras.optimizers.Adagrad)
    assert int(loaded.optimizer.iterations) == 2
    assert loaded.get_compile_config() == ranker.get_compile_config()
    assert_all_close(
        loaded.evaluate(X, Y, verbose=0, return_dict=True)["loss"],
        ranker.evaluate(X, Y, verbose=0, return_dict=True)["loss"],
    )


def test_towers_and_outputs():
    ranker = kr.Ranker(
        backbone(),
        tasks=["click", "like"],
        tower_units=(6, 3),
        tower_batch_norm=True,
        tower_dropout=0.1,
        tower_activation="relu",
    )
    for task in ("click", "like"):
        assert ranker.get_layer(f"{task}_tower_1").units == 3
        assert ranker.get_layer(f"{task}_tower_0_bn").momentum == 0.9
        assert ranker.get_layer(f"{task}_tower_1_dropout").rate == 0.1
        assert ranker.get_layer(task).units == 1
    out = ranker.predict(X, verbose=0)
    assert sorted(out) == ["click", "like"]
    assert all(v.shape == (32, 1) and v.dtype == np.float32 for v in out.values())
    clone = kr.Ranker.from_config(ranker.get_config())
    assert clone.get_config() == ranker.get_config()


def test_get_layer_finds_the_backbones_layers():
    ranker = kr.Ranker(backbone(), tasks=["click"])
    assert ranker.get_layer("block_0") is ranker.backbone.get_layer("block_0")
    assert ranker.get_layer("click_tower_0") in ranker.layers
    assert ranker.get_layer(ranker.backbone.name) is ranker.backbone
    assert ranker.inputs == ranker.backbone.inputs  # sub-models of the backbone still connect
    keras.Model(ranker.inputs, ranker.get_layer("tokenizer").output)
    with pytest.raises(ValueError, match="nope"):
        ranker.get_layer("nope")


def test_from_preset_routes_overrides():
    ranker = kr.Ranker.from_preset(
        "tiny",
        SPECS,
        tasks=["a", "b"],
        num_layers=1,
        pooling="flatten",
        tower_units=(5,),
        dtype="mixed_bfloat16",
        name="r",
    )
    assert ranker.name == "r" and ranker.tasks == ["a", "b"] and ranker.tower_units == (5,)
    assert ranker.backbone.num_layers == 1 and ranker.backbone.pooling == "flatten"
    assert ranker.get_layer("a_tower_0").compute_dtype == "bfloat16"
    assert ranker.get_layer("block_0").compute_dtype == "bfloat16"
    assert ranker.predict(X, verbose=0)["b"].dtype == np.float32
    with pytest.raises(
        TypeError, match=r"RankMixerBackbone got unexpected .*\['not_an_argument'\]"
    ):
        kr.Ranker.from_preset("tiny", SPECS, not_an_argument=1)
    with pytest.raises(
        TypeError, match=r"Ranker got unexpected keyword argument\(s\) \['towers'\]"
    ):
        kr.Ranker(backbone(), towers=(4,))


def test_from_preset_head_defaults_come_from_the_preset():
    """`rankmixer_base` (the validated default, #18) carries its head; the ranker's own
    arguments replace it one by one; `build_from_preset` agrees."""
    base = kr.Ranker.from_preset("rankmixer_base", SPECS)
    assert (base.tower_units, base.tower_batch_norm, base.tower_dropout) == ((400,) * 3, True, 0.2)
    b = base.backbone
    assert (b.num_tokens, b.token_dim, b.num_layers, b.hidden_ratio) == (8, 64, 1, 4)
    assert b.pooling == "flatten" and b.embedding_l2 == 0.01 and base.losses
    assert base.get_layer("click_tower_2_bn") is not None
    narrow = kr.Ranker.from_preset("rankmixer_base", SPECS, tower_units=(8,))
    assert (narrow.tower_units, narrow.tower_batch_norm, narrow.tower_dropout) == ((8,), True, 0.2)
    built = kr.build_from_preset("rankmixer_base", SPECS, tower_dropout=0.0)
    assert built.get_config()["tower_units"] == [400] * 3 and built.tower_dropout == 0.0
    assert built.backbone.embedding_l2 == 0.01
    tiny = kr.Ranker.from_preset("tiny", SPECS)  # a paper-shape preset: the plain head
    assert (tiny.tower_units, tiny.tower_batch_norm, tiny.tower_dropout) == ((64,), False, 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "rankmixer"}, "`backbone` must be a keras_rankmixer Backbone"),
        ({"tasks": []}, "tasks"),
        ({"tasks": ["a", "a"]}, "tasks"),
        ({"tasks": {"a": {"weight": 1}}}, r"unknown option\(s\) \['weight'\]"),
        ({"tasks": {"a": {"loss_weight": -1}}}, "loss_weight"),
        ({"tower_units": (0,)}, "tower_units"),
        ({"tower_dropout": 1.0}, "tower_dropout"),
        ({"tower_activation": "bogus"}, "`tower_activation` must be"),
    ],
)
def test_argument_errors(kwargs, match):
    args = {"backbone": backbone()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kr.Ranker(**args)


def test_compile_arguments_are_fresh_objects():
    a, b = ranking_compile_arguments(["click"]), ranking_compile_arguments(["click"])
    assert a["optimizer"] is not b["optimizer"]
    assert a["metrics"]["click"][0] is not b["metrics"]["click"][0]

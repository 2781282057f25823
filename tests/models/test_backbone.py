"""Backbones: the registry, a custom backbone end to end, config round trips, same numbers."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from helpers import assert_all_close, keras_file_round_trip, model_batch, model_specs

import keras_rankmixer as kr
from keras_rankmixer.features import build_inputs, embed_groups, feature_to_config
from keras_rankmixer.layers import FeatureTokenizer, RankMixerBlock
from keras_rankmixer.models.backbone import concatenated_embeddings, feature_front_end
from keras_rankmixer.models.baselines import set_embedding_l2
from keras_rankmixer.models.ranker import add_task_towers

SPECS = model_specs()
batch = model_batch


def predict(model, x):
    return {k: np.asarray(v) for k, v in model.predict(x, verbose=0).items()}


# --------------------------------------------------------------------------- a custom backbone
@kr.register_backbone("test_mean_embedding")
class MeanEmbeddingBackbone(kr.Backbone):
    """Concatenated embeddings -> one ReLU layer: the smallest backbone there is."""

    def __init__(self, features, width=8, dtype=None, name="mean_embedding_backbone", **kwargs):
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        x = concatenated_embeddings(groups, dtype=dtype)
        x = keras.layers.Dense(width, activation="relu", dtype=dtype, name="projection")(x)
        super().__init__(
            inputs=inputs, outputs=x, features=features, dtype=dtype, name=name, **kwargs
        )
        self.width = width

    def get_config(self):
        config = super().get_config()
        config["width"] = self.width
        return config


def test_custom_backbone_build_fit_save_load_export(tmp_path):
    assert kr.get_backbone_class("test_mean_embedding") is MeanEmbeddingBackbone
    backbone = MeanEmbeddingBackbone(SPECS, width=8)
    ranker = kr.Ranker(backbone, tasks={"click": {}, "like": {"loss_weight": 0.5}})
    ranker.compile(learning_rate=1e-2)
    x = batch(256, seed=1)
    y = {
        "click": (x["user"] % 2 == 0).astype("float32"),
        "like": (x["item"] == 7).astype("float32"),
    }
    history = ranker.fit(x, y, batch_size=64, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]

    loaded = keras_file_round_trip(ranker, tmp_path)
    assert type(loaded) is kr.Ranker and type(loaded.backbone) is MeanEmbeddingBackbone
    assert loaded.backbone.width == 8 and loaded.task_options == ranker.task_options
    assert kr.model_features(loaded) == SPECS  # the .keras file alone
    assert_all_close(predict(loaded, x)["like"], predict(ranker, x)["like"], atol=1e-6)
    # the compiled state comes back too: same optimizer state, same loss on the same data
    assert int(loaded.optimizer.iterations) == int(ranker.optimizer.iterations) == 8 * 4
    assert loaded.get_compile_config() == ranker.get_compile_config()
    assert_all_close(
        loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"],
        ranker.evaluate(x, y, verbose=0, return_dict=True)["loss"],
    )

    if keras.backend.backend() != "tensorflow":  # a SavedModel needs TF: a clear error
        with pytest.raises(ValueError, match="needs the TensorFlow backend.*KERAS_BACKEND"):
            kr.export_saved_model(loaded, str(tmp_path / "serving"), "custom")
        return
    result = kr.export_saved_model(loaded, str(tmp_path / "serving"), "custom", warmup_inputs=x)
    assert max(result.max_abs_diff.values()) < 1e-5


# --------------------------------------------------------------------------- the registry
def test_registry_names_and_errors():
    assert {"rankmixer", "dnn", "dcnv2"} <= set(kr.backbone_names())
    assert kr.get_backbone_class("dnn") is kr.DNNBackbone
    assert kr.get_backbone_class("dcnv2") is kr.DCNv2Backbone
    assert kr.RankMixerBackbone.registry_name == "rankmixer"
    with pytest.raises(ValueError, match=r"unknown backbone name='bert'; registered: \[.*'dnn'"):
        kr.get_backbone_class("bert")
    with pytest.raises(ValueError, match="needs a Backbone subclass"):
        kr.register_backbone("layer")(keras.layers.Dense)
    with pytest.raises(ValueError, match="already registered to"):
        kr.register_backbone("rankmixer")(MeanEmbeddingBackbone)
    with pytest.raises(ValueError, match="`name` must be a non-empty string"):
        kr.register_backbone("")


# --------------------------------------------------------------------------- same numbers
def flat_rankmixer(features, t, d, layers, k, tasks):
    """The graph build_rankmixer made before backbones: one flat functional model."""
    inputs = build_inputs(features)
    x = FeatureTokenizer(t, d, name="tokenizer")(embed_groups(inputs, features))
    for i in range(layers):
        x = RankMixerBlock(hidden_ratio=k, name=f"block_{i}")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    return keras.Model(inputs, add_task_towers(pooled, tasks), name="rankmixer")


def test_ranker_equals_the_flat_model_with_the_same_weights():
    ranker = kr.Ranker(kr.RankMixerBackbone(SPECS, 4, 16, 2, 2), tasks=["a", "b"])
    flat = flat_rankmixer(SPECS, 4, 16, 2, 2, ["a", "b"])
    # same layers, same names, same weights in the same order
    assert [w.path for w in flat.weights] == [w.path for w in ranker.weights]
    flat.set_weights(ranker.get_weights())
    for layer in flat.layers:
        if layer.weights:
            for w, v in zip(layer.weights, ranker.get_layer(layer.name).weights, strict=True):
                np.testing.assert_array_equal(np.asarray(w), np.asarray(v))
    x = batch()
    x["price"][0] = np.nan
    got, want = predict(ranker, x), predict(flat, x)
    for task in ("a", "b"):
        np.testing.assert_allclose(got[task], want[task], rtol=1e-6, atol=1e-7)
    # build_rankmixer is this ranker
    built = kr.build_rankmixer(SPECS, 4, 16, 2, 2, tasks=["a", "b"])
    built.set_weights(ranker.get_weights())
    np.testing.assert_array_equal(predict(built, x)["b"], got["b"])


def test_backbone_output_is_the_representation_the_towers_read():
    ranker = kr.build_rankmixer(SPECS, 4, 16, 1, 2, tower_units=())
    x = batch()
    rep = np.asarray(ranker.backbone.predict(x, verbose=0))
    assert rep.shape == (6, 16) and ranker.backbone.output_dim == 16
    k, b = ranker.get_layer("click").get_weights()
    assert_all_close(predict(ranker, x)["click"], 1 / (1 + np.exp(-(rep @ k + b))), atol=1e-6)


# --------------------------------------------------------------------------- configs
BACKBONES = {
    "rankmixer": lambda: kr.RankMixerBackbone(
        SPECS, 4, 16, 2, 2, activation="gelu_tanh", pooling="flatten", use_residual=False
    ),
    "rankmixer_moe": lambda: kr.RankMixerBackbone(
        SPECS, 4, 16, 1, moe={"num_experts": 2, "hidden_ratio": 0.5}
    ),
    "rankmixer_init": lambda: kr.RankMixerBackbone(
        SPECS, 2, 8, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=3)
    ),
    "dnn": lambda: kr.DNNBackbone(SPECS, (8, 4), batch_norm=True, dropout=0.1),
    "dcnv2": lambda: kr.DCNv2Backbone(SPECS, 2, 3, (5,), "stacked", embedding_l2=0.01),
}


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_backbone_config_and_keras_file_round_trip(kind, tmp_path):
    backbone = BACKBONES[kind]()
    config = backbone.get_config()
    json.dumps(config)  # plain data
    assert config["features"] == [feature_to_config(f) for f in SPECS]
    clone = type(backbone).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(backbone.get_weights())
    x = batch()
    assert_all_close(clone.predict(x, verbose=0), backbone.predict(x, verbose=0), atol=1e-6)
    loaded = keras_file_round_trip(backbone, tmp_path)
    assert type(loaded) is type(backbone) and loaded.features == SPECS
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), backbone.predict(x, verbose=0))
    assert len(loaded.losses) == len(backbone.losses)


def test_ffn_factory_layers_survive_saving(tmp_path):
    model = kr.build_rankmixer(
        SPECS, 4, 16, 2, 2, ffn_factory=lambda i: kr.layers.PerTokenFFN(hidden_dim=3 + i)
    )
    assert model.backbone.get_config()["block_ffns"][1]["config"]["hidden_dim"] == 4
    loaded = keras_file_round_trip(model, tmp_path)
    assert loaded.get_layer("block_1").ffn.ffn_dim == 4
    x = batch()
    np.testing.assert_array_equal(predict(loaded, x)["click"], predict(model, x)["click"])


def test_embedding_l2_is_part_of_the_backbone_config(tmp_path):
    backbone = kr.RankMixerBackbone(SPECS, 4, 16, 1, embedding_l2=0.01)
    tables = [
        backbone.get_layer(f"embed_{n}").get_weights()[0] for n in ("user", "history", "item")
    ]
    want = sum(0.01 * np.sum(np.square(t)) for t in tables)
    assert len(backbone.losses) == 3
    np.testing.assert_allclose(sum(float(v) for v in backbone.losses), want, rtol=1e-5)
    # set_embedding_l2 on a built ranker records it in the backbone, so it survives saving
    ranker = set_embedding_l2(kr.build_rankmixer(SPECS, 4, 16, 1), 0.01)
    assert ranker.backbone.embedding_l2 == 0.01 and len(ranker.losses) == 3
    loaded = keras_file_round_trip(ranker, tmp_path)
    assert loaded.backbone.embedding_l2 == 0.01
    np.testing.assert_allclose(
        sum(float(v) for v in loaded.losses), sum(float(v) for v in ranker.losses), rtol=1e-6
    )
    with pytest.raises(ValueError, match="l2=-1"):
        kr.RankMixerBackbone(SPECS, 4, 16, 1, embedding_l2=-1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_layers": -1}, "num_layers"),
        ({"pooling": "max"}, "pooling"),
        ({"num_layers": 0, "moe": {"num_experts": 2}}, "num_layers >= 1"),
        ({"moe": [2]}, "`moe` must be a dict"),
        ({"block_ffns": [None]}, "one layer per block"),
        ({"activation": "bogus"}, "`activation` must be"),
        ({"num_tokens": 0}, "num_tokens"),
    ],
)
def test_rankmixer_backbone_argument_errors(kwargs, match):
    args = {"num_tokens": 4, "token_dim": 16, "num_layers": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kr.RankMixerBackbone(SPECS, **args)


# --------------------------------------------------------------------------- presets
def test_from_preset_builds_the_presets_class_with_overrides():
    backbone = kr.Backbone.from_preset("tiny", features=SPECS, num_layers=1, name="bb")
    assert type(backbone) is kr.RankMixerBackbone and backbone.name == "bb"
    assert (backbone.num_tokens, backbone.token_dim, backbone.num_layers) == (4, 32, 1)
    assert type(kr.RankMixerBackbone.from_preset("tiny", features=SPECS)) is kr.RankMixerBackbone
    with pytest.raises(ValueError, match="preset 'tiny' is a RankMixerBackbone, not a DNNBackbone"):
        kr.DNNBackbone.from_preset("tiny", features=SPECS)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        kr.Backbone.from_preset("huge", features=SPECS)


# --------------------------------------------------------------------------- feature specs
def test_model_features_from_the_model_or_a_features_file(tmp_path):
    ranker = kr.build_from_preset("tiny", SPECS)
    assert kr.model_features(ranker) == SPECS == ranker.features == ranker.backbone.features
    assert kr.model_features(ranker.backbone) == SPECS
    # an old flat functional model has no backbone: its run's features.json gives the specs
    flat = flat_rankmixer(SPECS, 4, 16, 1, 2, ["click"])
    with pytest.raises(ValueError, match="pass `features_file`"):
        kr.model_features(flat)
    path = os.path.join(str(tmp_path), "features.json")
    with open(path, "w") as f:
        json.dump([feature_to_config(s) for s in SPECS], f)
    assert kr.model_features(flat, path) == SPECS
    assert kr.model_features(keras_file_round_trip(flat, tmp_path), path) == SPECS

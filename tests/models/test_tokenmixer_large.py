"""TokenMixerLargeBackbone and TokenMixerLargeRanker: composition of the layers with the
inter-layer residuals, the auxiliary losses (value, training only, absent from serving),
tokenizer options, round trips, presets' counts, a learning fit and mixed_bfloat16.

Kept fast: the one XLA (`jit_compile=True`) fit is the mixed_bfloat16 one, of the smallest
model that still has an auxiliary head (2 blocks, inter-residual every block), for 2 steps; the
learning check fits in a traced graph without XLA (nothing to compile)."""

import warnings

import keras
import numpy as np
import pytest
from helpers import assert_all_close, keras_file_round_trip, model_batch, model_specs, to_numpy

import keras_rankmixer as kr
from keras_rankmixer.data import make_click_data
from keras_rankmixer.models import TokenMixerLargeBackbone, TokenMixerLargeRanker
from keras_rankmixer.models.presets import BACKBONE_PRESETS, preset_names
from keras_rankmixer.models.tokenmixer_large_backbone import block_counts

SPECS = model_specs() + [
    kr.CategoricalFeature("hour", vocabulary_size=24, embedding_dim=4, group="context"),
]  # 3 groups -> 4 tokens with the global token


def batch(n=6, seed=0):
    """`helpers.model_batch` plus the hour of the context group."""
    return {**model_batch(n, seed), "hour": np.random.default_rng([seed, 1]).integers(0, 24, n)}


def labels(n=6, seed=1, tasks=("click",)):
    rng = np.random.default_rng(seed)
    return {t: rng.integers(0, 2, (n, 1)).astype("float32") for t in tasks}


def backbone(**kw):
    kw.setdefault("token_dim", 8)
    kw.setdefault("num_layers", 4)
    kw.setdefault("hidden_ratio", 1)
    return TokenMixerLargeBackbone(SPECS, **kw)


def rms(x, scale, eps):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * scale


@pytest.mark.parametrize(
    "num_layers,every,points", [(4, 2, [1]), (5, 2, [1, 3]), (6, 3, [2]), (2, 2, []), (4, 0, [])]
)
def test_inter_residual_points_never_after_the_last_block(num_layers, every, points):
    b = backbone(num_layers=num_layers, inter_residual_every=every)
    assert b.aux_layer_names == [f"inter_residual_{i}" for i in points]


def test_backbone_is_the_composition_of_its_layers():
    """tokens -> blocks, + inter-residual after block 1 and 3 (of 5), final RMSNorm, global."""
    b = backbone(num_layers=5, num_heads=2, dropout=0.0)
    for layer in b.layers:  # non-trivial norm scales
        for w in layer.weights:
            if w.name == "scale":
                w.assign(np.random.default_rng(3).uniform(0.5, 1.5, w.shape).astype("float32"))
    x = batch()
    tokens = keras.Model(b.input, b.get_layer("tokenizer").output)(x)
    h, residual = to_numpy(tokens), to_numpy(tokens)
    assert h.shape == (6, 4, 8) and b.num_tokens_out == 4
    for i in range(5):
        h = to_numpy(b.get_layer(f"block_{i}")(h))
        if i in (1, 3):
            h = h + residual
            residual = h
    final = b.get_layer("final_norm")
    h = rms(h, to_numpy(final.scale), final.epsilon)
    assert_all_close(b(x), h[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,tokens,width",
    [
        ({"tokenizer": "shared_mlp", "num_tokens": 8, "readout": "mean"}, 8, 8),
        ({"tokenizer": "slice", "num_tokens": 2, "readout": "flatten"}, 2, 16),
        ({"global_token": False, "readout": "mean", "num_tokens": 3, "num_heads": 2}, 3, 8),
    ],
)
def test_tokenizer_and_readout_options(kwargs, tokens, width):
    b = backbone(num_layers=1, **kwargs)
    assert b.num_tokens_out == tokens and b.output_dim == width
    assert b.get_layer("block_0").num_tokens == tokens
    assert to_numpy(b(batch())).shape == (6, width)


def test_plain_ranker_on_the_backbone_and_block_options_reach_the_blocks():
    b = backbone(num_layers=2, use_revert=False, ffn="gelu", norm="post_layer_norm")
    ranker = kr.Ranker(b, tasks=["click"])
    assert sorted(ranker.predict(batch(), verbose=0)) == ["click"]
    block = ranker.get_layer("block_1")
    assert (block.use_revert, block.ffn, block.norm) == (False, "gelu", "post_layer_norm")


def test_aux_heads_exist_only_in_training():
    ranker = TokenMixerLargeRanker(backbone(num_layers=5), tasks=["click", "like"])
    assert ranker.aux_output_names == ["click_aux_1", "like_aux_1", "click_aux_3", "like_aux_3"]
    x = batch()
    train = ranker(x, training=True)
    assert sorted(train) == sorted(["click", "like", *ranker.aux_output_names])
    serve = ranker(x, training=False)
    assert sorted(serve) == ["click", "like"] and sorted(ranker.output_names) == ["click", "like"]
    assert sorted(ranker.predict(x, verbose=0)) == ["click", "like"]
    assert_all_close(train["click"], to_numpy(serve["click"]), atol=1e-6)  # same graph
    aux_weights = [w for w in ranker.trainable_weights if "_aux_" in w.path]
    assert len(aux_weights) == 8  # kernel + bias of 4 heads, trained with the ranker


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export: TF")
def test_exported_signature_has_only_the_task_outputs(tmp_path):
    import tensorflow as tf

    from keras_rankmixer.export import export_saved_model

    ranker = TokenMixerLargeRanker(
        backbone(num_layers=2, inter_residual_every=1), tasks=["click", "like"]
    )
    assert ranker.aux_output_names == ["click_aux_0", "like_aux_0"]
    result = export_saved_model(ranker, str(tmp_path), "tml", warmup_inputs=batch(4))
    signature = tf.saved_model.load(result.path).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == ["click", "like"]
    assert max(result.max_abs_diff.values()) < 1e-5
    serving = ranker.serving_model()
    assert len(serving.weights) == len(ranker.weights) - 5  # aux norm + 2 heads
    for task in ("click", "like"):
        assert_all_close(serving.predict(batch(), verbose=0)[task], ranker.predict(batch())[task])


def test_aux_loss_value():
    ranker = TokenMixerLargeRanker(backbone(), tasks={"click": {}, "like": {"loss_weight": 0.5}})
    ranker.compile(jit_compile=False)
    x, y = batch(), labels(tasks=("click", "like"))
    y_pred = ranker(x, training=True)
    total = float(to_numpy(ranker.compute_loss(x, y, y_pred)))
    main = float(
        to_numpy(kr.Ranker.compute_loss(ranker, x, y, {t: y_pred[t] for t in ("click", "like")}))
    )

    def bce(t, p):
        p = np.clip(to_numpy(p).astype("float64"), 1e-7, 1 - 1e-7)
        return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))

    aux = bce(y["click"], y_pred["click_aux_1"]) + 0.5 * bce(y["like"], y_pred["like_aux_1"])
    np.testing.assert_allclose(total - main, 0.1 * aux, rtol=1e-4)
    assert aux > 0.1


def test_aux_loss_weight_zero_or_no_point_is_a_plain_ranker():
    for ranker in (
        TokenMixerLargeRanker(backbone(), aux_loss_weight=0.0),
        TokenMixerLargeRanker(backbone(num_layers=2)),
    ):
        assert ranker.aux_output_names == [] and sorted(ranker(batch(), training=True)) == ["click"]


def test_keras_file_round_trip(tmp_path):
    ranker = TokenMixerLargeRanker(
        backbone(num_layers=3, num_heads=2, tokenizer_dropout=0.1, dropout=0.1),
        tasks=["a", "b"],
        aux_loss_weight=0.25,
    )
    x = batch()
    loaded = keras_file_round_trip(ranker, tmp_path)
    assert isinstance(loaded, TokenMixerLargeRanker) and loaded.aux_loss_weight == 0.25
    assert isinstance(loaded.backbone, TokenMixerLargeBackbone)
    assert loaded.backbone.get_config() == ranker.backbone.get_config()
    assert loaded.aux_output_names == ranker.aux_output_names
    for task in ("a", "b"):
        assert_all_close(loaded.predict(x, verbose=0)[task], ranker.predict(x, verbose=0)[task])
    clone = TokenMixerLargeBackbone.from_config(ranker.backbone.get_config())
    assert clone.get_config() == ranker.backbone.get_config()


@pytest.mark.slow  # ~90 s on JAX: `make test-jax` leaves it to the TensorFlow run
def test_fit_learns_a_synthetic_click_task():
    """Learning, checked in a traced graph without XLA (half the eager time; the XLA fit is
    test_mixed_bfloat16_jit_fit_...)."""
    keras.utils.set_random_seed(0)
    data = make_click_data(4000, seed=3, num_categorical=6, max_vocab=200, num_numeric=2)
    train, valid = data.split(0.75)
    b = TokenMixerLargeBackbone(
        data.specs,
        token_dim=16,
        num_layers=3,
        hidden_ratio=1,
        tokenizer="shared_mlp",
        num_tokens=4,
        readout="mean",
    )
    model = TokenMixerLargeRanker(b, tower_units=(16,))
    model.compile(learning_rate=3e-3, jit_compile=False, run_eagerly=False)
    before = model.evaluate(valid.features, valid.labels, verbose=0, return_dict=True)
    hist = model.fit(train.features, train.labels, batch_size=256, epochs=3, verbose=0)
    after = model.evaluate(valid.features, valid.labels, verbose=0, return_dict=True)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert after["auc"] > before["auc"] + 0.1, (before, after)


def test_mixed_bfloat16_jit_fit_with_aux_losses_and_sparse_moe():
    keras.config.set_dtype_policy("mixed_bfloat16")
    moe = {"num_experts": 2, "top_k": 1, "load_balance_weight": 0.01}
    b = backbone(num_layers=2, inter_residual_every=1, num_heads=2, ffn="moe", moe=moe)
    ranker = TokenMixerLargeRanker(b, tasks=["click", "like"])
    assert ranker.aux_output_names == ["click_aux_0", "like_aux_0"]
    assert ranker.get_layer("block_0").mix_ffn.compute_dtype == "bfloat16"
    assert ranker.get_layer("block_0").mix_ffn.dispatch == "sparse"
    ranker.compile(jit_compile=True, metrics=None)  # no AUC: it doubles the XLA compile
    x, y = batch(8), labels(8, tasks=("click", "like"))
    before = [to_numpy(w).copy() for w in ranker.trainable_weights]
    hist = ranker.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 steps
    assert np.isfinite(hist.history["loss"]).all()
    after = [to_numpy(w) for w in ranker.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))
    out = ranker.predict(x, verbose=0)  # the XLA-compiled inference step (sparse MoE)
    assert sorted(out) == ["click", "like"] and out["click"].dtype == np.float32


def test_presets_counts_and_from_preset():
    names = preset_names("tokenmixer_large")
    assert names == [
        "tokenmixer_large_100m",
        "tokenmixer_large_1b",
        "tokenmixer_large_base",
        "tokenmixer_large_small",
    ]
    base = BACKBONE_PRESETS["tokenmixer_large_base"]  # the CLI default: counts at T = 8
    assert base.config["num_tokens"] is None and base.count_tokens == 8
    assert TokenMixerLargeBackbone.block_counts(**base.count_config()) == {
        "block_params": base.block_params,
        "block_flops_per_sample": base.block_flops_per_sample,
    }
    names = [n for n in names if n != "tokenmixer_large_base"]  # the paper-shape ones
    for name, target in zip(names, (107e6, 1.1e9, 9.47e6), strict=True):
        p = BACKBONE_PRESETS[name]
        counts = TokenMixerLargeBackbone.block_counts(**p.config)
        assert counts == {
            "block_params": p.block_params,
            "block_flops_per_sample": p.block_flops_per_sample,
        }
        assert abs(p.block_params - target) / target < 0.10, name
        assert p.config["token_dim"] % p.config["num_tokens"] == 0  # H = T heads
    small = TokenMixerLargeBackbone.from_preset("tokenmixer_large_small", SPECS, num_layers=2)
    assert small.num_layers == 2 and small.num_tokens_out == 16


def blocks_counted(b):
    """Parameters and forward FLOPs per example of a built backbone's blocks."""
    blocks = [b.get_layer(f"block_{i}") for i in range(b.num_layers)]
    params = sum(int(np.prod(w.shape)) for blk in blocks for w in blk.weights)
    flops = sum(
        layer.flops_per_sample()
        for blk in blocks
        for layer in blk._flatten_layers(include_self=False)
        if hasattr(layer, "flops_per_sample")
    )
    return {"block_params": params, "block_flops_per_sample": flops}


@pytest.mark.parametrize(
    "specs,groups",
    [
        (SPECS, 3),  # user, item, context
        # no `group` given: every feature is in the one group "default"
        ([kr.CategoricalFeature("a", vocabulary_size=9), kr.NumericFeature("b")], 1),
    ],
)
def test_base_preset_takes_t_from_the_feature_groups(specs, groups):
    """`tokenmixer_large_base` is the group-tokenizer config (D=64, H=8, L=2, n=2, flatten,
    L2 0.01): T = groups + 1, and its blocks count as `block_counts` at that T."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = TokenMixerLargeBackbone.from_preset("tokenmixer_large_base", specs)
    # one group only: a warning says how to get more tokens
    said = [str(w.message) for w in caught if "single feature group" in str(w.message)]
    assert len(said) == (groups == 1) and all("2 token(s)" in m for m in said)
    assert b.tokenizer == "group" and b.global_token and b.num_tokens is None
    assert b.num_tokens_out == groups + 1
    assert (b.token_dim, b.num_heads, b.num_layers, b.hidden_ratio) == (64, 8, 2, 2)
    assert b.readout == "flatten" and b.embedding_l2 == 0.01
    assert tuple(b.output.shape) == (None, (groups + 1) * 64)
    config = {**BACKBONE_PRESETS["tokenmixer_large_base"].config, "num_tokens": groups + 1}
    expected = TokenMixerLargeBackbone.block_counts(**config)
    assert blocks_counted(b) == expected
    if groups == 3:  # T = 4: two banks of 8 mixed tokens of width 32 / 4 tokens of width 64
        assert expected == {"block_params": 300_224, "block_flops_per_sample": 589_824}
    # the tokenizer checks an explicit T against the groups
    with pytest.raises(ValueError, match="num_tokens"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the single-group warning, checked above
        TokenMixerLargeBackbone.from_preset("tokenmixer_large_base", specs, num_tokens=8)


def test_ranker_from_preset_builds_the_backbones_task():
    """`Ranker.from_preset` of a TokenMixer-Large preset is a `TokenMixerLargeRanker` (its
    `task_class`), so the auxiliary losses are on; its own arguments go to it."""
    assert TokenMixerLargeBackbone.task_class_of() is TokenMixerLargeRanker
    assert kr.RankMixerBackbone.task_class_of() is kr.Ranker
    small = dict(token_dim=8, hidden_ratio=1, num_layers=3, num_tokens=2)
    ranker = kr.Ranker.from_preset(
        "tokenmixer_large_small", SPECS, aux_loss_weight=0.3, tower_units=(4,), **small
    )
    assert type(ranker) is TokenMixerLargeRanker and ranker.aux_loss_weight == 0.3
    assert ranker.aux_output_names == ["click_aux_1"] and ranker.backbone.num_layers == 3
    direct = TokenMixerLargeRanker.from_preset("tokenmixer_large_small", SPECS, **small)
    assert type(direct) is TokenMixerLargeRanker
    assert type(kr.Ranker.from_preset("tiny", SPECS)) is kr.Ranker


@pytest.mark.parametrize("heads", [2, 4, 8])  # H < T, H = T, H > T
def test_block_counts_match_the_built_layers(heads):
    b = backbone(num_layers=2, token_dim=8, hidden_ratio=1.5, num_heads=heads)
    counted = blocks_counted(b)
    assert counted == block_counts(4, 8, 2, 1.5, heads)
    flops = counted["block_flops_per_sample"]
    # count_model counts each block's FFNs once, plus the tokenizer's and towers' Dense layers
    ranker = kr.Ranker(b)
    dense = sum(
        2 * int(np.prod(layer.kernel.shape))
        for layer in ranker._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dense)
    )
    assert kr.count_model(ranker)["flops_per_sample"] == flops + dense


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"tokenizer": "bpe"}, "tokenizer"),
        ({"tokenizer": "shared_mlp"}, "num_tokens"),
        ({"tokenizer": "shared_mlp", "num_tokens": 4}, "readout"),  # no global token there
        ({"num_tokens": 5}, "num_tokens"),  # the group tokenizer makes 4
        ({"readout": "max"}, "readout"),
        ({"inter_residual_every": -1}, "inter_residual_every"),
        ({"inter_residual_every": 1.5}, "inter_residual_every"),
        ({"num_layers": -1}, "num_layers"),
        ({"token_dim": 0}, "token_dim"),
        ({"tokenizer_dropout": 1.0}, "tokenizer_dropout"),
        ({"ffn": "moe"}, "moe"),
        ({"num_heads": 3}, "divisible"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        backbone(**kwargs)


def test_ranker_bad_arguments():
    with pytest.raises(ValueError, match="aux_loss_weight"):
        TokenMixerLargeRanker(backbone(), aux_loss_weight=-1)
    rankmixer = kr.RankMixerBackbone(SPECS, num_tokens=2, token_dim=8, num_layers=1)
    with pytest.raises(ValueError, match="TokenMixerLargeBackbone"):
        TokenMixerLargeRanker(rankmixer)


def test_block_options_default_to_the_blocks_own_defaults():
    import inspect

    from keras_rankmixer.layers.tokenmixer_large_block import TokenMixerLargeBlock
    from keras_rankmixer.models.tokenmixer_large_backbone import BLOCK_DEFAULTS

    block = inspect.signature(TokenMixerLargeBlock.__init__).parameters
    backbone = inspect.signature(TokenMixerLargeBackbone.__init__).parameters
    assert len(BLOCK_DEFAULTS) == 9
    for name, default in BLOCK_DEFAULTS.items():
        assert backbone[name].default == block[name].default == default, name
    b = TokenMixerLargeBackbone(SPECS, token_dim=8, num_layers=1)
    layer = b.get_layer("block_0")
    assert (layer.norm, layer.ffn, layer.down_init_scale) == ("pre_rms", "swiglu", 0.01)
    assert b.norm == "pre_rms" and b.moe is None

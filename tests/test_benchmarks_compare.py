"""benchmarks/compare.py on a tiny synthetic two-task dataset: tuning never asks for the test
split, equal grids per model, per-task metrics, results.jsonl, Markdown and the plot."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import compare  # noqa: E402


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    from keras_rankmixer.features import CategoricalFeature, NumericFeature

    asked = []

    def load(data_dir, embedding_dim, splits, train_limit=0):
        asked.append(tuple(splits))
        specs = [
            CategoricalFeature(f"c{i}", vocabulary_size=20, embedding_dim=embedding_dim, group=g)
            for i, g in enumerate(("user", "user", "item", "item"))
        ] + [NumericFeature("n0", embedding_dim=embedding_dim, group="item")]
        out = {}
        for k, split in enumerate(splits):
            rng = np.random.default_rng(k)
            n = 256
            x = {f"c{i}": rng.integers(0, 20, n) for i in range(4)}
            x["n0"] = rng.normal(size=n).astype("float32")
            y = {
                "a": (x["c0"] % 2 == 0).astype("int64"),
                "b": ((x["c2"] < 10) ^ (x["n0"] > 1)).astype("int64"),
            }
            out[split] = (x, y)
        return specs, out

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "here").write_text("")
    ds = {
        "benchmark": "tiny",
        "data_dir": str(tmp_path / "data"),
        "present": "here",
        "load": load,
        "tasks": ("a", "b"),
        "settings": {
            "embedding_dim": 4,
            "batch_size": 128,
            "learning_rate": 1e-2,
            "patience": 1,
            "max_epochs": 1,
            "embedding_l2": 0.0,
        },
        "configs": {
            "dnn": {"hidden_units": [8]},
            "rankmixer": {"num_tokens": 2, "token_dim": 4, "num_layers": 1, "tower_units": [4]},
        },
        "grids": {
            "dnn": [{"hidden_units": [8]}, {"hidden_units": [8], "embedding_l2": 0.01}],
            "rankmixer": [{"num_tokens": 2, "token_dim": 4, "num_layers": 1, "tower_units": [4]}],
        },
    }
    monkeypatch.setitem(compare.DATASETS, "tiny", ds)
    return asked, tmp_path


FAMILY = {
    "num_tokens": 2,
    "token_dim": 4,
    "tokenizer": "mlp",
    "tokenizer_units": [8],
    "block": "revert",
    "num_heads": 4,
    "tower_units": [4],
}


def _common(tmp_path):
    return ["--dataset", "tiny", "--seeds", "1", "--no-jit", "--output", str(tmp_path / "out")]


def test_tune_reads_no_test_split_and_gives_every_model_the_same_budget(tiny, capsys):
    asked, tmp_path = tiny
    argv = _common(tmp_path) + ["--tune", "--models", "dnn,rankmixer"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert asked == [("train", "valid")]
    assert "unequal grids" in out  # dnn has 2 configs, rankmixer 1: both get 1
    runs = [json.loads(x) for x in open(tmp_path / "out" / "tune.jsonl")]
    assert [r["model"] for r in runs] == ["dnn", "rankmixer"]
    for r in runs:
        assert "test_auc" not in r and "test_a_auc" not in r
        assert {"valid_a_auc", "valid_b_auc"} <= set(r)
        assert r["valid_auc"] == pytest.approx(np.mean([r["valid_a_auc"], r["valid_b_auc"]]))
    assert json.loads(out.strip().splitlines()[-1])["tune"] is True
    best = compare.best_configs(runs + [dict(runs[0], valid_auc=2.0, config={"x": 1})], "tiny")
    assert best == {"dnn": {"x": 1}, "rankmixer": runs[1]["config"]}


def test_seeds_report_per_task_test_metrics_markdown_and_plot(tiny, capsys):
    asked, tmp_path = tiny
    plot = tmp_path / "plots" / "auc.png"
    argv = _common(tmp_path) + [
        "--models",
        "family",
        "--config",
        "family=" + json.dumps(FAMILY),
        "--plot",
        str(plot),
    ]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert asked == [("train", "valid", "test")]
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert [r["model"] for r in rows] == ["family"]
    for r in rows:
        assert {"test_a_auc_mean", "test_b_logloss_std", "params", "flops_per_sample"} <= set(r)
        assert r["params"] > 0 and r["flops_per_sample"] > 0
    assert "| a valid AUC | a AUC | a logloss | b valid AUC | b AUC | b logloss |" in out
    assert plot.exists() and plot.stat().st_size > 1000
    # --summarize reads the same rows back from results.jsonl
    assert (
        compare.main(["--dataset", "tiny", "--summarize", str(tmp_path / "out" / "results.jsonl")])
        == 0
    )
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["test_a_auc_mean"] for r in again] == [r["test_a_auc_mean"] for r in rows]


@pytest.mark.parametrize(
    "block,tokenizer",
    [("rankmixer", "field"), ("prenorm", "field"), ("revert", "field"), ("tml", "group"),
     ("tml", "shared_mlp")],
)  # fmt: skip
def test_family_blocks_build_and_keep_the_token_shape(block, tokenizer):
    from keras_rankmixer.features import CategoricalFeature

    specs = [
        CategoricalFeature(f"c{i}", vocabulary_size=5, embedding_dim=4, group="ab"[i % 2])
        for i in range(4)
    ]
    heads = 1 if tokenizer == "group" else 4  # 3 tokens of width 4 (two groups + global)
    cfg = dict(FAMILY, block=block, tokenizer=tokenizer, num_layers=2, num_heads=heads)
    model = compare.build_family(specs, ["a"], **cfg)
    x = {f"c{i}": np.array([1, 2, 3]) for i in range(4)}
    assert model(x)["a"].shape == (3, 1)
    with pytest.raises(ValueError, match="block"):
        compare.build_family(specs, ["a"], **dict(cfg, block="other"))


def test_tokenmixer_large_trains_with_its_auxiliary_losses(tiny, capsys):
    _, tmp_path = tiny
    cfg = {"token_dim": 6, "num_layers": 2, "inter_residual_every": 1, "tower_units": [4]}
    argv = _common(tmp_path) + ["--models", "tokenmixer_large", "--config"]
    assert compare.main(argv + ["tokenmixer_large=" + json.dumps(cfg)]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert row["model"] == "tokenmixer_large" and 0 < row["test_a_auc_mean"] <= 1


def test_skips_without_data(tmp_path, capsys):
    argv = ["--dataset", "census", "--data-dir", str(tmp_path / "absent")]
    assert compare.main(argv) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"benchmark": "census_income", "skipped": True}


def test_feature_gate_matches_finalmlp_formula():
    """FinalMLP's feature selection: x * 2 * sigmoid(W2 relu(W1 c + b1) + b2), in NumPy."""
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    gate = compare._FeatureGate((5,), name="g")
    out = np.asarray(gate([x, c]))
    (w1, b1), (w2, b2) = [
        [np.asarray(v) for v in layer.weights] for layer in gate.hidden + [gate.gate]
    ]
    logits = np.maximum(c @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(out, x * 2 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    # no context: a learned vector, zeros at first -> the same gate for every row
    free = np.asarray(compare._FeatureGate((5,), name="free")([x]))
    np.testing.assert_allclose(free / x, np.broadcast_to((free / x)[:1], x.shape), rtol=1e-5)


def test_family_finalmlp_head_with_gating_and_its_reference():
    from keras_rankmixer.features import CategoricalFeature

    specs = [CategoricalFeature(f"c{i}", vocabulary_size=5, embedding_dim=4) for i in range(4)]
    head = dict(fusion="bilinear", fusion_heads=2, tower_units=[8], stream_2_units=[4])
    gating = {"context_1": ["c0"], "context_2": ["c1"], "units": [6]}
    x = {f"c{i}": np.array([1, 2, 3]) for i in range(4)}
    family = compare.build_family(
        specs, ["a"], num_tokens=4, token_dim=8, feature_gating=gating, **head
    )
    finalmlp = compare.build_family(
        specs, ["a"], num_tokens=4, token_dim=8, num_layers=0, tokenizer="none",
        feature_gating=gating, **head,
    )  # fmt: skip
    for model in (family, finalmlp):
        y = np.asarray(model(x)["a"])
        assert y.shape == (3, 1) and np.all((y > 0) & (y < 1))
    names = {w.path.split("/")[0] for w in finalmlp.weights}
    assert "tokenizer" not in names and {"feature_gate_1", "feature_gate_2"} <= names
    assert "tokenizer" in {w.path.split("/")[0] for w in family.weights}
    with pytest.raises(ValueError, match="fusion"):
        compare.build_family(specs, ["a"], num_tokens=4, token_dim=8, feature_gating=gating)
    with pytest.raises(ValueError, match="divisible"):
        compare.build_family(specs, ["a"], num_tokens=3, token_dim=8, tokenizer="none")
    # raw-embedding tokens refined by a TokenMixer-Large block (4 tokens of 4 values)
    raw = compare.build_family(
        specs, ["a"], num_tokens=4, token_dim=4, tokenizer="none", block="tml", num_heads=1
    )
    assert raw(x)["a"].shape == (3, 1)


def test_drop_path_keeps_or_skips_each_sample_and_is_the_block_at_inference():
    """Stochastic depth: x + m (y - x) / (1 - p) per sample in training; y at inference."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3, 4)).astype("float32"), rng.normal(size=(64, 3, 4))
    y = y.astype("float32")
    layer = compare._DropPath(0.25, name="dp")
    np.testing.assert_allclose(np.asarray(layer([x, y], training=False)), y)
    out = np.asarray(layer([x, y], training=True))
    kept = np.isclose(out, x + (y - x) / 0.75, atol=1e-5).all(axis=(1, 2))
    skipped = np.isclose(out, x, atol=1e-6).all(axis=(1, 2))
    assert np.all(kept ^ skipped) and 0 < kept.sum() < 64  # whole samples, some of each
    from keras_rankmixer.features import CategoricalFeature

    specs = [CategoricalFeature(f"c{i}", vocabulary_size=5, embedding_dim=4) for i in range(4)]
    cfg = dict(FAMILY, block="rankmixer", num_layers=2, drop_path=0.5)
    model = compare.build_family(specs, ["a"], **cfg)
    assert sum("drop_path" in layer.name for layer in model.layers) == 2
    tml = compare.build_family(specs, ["a"], **dict(cfg, block="tml", num_heads=1))
    assert sum("drop_path" in layer.name for layer in tml.layers) == 2
    with pytest.raises(ValueError, match="drop_path"):
        compare.build_family(specs, ["a"], **dict(cfg, block="prenorm"))


def test_weight_decay_setting_trains_with_adamw_and_spares_the_embeddings(tiny, capsys):
    _, tmp_path = tiny
    cfg = dict(FAMILY, weight_decay=0.1)
    argv = _common(tmp_path) + ["--models", "family", "--config", "family=" + json.dumps(cfg)]
    assert compare.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert row["config"]["weight_decay"] == 0.1 and 0 < row["test_a_auc_mean"] <= 1
    assert "weight_decay=0.1" in row["settings"]
    # a run without weight decay is a separate row of the summary, not another seed of it
    (run,) = compare._load_results([str(tmp_path / "out" / "results.jsonl")])
    plain = dict(run, config=dict(FAMILY), settings=dict(run["settings"], weight_decay=0))
    assert len(compare.summarize([run, plain])) == 2
    import keras

    # one AdamW step from zero gradients: only the decay moves a weight, and not an embedding
    opt = compare.make_optimizer(0.1, 0.5)
    emb = keras.Variable(np.ones(2, "float32"), name="embeddings")
    kernel = keras.Variable(np.ones(2, "float32"), name="kernel")
    opt.apply_gradients([(np.zeros(2, "float32"), emb), (np.zeros(2, "float32"), kernel)])
    np.testing.assert_allclose(np.asarray(emb), 1.0)
    np.testing.assert_allclose(np.asarray(kernel), 1.0 - 0.1 * 0.5, rtol=1e-6)


def test_token_skip_gives_the_tower_the_tokens_beside_the_blocks():
    from keras_rankmixer.features import CategoricalFeature

    specs = [CategoricalFeature(f"c{i}", vocabulary_size=5, embedding_dim=4) for i in range(4)]
    cfg = dict(FAMILY, block="rankmixer", num_layers=1)
    plain = compare.build_family(specs, ["a"], **cfg)
    skip = compare.build_family(specs, ["a"], **dict(cfg, token_skip=True))
    width = plain.get_layer("flatten_tokens").output.shape[-1]
    assert skip.get_layer("tokens_and_blocks").output.shape[-1] == 2 * width
    # the skipped tokens are the tokenizer's output itself, before any block
    assert skip.get_layer("flatten_skip_tokens").input is skip.get_layer("tokens").output
    x = {f"c{i}": np.array([1, 2, 3]) for i in range(4)}
    assert skip(x)["a"].shape == (3, 1)
    with pytest.raises(ValueError, match="token_skip"):
        compare.build_family(specs, ["a"], **dict(cfg, token_skip=True, pooling="mean"))

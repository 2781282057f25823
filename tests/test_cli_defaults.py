"""The defaults of `rankmixer train` are what validation favoured (issue #18,
benchmarks/RESULTS.md "Defaults: what validation favours"): RankMixer `rankmixer_base`
(T=8, D=64, L=1, k=4, flatten pooling, towers (400, 400, 400) + batch norm + dropout 0.2,
embedding L2 0.01), DNN / DCNv2 with BARS' MLP (400, 400, 400) + batch norm + dropout 0.2 and
embedding L2 0.01 (DCNv2: 3 cross layers), LR / 10 on a plateau and patience 2; flags win."""

from __future__ import annotations

import pytest
from test_cli import SPECS

from keras_rankmixer import cli
from keras_rankmixer.commands import train as train_cmd
from keras_rankmixer.models import DCNv2Backbone, DNNBackbone, RankMixerBackbone
from keras_rankmixer.training import runner

MLP = (400, 400, 400)


def built(*flags):
    args = cli.build_parser().parse_args(["train", *flags])
    config = runner.check_config(train_cmd.config_from_args(args))
    return config, runner.build_model(config, SPECS)


def test_rankmixer_default_is_the_validated_config():
    config, model = built()
    assert config["preset"] == "rankmixer_base"
    assert config["reduce_lr_on_plateau"] is True and config["patience"] == 2
    backbone = model.backbone
    assert isinstance(backbone, RankMixerBackbone)
    size = (backbone.num_tokens, backbone.token_dim, backbone.num_layers, backbone.hidden_ratio)
    assert size == (8, 64, 1, 4) and backbone.pooling == "flatten"
    assert (model.tower_units, model.tower_batch_norm, model.tower_dropout) == (MLP, True, 0.2)
    assert backbone.embedding_l2 == 0.01 and len(model.losses) == len(SPECS) - 1  # 2 tables

    # flags on top of the preset; the preset's head and L2 stay unless overridden
    config, model = built("--num-layers", "2", "--embedding-l2", "0", "--no-reduce-lr-on-plateau")
    assert model.backbone.num_layers == 2 and model.backbone.token_dim == 64
    assert model.tower_units == MLP and model.backbone.embedding_l2 == 0 and not model.losses
    assert config["reduce_lr_on_plateau"] is False
    # an explicit paper-shape preset keeps its shape and the plain head
    _, tiny = built("--preset", "tiny")
    assert (tiny.backbone.num_tokens, tiny.backbone.num_layers, tiny.tower_units) == (4, 2, (64,))
    assert tiny.backbone.pooling == "mean" and tiny.backbone.embedding_l2 == 0


@pytest.mark.parametrize("name,cls", [("dnn", DNNBackbone), ("dcnv2", DCNv2Backbone)])
def test_baseline_defaults_are_the_validated_mlp(name, cls):
    config, model = built("--model", name)
    assert config["preset"] is None
    backbone = model.backbone
    assert isinstance(backbone, cls)
    assert (backbone.hidden_units, backbone.batch_norm, backbone.dropout) == (MLP, True, 0.2)
    assert backbone.embedding_l2 == 0.01 and model.losses
    if name == "dcnv2":
        assert backbone.num_cross_layers == 3
    _, model = built("--model", name, "--dropout", "0.1", "--embedding-l2", "0")
    assert model.backbone.dropout == 0.1 and model.backbone.embedding_l2 == 0


def test_tokenmixer_large_default_is_its_base_preset():
    """`--model tokenmixer_large` starts from `tokenmixer_large_base` (#18): the group-tokenizer
    config (one token per feature group + a global token, D=64, H=8, L=2, n=2, flatten
    read-out) with rankmixer_base's head and embedding L2; T is the features' groups + 1."""
    from keras_rankmixer.models import TokenMixerLargeBackbone, TokenMixerLargeRanker

    config, model = built("--model", "tokenmixer_large")
    assert config["preset"] == "tokenmixer_large_base"
    assert isinstance(model, TokenMixerLargeRanker)
    backbone = model.backbone
    assert isinstance(backbone, TokenMixerLargeBackbone)
    assert backbone.tokenizer == "group" and backbone.global_token
    assert backbone.num_tokens is None and backbone.num_tokens_out == 3  # user, item + global
    size = (backbone.token_dim, backbone.num_heads, backbone.num_layers, backbone.hidden_ratio)
    assert size == (64, 8, 2, 2) and backbone.readout == "flatten"
    assert (model.tower_units, model.tower_batch_norm, model.tower_dropout) == (MLP, True, 0.2)
    assert backbone.embedding_l2 == 0.01 and len(model.losses) == len(SPECS) - 1  # 2 tables
    assert model.aux_output_names == []  # L=2 with an inter-residual every 2: none inside

    # slice tokens, as the README says: the tokenizer in model_kwargs and --num-tokens
    args = cli.build_parser().parse_args(
        ["train", "--model", "tokenmixer_large", "--num-tokens", "8"]
    )
    config = runner.check_config(train_cmd.config_from_args(args))
    with pytest.raises(ValueError, match="num_tokens"):  # 8 is not 2 groups + 1
        runner.build_model(config, SPECS)
    slice_model = runner.build_model({**config, "model_kwargs": {"tokenizer": "slice"}}, SPECS)
    assert slice_model.backbone.tokenizer == "slice"
    assert slice_model.backbone.num_tokens_out == 8


def test_epochs_default_follows_the_validation_split(tmp_path):
    """Up to 30 epochs where early stopping on validation AUC can end training (the
    validation runs of RESULTS.md stopped after 4-31 epochs), 10 without a validation split;
    a flag or config value wins."""
    train = tmp_path / "t.csv"
    train.write_text("label,a\n1,2\n")
    files = ["--train", str(train), "--features", "frappe"]
    assert built()[0]["epochs"] == 30  # synthetic data: it has a validation split
    config = runner.check_config(
        train_cmd.config_from_args(cli.build_parser().parse_args(["train", *files]))
    )
    assert config["epochs"] == 10
    with_valid = [*files, "--valid", str(train)]
    parsed = cli.build_parser().parse_args(["train", *with_valid])
    assert runner.check_config(train_cmd.config_from_args(parsed))["epochs"] == 30
    parsed = cli.build_parser().parse_args(["train", *with_valid, "--epochs", "4"])
    assert runner.check_config(train_cmd.config_from_args(parsed))["epochs"] == 4
    with pytest.raises(ValueError, match="epochs"):
        runner.check_config({"epochs": 0})

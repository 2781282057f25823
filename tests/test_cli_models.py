"""`rankmixer train --model NAME` from the backbone registry, and the `.keras` file alone.

- a backbone registered in a user module (`--import`) gets train -> export -> predict, and
  the SavedModel loads (and scores the same) in a Python without Keras;
- `--model tokenmixer_large` builds from its preset with the size flags on top;
- an old-style run directory (plain functional model + `features.json`) still evaluates
  and exports; a config.json from before a key existed still matches its finished run;
- plots are skipped with a one-line note when matplotlib (the `plots` extra) is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import keras
import numpy as np
import pytest
import test_cli
from helpers import keras_free_python, run_json_script
from test_cli import SPECS, config_for

from keras_rankmixer import cli
from keras_rankmixer.export import METADATA_FILE
from keras_rankmixer.features import build_inputs, embed_groups, feature_to_config
from keras_rankmixer.models import TokenMixerLargeBackbone, TokenMixerLargeRanker
from keras_rankmixer.training import run_dir as files
from keras_rankmixer.training import runner
from keras_rankmixer.training.metrics import roc_auc

TF = keras.backend.backend() == "tensorflow"
BACKBONE_MODULE = textwrap.dedent(
    '''
    """A user's backbone: concatenated embeddings -> one ReLU layer."""
    import keras

    from keras_rankmixer.models.backbone import (
        Backbone,
        concatenated_embeddings,
        feature_front_end,
        register_backbone,
    )


    @register_backbone("cli_test_mlp")
    class CliTestBackbone(Backbone):
        def __init__(self, features, width=8, dropout=0.0, dtype=None,
                     name="cli_test_backbone", **kwargs):
            features, inputs, groups = feature_front_end(features, dtype=dtype)
            x = concatenated_embeddings(groups, dtype=dtype)
            x = keras.layers.Dense(width, activation="relu", dtype=dtype, name="projection")(x)
            x = keras.layers.Dropout(dropout, dtype=dtype, name="dropout")(x)
            super().__init__(inputs=inputs, outputs=x, features=features, dtype=dtype,
                             name=name, **kwargs)
            self.width = width
            self.dropout = dropout

        def get_config(self):
            config = super().get_config()
            config.update({"width": self.width, "dropout": self.dropout})
            return config
    '''
)
LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    x = json.load(open(sys.argv[2]))
    spec = loaded.signatures["serving_default"].structured_input_signature[1]
    out = loaded.signatures["serving_default"](
        **{k: tf.constant(np.asarray(v), dtype=spec[k].dtype) for k, v in x.items()})
    print(json.dumps({
        "scores": {k: v.numpy().reshape(-1).tolist() for k, v in out.items()},
        "modules": sorted(m for m in sys.modules if m.startswith(("keras", "tf_keras"))),
    }))
    """
)


data_dir = test_cli.data_dir  # the same small click files (a module-scoped fixture)


def flags(data_dir, run_dir, *more):
    argv = ["train", "--train", str(data_dir / "train.csv"), "--valid", str(data_dir / "valid.csv")]
    argv += ["--features", str(data_dir / "features.json"), "--epochs", "1", "--no-jit"]
    argv += ["--batch-size", "16", "--patience", "0", "--run-dir", str(run_dir), "--verbose", "0"]
    return argv + list(more)


def request(n=5):
    return {
        "user": list(range(n)),
        "item": [i % 10 for i in range(n)],
        "price": [0.1 * i for i in range(n)],
    }


@pytest.mark.skipif(not TF, reason="SavedModel export needs TensorFlow")
def test_registered_backbone_from_a_user_module_train_export_predict(data_dir, tmp_path, capsys):
    module = tmp_path / "my_backbones.py"
    module.write_text(BACKBONE_MODULE)
    run_dir = tmp_path / "run"
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"model_kwargs": {"width": 6, "tower_units": [4]}}))
    base = flags(data_dir, run_dir, "--import", str(module), "--model", "cli_test_mlp")

    # size flags the backbone does not take: a one-line error before anything is written
    assert cli.main([*base, "--num-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("[train] error: backbone 'cli_test_mlp' takes no ['num_tokens']")
    assert not run_dir.exists()

    assert cli.main([*base, "--config", str(config), "--dropout", "0.1"]) == 0
    saved = json.loads((run_dir / files.CONFIG_FILE).read_text())
    assert saved["imports"] == [str(module)] and saved["preset"] is None
    model = keras.saving.load_model(run_dir / files.MODEL_FILE)
    assert type(model.backbone).__name__ == "CliTestBackbone"
    assert model.backbone.width == 6 and model.backbone.dropout == 0.1
    assert model.tower_units == (4,) and model.name == "cli_test_mlp"

    # export from the .keras file alone (no config.json / features.json beside it)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / files.MODEL_FILE, alone / "ranker.keras")
    out = tmp_path / "serving"
    argv = ["export", str(alone / "ranker.keras"), "--output", str(out), "--import", str(module)]
    assert cli.main(argv) == 0
    version = out / "rankmixer" / "1"
    metadata = json.loads((version / "assets.extra" / METADATA_FILE).read_text())
    assert [f["name"] for f in metadata["features"]] == [s.name for s in SPECS]

    x = request()
    want = model.predict({k: np.asarray(v) for k, v in x.items()}, verbose=0)["label"]
    (tmp_path / "x.json").write_text(json.dumps(x))
    python, env = keras_free_python(str(tmp_path / "site"))
    got = run_json_script(
        python + ["-c", LOAD_SCRIPT, str(version), str(tmp_path / "x.json")], env, str(tmp_path)
    )
    assert got["modules"] == []  # loaded without Keras
    np.testing.assert_allclose(got["scores"]["label"], want.reshape(-1), atol=1e-5)

    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "x.json"), "--saved-model", str(version)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose(np.ravel(printed["label"]), want.reshape(-1), atol=1e-5)

    # evaluate re-imports the run's module from config.json (none given here) and takes the
    # specs from model.keras: features.json is not needed
    (run_dir / files.FEATURES_FILE).unlink()
    assert cli.main(["evaluate", "--run-dir", str(run_dir)]) == 0
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["rows"] == 96 and 0 <= evaluation["auc"] <= 1
    # ... and the .keras file alone, with --data (default reader options, labels = tasks)
    valid = str(data_dir / "valid.csv")
    argv = ["evaluate", "--model", str(alone / "ranker.keras"), "--data", valid]
    assert cli.main([*argv, "--import", str(module)]) == 0
    alone_eval = json.loads((alone / "evaluation.json").read_text())
    assert alone_eval["auc"] == pytest.approx(evaluation["auc"], abs=1e-6)


def test_tokenmixer_large_from_its_preset_with_the_size_flags(data_dir, tmp_path):
    run_dir = tmp_path / "tml"
    argv = flags(data_dir, run_dir, "--model", "tokenmixer_large")
    # T = 2 groups (user, item) + the global token, as the preset's group tokenizer makes
    argv += ["--num-tokens", "3", "--token-dim", "8", "--num-layers", "2", "--hidden-ratio", "1"]
    assert cli.main(argv) == 0
    saved = json.loads((run_dir / files.CONFIG_FILE).read_text())
    assert saved["preset"] == "tokenmixer_large_base"  # its smallest preset, the default
    model = keras.saving.load_model(run_dir / files.MODEL_FILE)
    backbone = model.backbone
    assert isinstance(backbone, TokenMixerLargeBackbone)
    assert (backbone.num_tokens, backbone.token_dim, backbone.num_layers) == (3, 8, 2)
    assert backbone.num_tokens_out == 3 and backbone.num_heads == 8  # the preset's H
    assert backbone.tokenizer == "group" and backbone.readout == "flatten"  # the preset's
    assert (model.tower_units, model.tower_batch_norm, model.tower_dropout) == (
        (400, 400, 400),
        True,
        0.2,
    )  # and its head
    # what `evaluate` checks its data with before it loads the model: the archive's own
    assert files.saved_inputs(str(run_dir)) == (backbone.features, ["label"])
    metrics = json.loads((run_dir / files.METRICS_FILE).read_text())
    assert metrics["model"] == "tokenmixer_large" and 0 <= metrics["valid_auc"] <= 1

    # a config.json written before a key existed (here: `imports`) matches its finished run
    saved.pop("imports")
    (run_dir / files.CONFIG_FILE).write_text(json.dumps(saved))
    config = json.loads((run_dir / files.CONFIG_FILE).read_text())
    assert runner.build_and_train(config)["epochs_run"] == 1  # not retrained, not refused

    with pytest.raises(ValueError, match="preset 'tiny' is a rankmixer preset"):
        runner.check_config({"model": "tokenmixer_large", "preset": "tiny"})
    with pytest.raises(ValueError, match="or of its TokenMixerLargeRanker .*'aux_loss_weight'"):
        runner.build_model({**runner.check_config(config), "model_kwargs": {"nope": 1}}, SPECS)
    with pytest.raises(ValueError, match="preset 'tokenmixer_large_small' is a tokenmixer_large"):
        runner.check_config({"model": "shared_ffn", "preset": "tokenmixer_large_small"})
    with pytest.raises(ValueError, match="unknown model name='nope'; available: .*tokenmixer"):
        runner.check_config({"model": "nope"})


def test_tokenmixer_large_trains_with_its_aux_losses_and_exports_without_them(
    data_dir, tmp_path, capsys
):
    """`--model tokenmixer_large` builds the backbone's task (`TokenMixerLargeRanker`): the
    auxiliary heads train (`aux_loss_weight` from model_kwargs), the export serves only the
    task outputs."""
    run_dir = tmp_path / "tml"
    config = tmp_path / "model.json"
    kwargs = {"inter_residual_every": 1, "aux_loss_weight": 0.5, "tower_units": [4]}
    config.write_text(json.dumps({"model_kwargs": kwargs}))
    argv = flags(data_dir, run_dir, "--model", "tokenmixer_large", "--config", str(config))
    argv += ["--token-dim", "8", "--num-layers", "2", "--hidden-ratio", "1"]  # T: 2 groups + 1
    assert cli.main(argv) == 0
    model = keras.saving.load_model(run_dir / files.MODEL_FILE)
    assert isinstance(model, TokenMixerLargeRanker) and model.aux_loss_weight == 0.5
    assert model.aux_output_names == ["label_aux_0"] and model.tower_units == (4,)
    history = json.loads((run_dir / files.HISTORY_FILE).read_text())
    assert history and "loss" in history[0]
    # the aux heads add to the training loss: the same batch scores a larger loss with them
    x = {k: np.asarray(v) for k, v in request(8).items()}
    y = {"label": np.array([0, 1] * 4, "float32")}
    y_pred = model(x, training=True)
    assert sorted(y_pred) == ["label", "label_aux_0"]
    main_only = {"label": y_pred["label"]}
    with_aux = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))
    without = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, main_only)))
    assert with_aux > without
    if not TF:
        return
    import tensorflow as tf

    out = tmp_path / "serving"
    assert cli.main(["export", str(run_dir), "--output", str(out)]) == 0
    signature = tf.saved_model.load(str(out / "rankmixer" / "1")).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == ["label"]  # no aux output served


def old_functional_model(specs):
    """What `rankmixer train` saved before backbones: one flat functional model."""
    inputs = build_inputs(specs)
    x = keras.layers.Concatenate()(embed_groups(inputs, specs))
    out = keras.layers.Dense(1, activation="sigmoid", name="label")(x)
    return keras.Model(inputs, {"label": out}, name="rankmixer")


@pytest.mark.skipif(not TF, reason="SavedModel export needs TensorFlow")
def test_old_run_directory_with_features_json_evaluates_and_exports(data_dir, tmp_path, capsys):
    from keras_rankmixer.data import read_arrays
    from keras_rankmixer.features import adapt_features

    config = runner.check_config(config_for(data_dir, tmp_path / "old"))
    specs = runner.load_specs(config)[0]

    train = read_arrays(config["train"], specs, config["labels"])
    specs = adapt_features(specs, train.features)
    model = old_functional_model(specs)
    model.compile("adam", {"label": "binary_crossentropy"})
    model.fit(train.features, train.labels, batch_size=64, epochs=2, verbose=0)
    old = tmp_path / "old"
    old.mkdir()
    model.save(old / files.MODEL_FILE)
    (old / files.FEATURES_FILE).write_text(json.dumps([feature_to_config(s) for s in specs]))
    saved = {k: v for k, v in config.items() if k not in ("imports",)}  # an old config.json
    saved["preset"] = "tiny"
    (old / files.CONFIG_FILE).write_text(json.dumps(saved))

    assert cli.main(["evaluate", "--run-dir", str(old)]) == 0
    evaluation = json.loads((old / "evaluation.json").read_text())
    valid = read_arrays(config["test"], specs, config["labels"])
    want = roc_auc(valid.labels["label"], model.predict(valid.features, verbose=0)["label"])
    assert evaluation["auc"] == pytest.approx(want, abs=1e-6) and evaluation["rows"] == 96

    out = tmp_path / "serving"
    assert cli.main(["export", str(old), "--output", str(out)]) == 0
    metadata = out / "rankmixer" / "1" / "assets.extra" / METADATA_FILE
    features = json.loads(metadata.read_text())["features"]
    assert features == [feature_to_config(s) for s in specs]  # from features.json

    # a features.json that does not match the model's inputs is refused
    (old / files.FEATURES_FILE).write_text(json.dumps([feature_to_config(specs[0])]))
    capsys.readouterr()
    assert cli.main(["export", str(old), "--output", str(out)]) == 2
    assert "declares features ['user'], but the model's inputs are" in capsys.readouterr().err


def test_plots_are_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch, capsys):
    from keras_rankmixer.training.moe_monitor import plot_active_ratio

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    history = [{"epoch": 0, "loss": 0.5, "val_auc_exact": 0.6}]
    path = str(tmp_path / files.PLOT_FILE)
    assert files.plot_history(history, path) is None
    records = [{"step": 1, "block_0/moe": {"router_active_ratio": [0.5, 0.5]}}]
    assert plot_active_ratio(records, str(tmp_path / files.MOE_PLOT_FILE)) is None
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "note: matplotlib is not installed (pip install keras-rankmixer[plots]); skipped "
        + str(tmp_path / name)
        for name in (files.PLOT_FILE, files.MOE_PLOT_FILE)
    ]
    assert os.listdir(tmp_path) == []

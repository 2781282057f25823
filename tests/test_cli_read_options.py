"""The reader settings as `rankmixer train` / `evaluate` config keys and flags:
`sequence_delimiter`, `compression` (TFRecord), `chunk_rows` reach the `ReadOptions` the
runner reads every split with, and a bad value is one line naming the flag."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import test_cli

from keras_rankmixer import cli
from keras_rankmixer.commands import train as train_cmd
from keras_rankmixer.data import DataError
from keras_rankmixer.features import CategoricalFeature, SequenceFeature, feature_to_config
from keras_rankmixer.training import run_dir as files
from keras_rankmixer.training import runner

TF = keras.backend.backend() == "tensorflow"
data_dir = test_cli.data_dir  # the same small click files (a module-scoped fixture)


def test_flags_are_config_keys_of_the_read_options(tmp_path, capsys):
    parser = cli.build_parser()
    argv = ["train", "--sequence-delimiter", ";", "--compression", "gzip", "--chunk-rows", "8"]
    config = runner.check_config(train_cmd.config_from_args(parser.parse_args(argv)))
    assert (config["sequence_delimiter"], config["compression"], config["chunk_rows"]) == (
        ";",
        "GZIP",
        8,
    )
    options = runner.read_options(config)
    assert (options.sequence_delimiter, options.compression, options.chunk_rows) == (";", "GZIP", 8)
    defaults = runner.read_options(runner.check_config({}))
    assert (defaults.sequence_delimiter, defaults.compression, defaults.chunk_rows) == (
        "|",
        None,
        65_536,
    )
    # a bad value: one line naming it, before anything is written
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--chunk-rows", "0", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == "[train] error: `chunk_rows` must be a positive int, got chunk_rows=0.\n"
    assert not run_dir.exists()


def test_sequence_delimiter_reads_the_ids_of_a_sequence_cell(tmp_path):
    specs = [
        CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
        SequenceFeature("history", vocabulary_size=10, max_length=3, embedding_dim=4),
    ]
    path = tmp_path / "seq.csv"
    path.write_text("label,user,history\n1,3,1;2\n0,4,5;6;7\n1,5,\n")
    (tmp_path / "features.json").write_text(json.dumps([feature_to_config(s) for s in specs]))
    config = {"train": [str(path)], "features": str(tmp_path / "features.json"), "batch_size": 8}
    data = runner.load_data(runner.check_config({**config, "sequence_delimiter": ";"}))
    assert data["rows"] == {"train": 3}
    features, _ = next(iter(data["train"]))
    got = sorted(map(tuple, np.asarray(features["history"]).tolist()))
    assert got == [(-1, -1, -1), (1, 2, -1), (5, 6, 7)]  # shuffled rows, padded with -1
    with pytest.raises(DataError, match="line 2, column 'history'"):  # "1;2" with "|"
        runner.load_data(runner.check_config(config))


def write_gzip_tfrecord(csv_path, out_path):
    """The rows of a `test_cli.write_split` CSV as a GZIP-compressed TFRecord of tf.Example."""
    import tensorflow as tf

    lines = csv_path.read_text().splitlines()
    names = lines[0].split(",")
    with tf.io.TFRecordWriter(str(out_path), options="GZIP") as w:
        for line in lines[1:]:
            row = dict(zip(names, line.split(","), strict=True))
            feature = {
                "label": tf.train.Feature(
                    float_list=tf.train.FloatList(value=[float(row["label"])])
                ),
                "user": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["user"])])),
                "item": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["item"])])),
                "price": tf.train.Feature(
                    float_list=tf.train.FloatList(value=[float(row["price"])])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            w.write(example.SerializeToString())
    return out_path


@pytest.mark.skipif(not TF, reason="TFRecord files are read with TensorFlow")
def test_gzip_tfrecord_trains_and_evaluates_with_compression(data_dir, tmp_path, capsys):
    train = write_gzip_tfrecord(data_dir / "train.csv", tmp_path / "train.tfrecord")
    valid = write_gzip_tfrecord(data_dir / "valid.csv", tmp_path / "valid.tfrecord")
    run_dir = tmp_path / "run"
    argv = ["train", "--train", str(train), "--valid", str(valid), "--compression", "GZIP"]
    argv += ["--features", str(data_dir / "features.json"), "--epochs", "1", "--no-jit"]
    argv += ["--num-tokens", "2", "--token-dim", "8", "--num-layers", "1", "--chunk-rows", "50"]
    argv += ["--batch-size", "64", "--patience", "0", "--run-dir", str(run_dir), "--verbose", "0"]
    assert cli.main(argv) == 0
    metrics = json.loads((run_dir / files.METRICS_FILE).read_text())
    assert metrics["train_data"]["rows_kept"] == 256 and 0 <= metrics["valid_auc"] <= 1
    saved = json.loads((run_dir / files.CONFIG_FILE).read_text())
    assert (saved["compression"], saved["chunk_rows"]) == ("GZIP", 50)

    # evaluate: the run's compression from its config.json; the model file alone needs the flag
    assert cli.main(["evaluate", "--run-dir", str(run_dir), "--data", str(valid)]) == 0
    assert json.loads((run_dir / "evaluation.json").read_text())["rows"] == 96
    model = str(run_dir / files.MODEL_FILE)
    out = str(tmp_path / "alone.json")
    argv = ["evaluate", "--model", model, "--data", str(valid), "--output", out]
    assert cli.main([*argv, "--compression", "gzip", "--chunk-rows", "10"]) == 0
    assert json.loads(open(out).read())["rows"] == 96

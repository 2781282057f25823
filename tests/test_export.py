"""SavedModel export for TF Serving: signatures, loaders without keras_rankmixer, warmup, CLI.

The TF Serving binary is not installable here, so these tests check the contract with what TF
Serving itself uses: the TF1 SavedModel loader in a Session with tag `serve` fed through the
SignatureDef tensor names, `saved_model_cli`, and the warmup `PredictionLog` records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import NO_KERAS, export_tiny, needs_tensorflow
from helpers import keras_free_python, run_json_script

from keras_rankmixer import (
    CategoricalFeature,
    NumericFeature,
    SequenceFeature,
    build_from_preset,
)
from keras_rankmixer.export import (
    MAX_WARMUP_RECORDS,
    SERVING_DEFAULT,
    TF_EXAMPLE_SIGNATURE,
    export_saved_model,
    make_examples,
    next_version,
    read_warmup_records,
    representative_inputs,
    warmup_records,
)
from keras_rankmixer.features import feature_to_config

pytestmark = needs_tensorflow

FEATURES = [
    CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    CategoricalFeature(
        "city", vocabulary=("paris", "rome", "oslo"), dtype="string", embedding_dim=8, group="user"
    ),
    CategoricalFeature("query", num_hash_bins=50, dtype="string", embedding_dim=8, group="context"),
    SequenceFeature("history", vocabulary_size=50, max_length=4, embedding_dim=8, group="user"),
    NumericFeature("price", mean=1.0, std=2.0, transform="log1p", embedding_dim=8, group="item"),
]
TASKS = ["click", "like"]
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def edge_batch() -> dict:
    """Rows 1-4 are row 0 with one feature changed to an edge value (unseen, empty, missing)."""
    return {
        "user": np.array([7, 500, -1, 7, 7, 7], "int64"),  # 500 unseen, -1 missing
        "city": np.array([b"rome", b"rome", b"rome", b"berlin", b"", b"rome"], object),
        "query": np.array([b"shoes", b"shoes", b"shoes", b"shoes", b"shoes", b""], object),
        "history": np.array([[1, 2, -1, -1]] * 5 + [[-1, -1, -1, -1]], "int64"),
        "price": np.array([3.0, 3.0, 3.0, 3.0, 3.0, np.nan], "float32"),
    }


def keras_predict(model, inputs) -> dict:
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    return {k: np.asarray(v) for k, v in model.predict(tensors, verbose=0).items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    def distinct_weights(model):
        # Give every embedding row a distinct value, so OOV rows really differ from known ones.
        for w in model.weights:
            w.assign(np.random.default_rng(len(w.path)).normal(0, 0.5, w.shape).astype("float32"))

    return export_tiny(
        tmp_path_factory,
        "export",
        FEATURES,
        TASKS,
        7,
        prepare=distinct_weights,
        features=FEATURES,
        warmup_batch_sizes=(1, 3),
    )


LOADER_SCRIPT = NO_KERAS + textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    path, inputs_file, out_file = sys.argv[1:4]
    data = np.load(inputs_file, allow_pickle=True)
    raw = {k[4:]: data[k] for k in data.files if k.startswith("raw_")}
    examples = data["examples"]
    big = {k[4:]: data[k] for k in data.files if k.startswith("big_")}
    out = {}

    # 1. TF2 loader.
    loaded = tf.saved_model.load(path)
    for key, value in loaded.signatures["serving_default"](
            **{k: tf.constant(v) for k, v in raw.items()}).items():
        out["tf2_raw_" + key] = value.numpy()
    for key, value in loaded.signatures["tf_example"](examples=tf.constant(examples)).items():
        out["tf2_example_" + key] = value.numpy()
    for key, value in loaded.signatures["serving_default"](
            **{k: tf.constant(v) for k, v in big.items()}).items():
        out["tf2_big_" + key] = value.numpy()

    # 2. TF1 loader in a Session with tag "serve", fed by SignatureDef tensor names: the C++
    #    loader TF Serving uses. Then replay every warmup record against its signature.
    replayed = 0
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], path)
        def run(signature, feeds):
            sig = meta.signature_def[signature]
            feed = {sig.inputs[k].name: v for k, v in feeds.items()}
            fetch = {k: t.name for k, t in sig.outputs.items()}
            return sess.run(fetch, feed)
        for key, value in run("serving_default", raw).items():
            out["tf1_raw_" + key] = value
        for key, value in run("tf_example", {"examples": examples}).items():
            out["tf1_example_" + key] = value
        warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
        for record in tf.compat.v1.io.tf_record_iterator(warmup):
            request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            result = run(request.model_spec.signature_name, feeds)
            batch = len(next(iter(feeds.values())))
            assert all(v.shape == (batch, 1) and np.isfinite(v).all() for v in result.values())
            replayed += 1

    # 3. No function in the graph asks for XLA.
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    xla = [fn.signature.name for fn in proto.meta_graphs[0].graph_def.library.function
           if fn.attr["_XlaMustCompile"].b]
    out["replayed"] = np.array(replayed)
    np.savez(out_file, **out)
    print(json.dumps({"replayed": replayed, "xla_functions": xla,
                      "modules": sorted(m for m in sys.modules if m.startswith(("keras", "tf_keras")))}))
    """
)


def test_loads_without_keras_in_tf1_and_tf2_loaders_and_replays_warmup(exported, tmp_path):
    model, result, _ = exported
    raw = edge_batch()
    big = representative_inputs(model, 4096, seed=3)
    expected = keras_predict(model, raw)
    expected_big = keras_predict(model, big)
    inputs_file = str(tmp_path / "inputs.npz")
    np.savez(
        inputs_file,
        examples=np.asarray(make_examples(raw), dtype=object),
        **{f"raw_{k}": v for k, v in raw.items()},
        **{f"big_{k}": v for k, v in big.items()},
    )
    out_file = str(tmp_path / "out.npz")
    python, env = keras_free_python(str(tmp_path / "site"))
    report = run_json_script(
        python + ["-c", LOADER_SCRIPT, result.path, inputs_file, out_file], env, str(tmp_path)
    )
    assert report["modules"] == [], "the loader process imported Keras"
    assert report["xla_functions"] == []
    assert report["replayed"] == result.num_warmup_records == 4  # 2 batch sizes x 2 signatures
    got = np.load(out_file)
    for task in TASKS:
        for kind in ("tf2_raw_", "tf1_raw_", "tf2_example_", "tf1_example_"):
            np.testing.assert_allclose(got[kind + task], expected[task], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["tf2_big_" + task], expected_big[task], atol=1e-5, rtol=0)
        p = got["tf1_raw_" + task][:, 0]
        # OOV handling happens in the graph: an unseen id is the reserved row, like a missing
        # id; an unseen string is the reserved row, like the empty string.
        assert p[1] == pytest.approx(p[2], abs=1e-7) and abs(p[1] - p[0]) > 1e-4
        assert p[3] == pytest.approx(p[4], abs=1e-7) and abs(p[3] - p[0]) > 1e-4
        # Row 5 (empty hashed string, empty history, NaN price) is a valid, different score.
        assert np.isfinite(p[5]) and abs(p[5] - p[0]) > 1e-4
    # Batch size must not change a row's score: batch 1 == the same row inside batch 4096.
    one = {k: v[17:18] for k, v in big.items()}
    loaded = tf.saved_model.load(result.path)
    single = loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v) for k, v in one.items()})
    for task in TASKS:
        np.testing.assert_allclose(single[task].numpy(), got["tf2_big_" + task][17:18], atol=1e-6)


def test_layout_metadata_and_signatures(exported):
    model, result, base = exported
    assert result.path == os.path.join(base, "ranker", "1") and result.version == 1
    assert sorted(os.listdir(os.path.join(base, "ranker"))) == ["1"]  # no staging folder left
    assert next_version(os.path.join(base, "ranker")) == 2
    sig = result.signatures[SERVING_DEFAULT]
    assert sig["inputs"] == {
        "city": {"dtype": "string", "shape": [-1]},
        "history": {"dtype": "int64", "shape": [-1, 4]},
        "price": {"dtype": "float32", "shape": [-1]},
        "query": {"dtype": "string", "shape": [-1]},
        "user": {"dtype": "int64", "shape": [-1]},
    }
    assert set(sig["outputs"]) == set(TASKS)
    assert max(result.max_abs_diff.values()) < 1e-5
    with open(os.path.join(result.path, "assets.extra", "rankmixer_export.json")) as f:
        meta = json.load(f)
    assert meta["features"] == [feature_to_config(f) for f in FEATURES]
    assert meta["tasks"] == TASKS and meta["precision"] == "float32"
    with pytest.raises(FileExistsError, match="exists"):
        export_saved_model(model, base, "ranker", version=1, verify=False)
    with pytest.raises(ValueError, match="precision='int8'"):
        export_saved_model(model, base, "ranker", precision="int8")


def test_saved_model_cli_show_and_run(exported, tmp_path):
    model, result, _ = exported
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    show = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", result.path, "--all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert show.returncode == 0, show.stderr[-2000:]
    text = show.stdout
    for name, dtype in [
        ("user", "DT_INT64"),
        ("city", "DT_STRING"),
        ("query", "DT_STRING"),
        ("history", "DT_INT64"),
        ("price", "DT_FLOAT"),
    ]:
        assert f"inputs['{name}'] tensor_info:\n        dtype: {dtype}" in text, name
    assert "inputs['examples'] tensor_info:\n        dtype: DT_STRING" in text
    for task in TASKS:
        assert text.count(f"outputs['{task}'] tensor_info:\n        dtype: DT_FLOAT") == 2
    raw = edge_batch()
    np.savez(
        tmp_path / "in.npz",
        **{k: v.astype(bytes) if v.dtype == object else v for k, v in raw.items()},
    )
    spec = ";".join(f"{k}={tmp_path / 'in.npz'}[{k}]" for k in raw)
    run = subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", result.path, "--tag_set", "serve"]
        + ["--signature_def", SERVING_DEFAULT, "--inputs", spec, "--outdir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    expected = keras_predict(model, raw)
    for task in TASKS:
        np.testing.assert_allclose(
            np.load(tmp_path / "o" / f"{task}.npy"), expected[task], atol=1e-5
        )


def test_bad_warmup_inputs_are_rejected_before_writing(exported, tmp_path):
    from keras_rankmixer import FeatureError

    model, _, _ = exported
    bad = edge_batch()
    del bad["price"]
    with pytest.raises(FeatureError, match="missing feature 'price'"):
        export_saved_model(model, str(tmp_path), "m", warmup_inputs=bad, verify=False)
    bad = {**edge_batch(), "user": edge_batch()["user"].astype("float32")}
    with pytest.raises(FeatureError, match="feature 'user': expected integer ids"):
        export_saved_model(model, str(tmp_path), "m", warmup_inputs=bad, verify=False)
    with pytest.raises(ValueError, match=r"warmup_batch_sizes=\[0\]"):
        export_saved_model(model, str(tmp_path), "m", warmup_batch_sizes=[0])
    assert not os.path.exists(tmp_path / "m")  # nothing written


def test_warmup_records_are_predict_logs(exported):
    model, result, _ = exported
    logs = read_warmup_records(result.path)
    assert [(log.predict_log.request.model_spec.signature_name) for log in logs] == [
        SERVING_DEFAULT,
        TF_EXAMPLE_SIGNATURE,
    ] * 2
    assert all(log.predict_log.request.model_spec.name == "ranker" for log in logs)
    first = logs[0].predict_log.request.inputs
    assert sorted(first) == sorted(f.name for f in FEATURES)
    assert tf.make_ndarray(first["history"]).shape == (1, 4)
    with pytest.raises(ValueError, match="at most 1000"):
        warmup_records(edge_batch(), "m", batch_sizes=[1] * (MAX_WARMUP_RECORDS // 2 + 1))


def test_tf_example_missing_features_take_documented_defaults(exported):
    model, result, _ = exported
    loaded = tf.saved_model.load(result.path)
    empty = tf.train.Example().SerializeToString()
    # A sequence longer than max_length is truncated to its first max_length values.
    long = {"history": [[3, 4, 5, 6]]}
    long_ex = tf.train.Example(
        features=tf.train.Features(
            feature={
                "history": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 4, 5, 6, 9]))
            }
        )
    ).SerializeToString()
    got = loaded.signatures[TF_EXAMPLE_SIGNATURE](examples=tf.constant([empty, long_ex]))
    missing = {
        "user": np.array([-1, -1]),
        "city": np.array([b"", b""], object),
        "query": np.array([b"", b""], object),
        "history": np.array([[-1] * 4, long["history"][0]]),
        "price": np.array([np.nan, np.nan], "float32"),
    }
    expected = keras_predict(model, missing)
    for task in TASKS:
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5)


def test_reduced_precision_export_reports_difference(exported, tmp_path):
    model, _, _ = exported
    result = export_saved_model(model, str(tmp_path), "ranker", precision="bfloat16")
    diff = max(result.max_abs_diff.values())
    assert 0 < diff < 0.05  # really computed in bf16, and still close
    loaded = tf.saved_model.load(result.path)
    raw = edge_batch()
    got = loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v) for k, v in raw.items()})
    expected = keras_predict(model, raw)
    for task in TASKS:
        assert got[task].dtype == tf.float32
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=0.05)
    assert "bfloat16" in graph_dtypes(result.path)
    assert "bfloat16" not in graph_dtypes(exported[1].path)


def test_mixed_precision_model_exports_in_float32_by_default(exported, tmp_path):
    model, _, _ = exported
    mixed = build_from_preset("tiny", FEATURES, tasks=TASKS, dtype="mixed_bfloat16")
    mixed.set_weights(model.get_weights())  # same weights: the float32 version is `model`
    result = export_saved_model(mixed, str(tmp_path), "ranker", warmup_batch_sizes=(16,))
    assert max(result.max_abs_diff.values()) < 1e-5  # against the float32 version
    assert "bfloat16" not in graph_dtypes(result.path)
    loaded = tf.saved_model.load(result.path)
    raw = edge_batch()
    got = loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v) for k, v in raw.items()})
    expected = keras_predict(model, raw)
    for task in TASKS:
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5)


def graph_dtypes(path) -> set[str]:
    """Names of every dtype attribute used by a node of the SavedModel's functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found = set()
    for fn in proto.meta_graphs[0].graph_def.library.function:
        for node in fn.node_def:
            for attr in node.attr.values():
                if attr.type:
                    found.add(tf.dtypes.as_dtype(attr.type).name)
    return found


def test_cli_export_from_run_directory_and_keras_file(exported, tmp_path, capsys):
    from keras_rankmixer.cli import main as cli_main

    model, _, _ = exported
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(str(run_dir / "model.keras"))
    (run_dir / "features.json").write_text(json.dumps([feature_to_config(f) for f in FEATURES]))
    base = str(tmp_path / "models")
    assert cli_main(["export", str(run_dir), "--output", base, "--warmup-batch-sizes", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["path"] == os.path.join(base, "rankmixer", "1")
    assert report["num_warmup_records"] == 2 and max(report["max_abs_diff"].values()) < 1e-5
    with open(os.path.join(report["path"], "assets.extra", "rankmixer_export.json")) as f:
        assert [f["name"] for f in json.load(f)["features"]] == [f.name for f in FEATURES]
    # A bare .keras file works too, and takes the next version.
    args = ["export", str(run_dir / "model.keras"), "--output", base, "--no-verify"]
    assert cli_main(args + ["--precision", "float16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["version"] == 2 and report["precision"] == "float16"
    assert report["max_abs_diff"] is None
    # features.json that does not match the model's inputs is an error naming both.
    (run_dir / "features.json").write_text(json.dumps([feature_to_config(FEATURES[0])]))
    # (CLI errors are one line on stderr and exit status 2, #19.)
    assert cli_main(["export", str(run_dir), "--output", base]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"[export] error: {run_dir / 'features.json'} declares features ['user']")
    assert err.count("\n") == 1
    assert cli_main(["export", str(tmp_path / "model.h5"), "--output", base]) == 2
    assert capsys.readouterr().err == (
        "[export] error: SOURCE must be a .keras file or a run directory, got "
        f"{str(tmp_path / 'model.h5')!r}.\n"
    )


def test_sparse_moe_model_exports(tmp_path):
    pytest.importorskip("keras_rankmixer.layers.sparse_moe")
    from keras_rankmixer import build_rankmixer

    # capacity_factor * target_active_ratio = 1: no sample can overflow, so a row's score does
    # not depend on the rest of its batch (see docs/deployment.md).
    moe = {"num_experts": 4, "target_active_ratio": 0.5, "capacity_factor": 2.0}
    model = build_rankmixer(FEATURES, 4, 16, 1, tasks=TASKS, moe=moe)
    raw = representative_inputs(model, 16, seed=5)
    result = export_saved_model(model, str(tmp_path), "moe", warmup_inputs=raw)
    assert max(result.max_abs_diff.values()) < 1e-5
    loaded = tf.saved_model.load(result.path)
    got = loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v) for k, v in raw.items()})
    one = loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v[:1]) for k, v in raw.items()})
    expected = keras_predict(model, raw)
    for task in TASKS:
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5)
        np.testing.assert_allclose(one[task].numpy(), expected[task][:1], atol=1e-5)


# --------------------------------------------------------------------------- served graph (#20)

GRAPH_SCRIPT = NO_KERAS + textwrap.dedent(
    """
    import collections, json, sys
    import numpy as np
    import tensorflow as tf

    inputs_file, out_file, *paths = sys.argv[1:]
    data = np.load(inputs_file, allow_pickle=True)
    raw = {k: data[k] for k in data.files}
    out, ops = {}, {}
    for i, path in enumerate(paths):
        # TF2 loader: the outputs.
        fn = tf.saved_model.load(path).signatures["serving_default"]
        for key, value in fn(**{k: tf.constant(v) for k, v in raw.items()}).items():
            out[f"{i}_{key}"] = value.numpy()
        # TF1 loader (TF Serving's): the graph grappler and oneDNN's rewrite really run.
        with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
            meta = tf.compat.v1.saved_model.load(sess, ["serve"], path)
            sig = meta.signature_def["serving_default"]
            feed = {sig.inputs[k].name: v for k, v in raw.items()}
            meta_run = tf.compat.v1.RunMetadata()
            sess.run([t.name for t in sig.outputs.values()], feed,
                     options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                     run_metadata=meta_run)
            counts = collections.Counter()
            for graph in meta_run.partition_graphs:
                for node in graph.node:
                    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
                    counts[node.op + ("[" + ",".join(fused) + "]" if fused else "")] += 1
            ops[path] = dict(counts)
    np.savez(out_file, **out)
    print(json.dumps({"ops": ops,
                      "modules": sorted(m for m in sys.modules if m.startswith("keras"))}))
    """
)


def _run_graph_script(tmp_path, raw, paths):
    inputs_file, out_file = str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    np.savez(inputs_file, **raw)
    python, env = keras_free_python(str(tmp_path / "site"))
    report = run_json_script(
        python + ["-c", GRAPH_SCRIPT, inputs_file, out_file, *paths], env, str(tmp_path)
    )
    assert report["modules"] == [], "the loader process imported Keras"
    return report["ops"], np.load(out_file)


def _randomize(model, seed=11):
    """Non-trivial biases and LayerNorm parameters, so every fused epilogue is exercised."""
    for w in model.weights:
        value = np.random.default_rng(seed + len(w.path)).normal(0, 0.3, w.shape)
        w.assign((value + (1.0 if "gamma" in w.path else 0.0)).astype("float32"))


def _fused_and_plain_ops(model, tmp_path, raw):
    """Export `model` fused (the default) and plain; both, loaded without Keras, must give the
    Keras model's outputs within 1e-5. Returns (fused ExportResult, fused ops, plain ops)."""
    fused = export_saved_model(model, str(tmp_path), "fused", warmup_inputs=raw)
    plain = export_saved_model(
        model, str(tmp_path), "plain", warmup_inputs=raw, serving_graph="plain"
    )
    assert max(fused.max_abs_diff.values()) < 1e-5
    ops, got = _run_graph_script(tmp_path, raw, [fused.path, plain.path])
    expected = keras_predict(model, raw)
    for i in (0, 1):
        for task in TASKS:
            np.testing.assert_allclose(got[f"{i}_{task}"], expected[task], atol=1e-5, rtol=0)
    return fused, ops[fused.path], ops[plain.path]


def test_fused_serving_graph_is_fused_and_equals_keras(tmp_path):
    """The default export (`serving_graph="fused"`) equals the Keras model within 1e-5 when
    loaded without Keras, and TF's optimiser really fuses it: per-token 2-D matmuls with
    bias + exact GELU and bias + residual epilogues, `_MklLayerNorm`, and no batched matmul or
    einsum left; the `"plain"` export keeps the training spelling."""
    from keras_rankmixer import build_rankmixer

    keras.utils.set_random_seed(3)
    # T=6 tokens over 40 embedding dims: a padded tokenizer (slice width 7), D=36, k=2.
    model = build_rankmixer(FEATURES, 6, 36, 2, hidden_ratio=2, tasks=TASKS)
    assert model.get_layer("tokenizer").padding == 2
    _randomize(model)
    raw = representative_inputs(model, 256, seed=9)
    fused, fused_ops, plain_ops = _fused_and_plain_ops(model, tmp_path, raw)
    with open(os.path.join(fused.path, "assets.extra", "rankmixer_export.json")) as f:
        meta = json.load(f)
    assert meta["serving_graph"] == ["ffn", "layer_norm", "residual", "tokenizer"]
    assert meta["jit_compile"] is False
    assert not any(op.endswith(("BatchMatMulV2", "Einsum")) for op in fused_ops)
    assert any(op.endswith("BatchMatMulV2") for op in plain_ops)
    if any(op.startswith("_Mkl") for op in plain_ops):  # oneDNN on (TF's x86 default)
        num_matmuls = 2 * 6 * 2  # layers x tokens x (W1, W2)
        assert fused_ops.get("_MklNativeFusedMatMul[BiasAdd,GeluExact]", 0) >= num_matmuls // 2
        assert fused_ops.get("_MklNativeFusedMatMul[BiasAdd,Add]", 0) == num_matmuls // 2
        assert fused_ops.get("_MklLayerNorm", 0) == 2 * 2  # two per block
        for op in ("Erfc", "SquaredDifference", "Rsqrt"):
            assert op not in fused_ops and op in plain_ops


def test_fused_serving_graph_of_tokenmixer_large_equals_keras(tmp_path):
    """TokenMixer-Large's default (fused) export equals the Keras model within 1e-5 without
    Keras, with H != T mixing: its slice tokenizer runs as 2-D matmuls
    (no `Einsum`) while the pSwiGLU banks keep their batched matmuls (measured faster than
    per-token on CPU, docs/performance.md), as in the plain export."""
    from keras_rankmixer.models import TokenMixerLargeBackbone, TokenMixerLargeRanker

    keras.utils.set_random_seed(5)
    backbone = TokenMixerLargeBackbone(
        FEATURES, 12, 2, 1.5, num_tokens=4, tokenizer="slice", num_heads=2, readout="mean"
    )  # fmt: skip
    model = TokenMixerLargeRanker(backbone, tasks=TASKS)
    _randomize(model)
    raw = representative_inputs(model, 128, seed=4)
    _, fused_ops, plain_ops = _fused_and_plain_ops(model, tmp_path, raw)
    batched = [
        sum(n for op, n in o.items() if op.endswith("BatchMatMulV2"))
        for o in (fused_ops, plain_ops)
    ]
    assert batched[0] == batched[1] > 0  # the pSwiGLU banks, batched in both exports
    assert not any(op.endswith("Einsum") for op in fused_ops)
    assert any(op.endswith("Einsum") for op in plain_ops)
    # the opt-in "swiglu" lever (in "all"): gate and up as two matmuls, same outputs
    every = export_saved_model(model, str(tmp_path), "all", warmup_inputs=raw, serving_graph="all")
    assert max(every.max_abs_diff.values()) < 1e-5
    with open(os.path.join(every.path, "assets.extra", "rankmixer_export.json")) as f:
        assert "swiglu" in json.load(f)["serving_graph"]


def test_serving_graph_levers_one_at_a_time(tmp_path):
    """Every single lever (and its absence) gives the Keras model's outputs."""
    from keras_rankmixer import build_rankmixer

    keras.utils.set_random_seed(4)
    model = build_rankmixer(FEATURES, 4, 16, 1, tasks=TASKS)
    _randomize(model)
    raw = representative_inputs(model, 64, seed=2)
    expected = keras_predict(model, raw)
    tensors = {k: tf.constant(v) for k, v in raw.items()}
    for levers in ("ffn", "ffn,residual", "tokenizer", "layer_norm", "residual"):
        result = export_saved_model(
            model,
            str(tmp_path),
            levers.replace(",", "_"),
            warmup_inputs=raw,
            serving_graph=levers,
        )
        got = tf.saved_model.load(result.path).signatures[SERVING_DEFAULT](**tensors)
        for task in TASKS:
            np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown serving-graph lever"):
        export_saved_model(model, str(tmp_path), "bad", warmup_inputs=raw, serving_graph="gelu")


def test_xla_export_equals_keras_without_keras(tmp_path):
    """`jit_compile=True`: the model function is XLA-compiled (`_XlaMustCompile`), loads and
    runs without Keras in both loaders, and equals the Keras model within 1e-5."""
    from keras_rankmixer import build_rankmixer

    features = [
        CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
        CategoricalFeature("item", vocabulary_size=50, embedding_dim=8, group="item"),
        NumericFeature("price", mean=1.0, std=2.0, embedding_dim=8, group="item"),
    ]
    keras.utils.set_random_seed(5)
    model = build_rankmixer(features, 4, 16, 2, tasks=TASKS)
    _randomize(model)
    raw = representative_inputs(model, 64, seed=1)
    result = export_saved_model(model, str(tmp_path), "xla", warmup_inputs=raw, jit_compile=True)
    assert max(result.max_abs_diff.values()) < 1e-5
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(result.path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    library = proto.meta_graphs[0].graph_def.library.function
    assert any(fn.attr["_XlaMustCompile"].b for fn in library)
    _, got = _run_graph_script(tmp_path, raw, [result.path])
    expected = keras_predict(model, raw)
    for task in TASKS:
        np.testing.assert_allclose(got[f"0_{task}"], expected[task], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="string lookups"):  # FEATURES has string inputs
        export_saved_model(
            build_from_preset("tiny", FEATURES), str(tmp_path), "xla_str", jit_compile=True
        )


JAX_TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import keras
    import numpy as np
    from helpers import model_batch, model_specs
    import keras_rankmixer as kr

    out = sys.argv[1]
    keras.utils.set_random_seed(2)
    ranker = kr.Ranker.from_preset("tiny", model_specs(), tasks=["click"])
    ranker.compile(learning_rate=1e-2)
    x = model_batch(128, seed=3)
    ranker.fit(x, {"click": (x["user"] % 2).astype("float32")}, epochs=1, verbose=0)
    ranker.save(os.path.join(out, "model.keras"))
    np.save(os.path.join(out, "click.npy"), np.asarray(ranker.predict(x, verbose=0)["click"]))
    print(json.dumps({"backend": keras.backend.backend()}))
    """
)


def test_model_trained_on_jax_exports_from_its_keras_file(tmp_path):
    """The route docs/deployment.md gives JAX users: train and save on JAX, load the `.keras`
    file on TensorFlow and export it; the SavedModel gives JAX's predictions."""
    from helpers import model_batch

    from keras_rankmixer import model_features

    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.path.dirname(__file__)}
    report = run_json_script([sys.executable, "-c", JAX_TRAIN_SCRIPT, str(tmp_path)], env)
    assert report["backend"] == "jax"
    model = keras.saving.load_model(str(tmp_path / "model.keras"))
    x = model_batch(128, seed=3)
    result = export_saved_model(model, str(tmp_path), "from_jax", warmup_inputs=x)
    assert max(result.max_abs_diff.values()) < 1e-5
    assert len(model_features(model)) == 4  # the specs came with the .keras file
    served = tf.saved_model.load(result.path).signatures[SERVING_DEFAULT](
        **{k: tf.constant(v) for k, v in x.items()}
    )
    expected = np.load(tmp_path / "click.npy")
    assert np.ptp(expected) > 1e-4  # the predictions depend on the input
    np.testing.assert_allclose(served["click"].numpy(), expected, atol=1e-5, rtol=0)

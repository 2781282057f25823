"""gRPC and REST clients against an in-process TEST DOUBLE of TF Serving (tests/serving_double.py).

The double runs the exported SavedModel behind the generated `PredictionServiceServicer` and
an `http.server` following the documented REST API; it is not TF Serving.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import export_tiny, needs_tensorflow
from serving_double import grpc_server, rest_predict, rest_server

from keras_rankmixer import CategoricalFeature, FeatureError, NumericFeature, SequenceFeature
from keras_rankmixer.cli import main as cli_main
from keras_rankmixer.export import make_examples
from keras_rankmixer.serving import (
    GrpcClient,
    LocalClient,
    RestClient,
    ServingError,
    SignatureInfo,
    TensorInfo,
    parse_rest_response,
    rest_request_body,
    signatures_from_rest_metadata,
    signatures_from_saved_model,
    validate_request,
)

pytestmark = needs_tensorflow

FEATURES = [
    CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    CategoricalFeature(
        "city", vocabulary=("paris", "rome", "oslo"), dtype="string", embedding_dim=8, group="user"
    ),
    SequenceFeature("history", vocabulary_size=50, max_length=3, embedding_dim=8, group="user"),
    NumericFeature("price", embedding_dim=8, group="item"),
]
TASKS = ["click", "like"]


def request() -> dict:
    return {
        "user": np.array([7, 500, -1], "int64"),
        "city": np.array(["rome", "berlin", ""]),
        "history": np.array([[1, 2, -1], [-1, -1, -1], [4, 4, 4]], "int64"),
        "price": np.array([3.0, np.nan, -1.5], "float32"),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, result, _ = export_tiny(
        tmp_path_factory, "serving", FEATURES, TASKS, 3, version=3, warmup_batch_sizes=(1,)
    )
    tensors = {k: tf.constant(v) for k, v in request().items()}
    expected = {k: np.asarray(v) for k, v in model.predict(tensors, verbose=0).items()}
    return result, expected


@pytest.fixture(scope="module")
def grpc_double(served):
    with grpc_server(served[0].path, "ranker") as (target, double):
        yield target, double


def test_grpc_round_trip_both_signatures(served, grpc_double):
    result, expected = served
    target, double = grpc_double
    before = double.requests
    if True:
        with GrpcClient(target, "ranker") as client:
            sigs = client.signatures()
            assert sigs == signatures_from_saved_model(result.path)
            assert sigs["serving_default"].inputs["history"] == TensorInfo(
                "history", "int64", (-1, 3)
            )
            got = client.predict(request())
            examples = np.asarray(make_examples(request()), dtype=object)
            got_ex = client.predict({"examples": examples}, signature_name="tf_example")
        with GrpcClient(target, "ranker", version=3) as pinned:
            pinned_out = pinned.predict(request())
        assert double.requests - before == 3
        with GrpcClient(target, "other") as wrong, pytest.raises(ServingError, match="NOT_FOUND"):
            wrong.predict(request())
    for task in TASKS:
        np.testing.assert_allclose(got[task], expected[task], atol=1e-6)
        np.testing.assert_allclose(got_ex[task], expected[task], atol=1e-6)
        np.testing.assert_allclose(pinned_out[task], expected[task], atol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "price"}, "missing feature 'price'"),
        ({"add": ("age", [1, 2, 3])}, r"unknown feature\(s\) \['age'\]"),
        ({"set": ("user", np.array([7.0, 1.0, np.nan]))}, "feature 'user': expected integer ids"),
        ({"set": ("user", np.array(["7", "1", "2"]))}, "feature 'user': expected integer ids"),
        ({"set": ("city", np.array([1, 2, 3]))}, "feature 'city': expected strings"),
        ({"set": ("price", np.array(["a", "b", "c"]))}, "feature 'price': expected numbers"),
        (
            {"set": ("history", np.zeros((3, 4), "int64"))},
            r"'history': expected shape \(batch, 3\)",
        ),
        ({"set": ("user", np.array([[7], [1], [2]]))}, r"'user': expected shape \(batch,\)"),
        ({"set": ("price", np.array([1.0, 2.0], "float32"))}, "'price': batch size 2 differs"),
    ],
)
def test_validation_names_the_feature_before_sending(grpc_double, change, message):
    target, double = grpc_double
    before = double.requests
    bad = request()
    if "drop" in change:
        del bad[change["drop"]]
    else:
        key, value = change.get("add") or change["set"]
        bad[key] = value
    with GrpcClient(target, "ranker") as client, pytest.raises(FeatureError, match=message):
        client.predict(bad)
    assert double.requests == before  # nothing reached the server


def test_validate_request_converts_to_signature_dtypes():
    sig = SignatureInfo(
        "s",
        {
            "a": TensorInfo("a", "int64", (-1,)),
            "b": TensorInfo("b", "float32", (-1, 2)),
            "c": TensorInfo("c", "string", (-1,)),
        },
        {},
    )
    out = validate_request({"a": [1, 2], "b": [[1, 2], [3, 4]], "c": ["x", b"y"]}, sig)
    assert out["a"].dtype == np.int64 and out["b"].dtype == np.float32
    assert out["c"].tolist() == [b"x", b"y"]


def test_rest_round_trip_instances_and_inputs(served):
    result, expected = served
    with rest_server(result.path, "ranker") as (url, double, log):
        for form in ("instances", "inputs"):
            client = RestClient(url, "ranker", request_format=form)
            got = client.predict(request())
            for task in TASKS:
                np.testing.assert_allclose(got[task], expected[task], atol=1e-6)
        pinned = RestClient(url, "ranker", version=3).predict(request())
        np.testing.assert_allclose(pinned["click"], expected["click"], atol=1e-6)
        # tf.Example protos are binary: they travel as {"b64": ...}.
        examples = np.asarray(make_examples(request()), dtype=object)
        by_example = RestClient(url, "ranker").predict(
            {"examples": examples}, signature_name="tf_example"
        )
        np.testing.assert_allclose(by_example["like"], expected["like"], atol=1e-6)
        assert "b64" in json.dumps(log[-1]["inputs"]["examples"])
        with pytest.raises(ServingError, match="HTTP 404"):
            RestClient(url, "other", validate=False).predict(request())
        with pytest.raises(FeatureError, match="missing feature 'city'"):
            RestClient(url, "ranker").predict({k: v for k, v in request().items() if k != "city"})
        assert double.requests == 4
    # The bodies the server received, in the documented row and columnar forms.
    row, col = log[0], log[1]
    assert row["signature_name"] == "serving_default"
    assert row["instances"][0] == {"user": 7, "city": "rome", "history": [1, 2, -1], "price": 3.0}
    assert math.isnan(row["instances"][1]["price"]) and row["instances"][2]["city"] == ""
    assert col["inputs"]["user"] == [7, 500, -1]
    assert col["inputs"]["city"] == ["rome", "berlin", ""]
    assert col["inputs"]["history"] == [[1, 2, -1], [-1, -1, -1], [4, 4, 4]]


def test_rest_metadata_in_both_json_spellings(served):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    result, _ = served
    proto = saved_model_pb2.SavedModel()
    with open(f"{result.path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in proto.meta_graphs[0].signature_def.items():
        sig_map.signature_def[name].CopyFrom(sig)
    expected = signatures_from_saved_model(result.path)
    for snake in (True, False):
        body = {"metadata": {"signature_def": json_format.MessageToDict(sig_map, snake)}}
        assert signatures_from_rest_metadata(body) == expected
    assert sorted(expected) == ["serving_default", "tf_example"]
    with pytest.raises(ServingError, match="no metadata.signature_def"):
        signatures_from_rest_metadata({"error": "x"})


def test_rest_json_matches_documented_formats():
    # https://www.tensorflow.org/tfx/serving/api_rest: row and columnar request bodies.
    body = rest_request_body(
        {"tag": np.array([b"foo", b"bar"]), "signal": np.array([[1, 2], [3, 4]])},
        request_format="instances",
    )
    assert body == {
        "signature_name": "serving_default",
        "instances": [{"tag": "foo", "signal": [1, 2]}, {"tag": "bar", "signal": [3, 4]}],
    }
    body = rest_request_body({"tag": np.array(["foo", "bar"]), "x": np.array([1.5, np.nan])})
    assert body["inputs"]["tag"] == ["foo", "bar"] and body["inputs"]["x"][0] == 1.5
    # NaN is sent as the `NaN` token, which TF Serving's JSON parser accepts.
    assert json.dumps(body).endswith('"x": [1.5, NaN]}}')
    # Binary strings go as {"b64": ...} (object arrays: numpy "S" arrays drop trailing NULs).
    binary = np.array([b"\xff\x00"], dtype=object)
    assert rest_request_body({"img": binary})["inputs"]["img"] == [{"b64": "/wA="}]
    # Responses: one output -> its name is omitted; several -> objects.
    one = parse_rest_response({"predictions": [3.5, 4.0, 5.5]}, ["y"])
    np.testing.assert_array_equal(one["y"], [3.5, 4.0, 5.5])
    rows = parse_rest_response(
        {"predictions": [{"click": [0.1], "like": [0.2]}, {"click": [0.3], "like": [0.4]}]},
        ["click", "like"],
    )
    np.testing.assert_array_equal(rows["like"], [[0.2], [0.4]])
    cols = parse_rest_response({"outputs": {"click": [[0.1], [0.3]]}}, ["click"])
    np.testing.assert_array_equal(cols["click"], [[0.1], [0.3]])
    np.testing.assert_array_equal(parse_rest_response({"outputs": [[0.5]]}, ["p"])["p"], [[0.5]])
    with pytest.raises(ServingError, match="Servable not found"):
        parse_rest_response({"error": "Servable not found for request: Latest(half)"}, ["y"])


def test_rest_double_single_output_forms(served):
    """The double omits the output name for one-output models, as documented."""

    class One:
        signature_defs = {
            "serving_default": type("S", (), {"inputs": {"x": None}, "outputs": {"y": None}})()
        }

        def run(self, signature, inputs):
            return {"y": np.asarray(inputs["x"], "float32") / 2 + 3}

    assert rest_predict(One(), {"instances": [1.0, 2.0, 5.0]}) == {"predictions": [3.5, 4.0, 5.5]}
    assert rest_predict(One(), {"inputs": [1.0, 2.0]}) == {"outputs": [3.5, 4.0]}


def test_local_client_and_predict_cli(served, grpc_double, tmp_path, capsys):
    result, expected = served
    target, _ = grpc_double
    local = LocalClient(result.path).predict(request())
    np.testing.assert_allclose(local["click"], expected["click"], atol=1e-6)
    rows = [
        {"user": 7, "city": "rome", "history": [1, 2, -1], "price": 3.0},
        {"user": 500, "city": "berlin", "history": [-1, -1, -1], "price": None},
        {"user": -1, "city": "", "history": [4, 4, 4], "price": -1.5},
    ]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(rows))
    if True:
        code = cli_main(["predict", str(path), "--grpc", target, "--model-name", "ranker"])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0
        for task in TASKS:
            np.testing.assert_allclose(out[task], expected[task], atol=1e-6)
        path.write_text(json.dumps([{k: v for k, v in r.items() if k != "user"} for r in rows]))
        code = cli_main(["predict", str(path), "--grpc", target, "--model-name", "ranker"])
        assert code == 2 and "missing feature 'user'" in capsys.readouterr().err
    with rest_server(result.path, "ranker") as (url, _, _):
        path.write_text(json.dumps({"inputs": {k: v.tolist() for k, v in request().items()}}))
        code = cli_main(
            [
                "predict",
                str(path),
                "--rest",
                url,
                "--model-name",
                "ranker",
                "--rest-format",
                "instances",
            ]
        )
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0
        np.testing.assert_allclose(out["like"], expected["like"], atol=1e-6)


def test_serving_kit_configs_parse():
    """serving/models.config and batching_parameters.txt parse as TF Serving's text protos."""
    import os
    import re

    from google.protobuf import (
        descriptor_pb2,
        descriptor_pool,
        message_factory,
        text_format,
        wrappers_pb2,
    )
    from tensorflow_serving.config import model_server_config_pb2

    kit = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving")
    with open(os.path.join(kit, "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "rankmixer" and model.base_path == "/models/rankmixer"
    assert model.model_version_policy.latest.num_versions == 2

    # BatchingParameters (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
    # is not in the pip package: rebuild the fields this file uses, then parse strictly.
    file = descriptor_pb2.FileDescriptorProto(
        name="batching_test.proto", package="t", dependency=["google/protobuf/wrappers.proto"]
    )
    msg = file.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for i, name in enumerate(
        ["max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"]
    ):
        msg.field.add(
            name=name, number=i + 1, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Int64Value"
        )
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.BatchingParameters"))
    with open(os.path.join(kit, "batching_parameters.txt")) as f:
        params = text_format.Parse(f.read(), cls())
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0 and params.num_batch_threads.value > 0

    with open(os.path.join(kit, "docker-compose.yml")) as f:
        compose = f.read()
    for needed in ("8500:8500", "8501:8501", "/config/models.config", "batching_parameters.txt"):
        assert needed in compose
    assert re.search(r"--enable_batching=true", compose)

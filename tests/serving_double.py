"""TEST DOUBLE of TensorFlow Serving (not TF Serving): runs a SavedModel behind its APIs.

The `tensorflow_model_server` binary cannot be installed here. To test the clients, this module
serves a SavedModel in-process, on 127.0.0.1, through:

- gRPC: a `PredictionServiceServicer` (the generated `tensorflow_serving.apis` service) with
  `Predict` and `GetModelMetadata`, answering as TF Serving does (signature lookup,
  `output_filter`, `SignatureDefMap` packed in `metadata["signature_def"]`, NOT_FOUND for an
  unknown model, INVALID_ARGUMENT for bad inputs);
- REST: `http.server` with `POST /v1/models/<name>[/versions/<v>]:predict` (row `instances` and
  columnar `inputs` forms, responses `predictions` / `outputs` with the one-output name
  omitted, `{"error": ...}` on failure) and `GET .../metadata`, following
  https://www.tensorflow.org/tfx/serving/api_rest.

It is only as faithful as that documentation; it does not batch, hot-reload or warm up.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import threading
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)


class ServedModel:
    """A SavedModel version: its signatures (protos) and loaded functions."""

    def __init__(self, path: str, model_name: str) -> None:
        self.path = path
        self.model_name = model_name
        self.version = int(os.path.basename(os.path.normpath(path)))
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        self.signature_defs = proto.meta_graphs[0].signature_def
        self.loaded = tf.saved_model.load(path)
        self.requests = 0

    def run(self, signature_name: str, inputs: dict) -> dict:
        name = signature_name or "serving_default"
        if name not in self.loaded.signatures:
            raise ValueError(f'Serving signature name: "{name}" not found in signature def')
        sig = self.signature_defs[name]
        missing = set(sig.inputs) - set(inputs)
        extra = set(inputs) - set(sig.inputs)
        if missing or extra:
            raise ValueError(
                f"input keys mismatch: missing {sorted(missing)}, extra {sorted(extra)}"
            )
        tensors = {
            k: tf.constant(v, dtype=tf.dtypes.as_dtype(sig.inputs[k].dtype))
            for k, v in inputs.items()
        }
        self.requests += 1
        return {k: v.numpy() for k, v in self.loaded.signatures[name](**tensors).items()}


class PredictionServiceDouble(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TEST DOUBLE: TF Serving's gRPC `Predict` / `GetModelMetadata` over one SavedModel."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def _check_spec(self, spec, context) -> None:
        if spec.name != self.served.model_name or (
            spec.HasField("version") and spec.version.value != self.served.version
        ):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")

    def Predict(self, request, context):  # noqa: N802 (generated gRPC name)
        self._check_spec(request.model_spec, context)
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.served.run(request.model_spec.signature_name, inputs)
        except (ValueError, tf.errors.OpError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.served.model_name
        response.model_spec.version.value = self.served.version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for key, value in outputs.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        self._check_spec(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def only")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.served.model_name
        response.model_spec.version.value = self.served.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in self.served.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sig_map)
        return response


@contextlib.contextmanager
def grpc_server(path: str, model_name: str):
    """Serve the SavedModel at `path` over gRPC on 127.0.0.1; yields (target, ServedModel)."""
    served = ServedModel(path, model_name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServiceDouble(served), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", served
    finally:
        server.stop(grace=None)


def _decode(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _to_array(value) -> np.ndarray:
    """A decoded JSON value as an array; strings as an object array of UTF-8 bytes (JSON
    strings and {"b64"} values may mix in one tensor; numpy "S" arrays would drop NULs)."""

    def flat(v):
        return [x for item in v for x in flat(item)] if isinstance(v, list) else [v]

    items = flat(value)
    if items and isinstance(items[0], str | bytes):
        shape = np.shape(np.asarray(value, dtype=object))
        data = [x.encode() if isinstance(x, str) else x for x in items]
        return np.asarray(data, dtype=object).reshape(shape)
    return np.asarray(value)


def _encode(value: np.ndarray):
    if value.dtype == object:
        return [_encode(v) for v in value] if value.ndim else value.item().decode()
    return value.tolist()


def rest_predict(served: ServedModel, body: dict) -> dict:
    """The documented `:predict` semantics on a parsed JSON body."""
    signature = body.get("signature_name", "serving_default")
    sig = served.signature_defs.get(signature)
    if sig is None:
        raise ValueError(f'Serving signature name: "{signature}" not found in signature def')
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("Missing 'inputs' or 'instances' key")
    single_input = len(sig.inputs) == 1
    if "instances" in body:
        rows = body["instances"]
        if single_input and not all(isinstance(r, dict) for r in rows):
            rows = [{next(iter(sig.inputs)): r} for r in rows]
        inputs = {k: _to_array(_decode([r[k] for r in rows])) for k in sig.inputs}
    else:
        columns = body["inputs"]
        if single_input and not isinstance(columns, dict):
            columns = {next(iter(sig.inputs)): columns}
        inputs = {k: _to_array(_decode(v)) for k, v in columns.items()}
    outputs = served.run(signature, inputs)
    names = sorted(outputs)
    if "instances" in body:
        if len(names) == 1:
            return {"predictions": _encode(outputs[names[0]])}
        n = len(outputs[names[0]])
        return {"predictions": [{k: _encode(outputs[k][i]) for k in names} for i in range(n)]}
    if len(names) == 1:
        return {"outputs": _encode(outputs[names[0]])}
    return {"outputs": {k: _encode(v) for k, v in outputs.items()}}


@contextlib.contextmanager
def rest_server(path: str, model_name: str):
    """Serve the SavedModel over the REST API on 127.0.0.1; yields (url, ServedModel, log).

    `log` collects every parsed request body, so tests can check the client's JSON.
    """
    served = ServedModel(path, model_name)
    log: list[dict] = []
    pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict|/metadata)$")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, verb: str):
            match = pattern.match(self.path)
            if not match or match.group(3) != verb:
                self._reply(404, {"error": f"Malformed request: {self.command} {self.path}"})
                return None
            name, version = match.group(1), match.group(2)
            if name != served.model_name or (version and int(version) != served.version):
                self._reply(404, {"error": f"Servable not found for request: Latest({name})"})
                return None
            return True

        def do_GET(self):  # noqa: N802
            if not self._route("/metadata"):
                return
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in served.signature_defs.items():
                sig_map.signature_def[name].CopyFrom(sig)
            self._reply(
                200,
                {
                    "model_spec": {
                        "name": served.model_name,
                        "signature_name": "",
                        "version": str(served.version),
                    },
                    # TF Serving prints proto field names (snake_case), without "@type".
                    "metadata": {
                        "signature_def": json_format.MessageToDict(
                            sig_map, preserving_proto_field_name=True
                        )
                    },
                },
            )

        def do_POST(self):  # noqa: N802
            if not self._route(":predict"):
                return
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                body = json.loads(raw)  # accepts NaN / Infinity tokens, as TF Serving does
                log.append(body)
                self._reply(200, rest_predict(served, body))
            except (ValueError, KeyError, tf.errors.OpError) as e:
                self._reply(400, {"error": str(e)})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, log
    finally:
        server.shutdown()
        server.server_close()

"""Clients for a RankMixer model in TensorFlow Serving: gRPC and REST, with request validation.

Both clients fetch the model's signature metadata from the server (gRPC `GetModelMetadata`,
REST `GET /v1/models/<name>/metadata`) and check every request against it before sending:
a missing or unknown feature, a wrong dtype or a wrong shape raises `FeatureError` naming
the feature, instead of an opaque server-side error.

- `GrpcClient(target)`: `tensorflow_serving.apis` `PredictionService` (`Predict`,
  `GetModelMetadata`), default port 8500.
- `RestClient(url)`: the documented REST API, default port 8501, in its two request forms:
  row (`{"instances": [{feature: value, ...}, ...]}` -> `{"predictions": ...}`) and columnar
  (`{"inputs": {feature: [values]}}` -> `{"outputs": ...}`). Floats may be `NaN`/`Infinity`
  (TF Serving accepts these tokens); strings that are not UTF-8 go as `{"b64": ...}`.
- `LocalClient(path)`: the same interface on a SavedModel loaded in-process (no server).

Example:

    client = GrpcClient("localhost:8500", model_name="rankmixer")
    scores = client.predict({"user_id": [12, 7], "city": ["paris", ""], "price": [3.5, nan]})
    scores["click"]  # array of shape (2, 1)

References:
    https://www.tensorflow.org/tfx/serving/api_rest (request/response JSON),
    tensorflow_serving/apis/prediction_service.proto (gRPC).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_rankmixer.features import FeatureError

SERVING_DEFAULT = "serving_default"
_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_BFLOAT16": "bfloat16",
    "DT_INT64": "int64",
    "DT_INT32": "int32",
    "DT_INT16": "int16",
    "DT_INT8": "int8",
    "DT_UINT8": "uint8",
    "DT_STRING": "string",
    "DT_BOOL": "bool",
}


class ServingError(RuntimeError):
    """The server answered with an error (the message carries the server's text)."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: dtype name and shape (-1 = any size; None = any rank)."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """A serving signature: its named inputs and outputs."""

    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = "tensorflow/serving/predict"

    @classmethod
    def from_proto(cls, name: str, signature_def) -> SignatureInfo:
        """From a `tensorflow.core.protobuf.meta_graph_pb2.SignatureDef`."""
        from tensorflow.core.framework import types_pb2

        def info(key, tensor_info):
            dtype = types_pb2.DataType.Name(tensor_info.dtype)
            shape = tensor_info.tensor_shape
            dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
            return TensorInfo(key, _DTYPES.get(dtype, dtype), dims)

        return cls(
            name,
            {k: info(k, v) for k, v in sorted(signature_def.inputs.items())},
            {k: info(k, v) for k, v in sorted(signature_def.outputs.items())},
            signature_def.method_name,
        )


def signatures_from_map(signature_def_map) -> dict[str, SignatureInfo]:
    """`{name: SignatureInfo}` from a `SignatureDefMap` or a `{name: SignatureDef}` map."""
    items = getattr(signature_def_map, "signature_def", signature_def_map)
    return {
        name: SignatureInfo.from_proto(name, sig)
        for name, sig in sorted(items.items())
        if not name.startswith("__")  # __saved_model_init_op
    }


def signatures_from_rest_metadata(body: Mapping) -> dict[str, SignatureInfo]:
    """From the JSON of `GET /v1/models/<name>/metadata` (a `GetModelMetadataResponse`)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    try:
        sig_json = body["metadata"]["signature_def"]
    except (KeyError, TypeError) as e:
        raise ServingError(f"unexpected metadata response, no metadata.signature_def: {e}") from e
    sig_map = json_format.ParseDict(
        sig_json, get_model_metadata_pb2.SignatureDefMap(), ignore_unknown_fields=True
    )
    return signatures_from_map(sig_map)


def signatures_from_saved_model(path: str) -> dict[str, SignatureInfo]:
    """From the `saved_model.pb` of a SavedModel directory (tag set `serve`)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return signatures_from_map(meta_graph.signature_def)
    raise ServingError(f"{path}: no MetaGraph with tag 'serve'.")


# --------------------------------------------------------------------------- validation


def _is_string_array(x: np.ndarray) -> bool:
    if x.dtype.kind in "SU":
        return True
    if x.dtype.kind == "O":
        return all(isinstance(v, str | bytes) for v in x.reshape(-1))
    return False


def validate_request(inputs: Mapping[str, Any], signature: SignatureInfo) -> dict[str, np.ndarray]:
    """Check a columnar batch against a signature; return arrays in the signature's dtypes.

    Raises `FeatureError` naming the feature for: a missing feature, an unknown feature, a
    dtype the signature cannot take (strings for ids, floats for integer ids, numbers for
    strings), a wrong rank or fixed dimension, and batch sizes that differ between features.

    Example:

    >>> sig = SignatureInfo("s", {"item": TensorInfo("item", "int64", (-1,))}, {})
    >>> validate_request({"item": [3, -1]}, sig)["item"].dtype
    dtype('int64')
    >>> validate_request({"item": [[3], [1]]}, sig)
    Traceback (most recent call last):
    ...
    keras_rankmixer.features.FeatureError: feature 'item': expected shape (batch,), got (2, 1).
    """
    if not isinstance(inputs, Mapping):
        raise FeatureError(f"a request is a dict {{feature: values}}, got {type(inputs).__name__}.")
    expected = signature.inputs
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise FeatureError(
            f"unknown feature(s) {unknown} for signature {signature.name!r}; "
            f"it expects {sorted(expected)}."
        )
    out: dict[str, np.ndarray] = {}
    batch = None
    for name, info in expected.items():
        if name not in inputs:
            raise FeatureError(
                f"missing feature {name!r} for signature {signature.name!r} "
                f"(expected: {sorted(expected)})."
            )
        x = _as_array(name, inputs[name], info)
        if info.dtype == "string":
            if x.size and not _is_string_array(x):
                raise FeatureError(f"feature {name!r}: expected strings, got dtype {x.dtype}.")
            flat = [v.encode() if isinstance(v, str) else bytes(v) for v in x.reshape(-1)]
            x = np.asarray(flat, dtype=object).reshape(x.shape)
        elif info.dtype.startswith(("int", "uint")):
            _check_int_range(name, x, info.dtype)
            if x.size and x.dtype.kind not in "iu":
                raise FeatureError(
                    f"feature {name!r}: expected integer ids ({info.dtype}), got dtype {x.dtype}"
                    + (" (use -1 for missing ids, not NaN)." if x.dtype.kind == "f" else ".")
                )
            x = x.astype(info.dtype)
        elif info.dtype.startswith(("float", "bfloat")):
            if x.size and x.dtype.kind not in "fiu":
                raise FeatureError(f"feature {name!r}: expected numbers, got dtype {x.dtype}.")
            x = x.astype("float32" if info.dtype == "bfloat16" else info.dtype)
        elif info.dtype == "bool":
            if x.size and x.dtype.kind != "b":
                raise FeatureError(f"feature {name!r}: expected booleans, got dtype {x.dtype}.")
        if info.shape is not None:
            ok = x.ndim == len(info.shape) and all(
                want < 0 or want == got for want, got in zip(info.shape, x.shape, strict=True)
            )
            if not ok:
                want = ", ".join(
                    "batch" if i == 0 and d < 0 else str(d) for i, d in enumerate(info.shape)
                )
                raise FeatureError(
                    f"feature {name!r}: expected shape ({want}{',' if len(info.shape) == 1 else ''}), "
                    f"got {tuple(x.shape)}."
                )
        if x.ndim:
            if batch is not None and x.shape[0] != batch[1]:
                raise FeatureError(
                    f"feature {name!r}: batch size {x.shape[0]} differs from {batch[0]!r} "
                    f"({batch[1]})."
                )
            batch = batch or (name, x.shape[0])
        out[name] = x
    return out


def _as_array(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    """`np.asarray` with errors naming the feature: ragged lists, `None` (missing: NaN for
    numbers; for ids and strings it has to be -1 / "")."""
    if info.dtype.startswith(("float", "bfloat")) and isinstance(value, list | tuple):
        value = _none_to_nan(value)
    if info.dtype.startswith(("int", "uint")) and isinstance(value, list | tuple):
        # Before numpy: [2**63, 1] would silently become float64 (and lose the id).
        _check_int_range(name, np.asarray(_flat(value) or [0], dtype=object), info.dtype)
    try:
        x = np.asarray(value)
    except ValueError:
        lengths = sorted({len(v) for v in value if isinstance(v, list | tuple | np.ndarray)})
        want = info.shape[1] if info.shape is not None and len(info.shape) > 1 else None
        raise FeatureError(
            f"feature {name!r}: rows of different lengths {lengths}; every row needs "
            + (f"exactly {want} values" if want and want > 0 else "the same number of values")
            + " (pad short sequences with -1, or '' for strings)."
        ) from None
    if x.dtype == object and any(v is None for v in x.reshape(-1)):
        missing = (
            "NaN"
            if info.dtype.startswith(("float", "bfloat"))
            else ("''" if info.dtype == "string" else "-1")
        )
        raise FeatureError(f"feature {name!r}: None in the values; send {missing} for missing.")
    return x


def _flat(value) -> list:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flat(v)]
    return [value]


def _none_to_nan(value):
    if isinstance(value, list | tuple):
        return [_none_to_nan(v) for v in value]
    return math.nan if value is None else value


def _check_int_range(name: str, x: np.ndarray, dtype: str) -> None:
    """Ids outside the signature's integer range (e.g. 2**63 for int64) are an error, not a
    silent wrap-around."""
    info = np.iinfo(dtype)
    if x.dtype.kind == "u" and x.size and x.max() > info.max:
        bad = int(x.max())
    elif x.dtype == object and x.size:
        out = [
            v
            for v in x.reshape(-1)
            if isinstance(v, int) and not isinstance(v, bool) and not info.min <= v <= info.max
        ]
        if not out:
            return
        bad = out[0]
    else:
        return
    raise FeatureError(
        f"feature {name!r}: id {bad} is outside the {dtype} range [{info.min}, {info.max}]."
    )


def cast_request(
    inputs: Mapping[str, Any], signature: SignatureInfo | None = None
) -> dict[str, np.ndarray]:
    """Arrays in the signature's dtypes without any checks (`validate=False`).

    JSON numbers arrive as Python floats (float64) and ints: sent as they are, a float32
    input gets a double tensor and TF rejects the request. With `signature` each input is
    cast to its declared dtype; without one, floats become float32, ints int64 and text
    bytes (the dtypes of a `keras_rankmixer` export).
    """
    dtypes = {k: v.dtype for k, v in signature.inputs.items()} if signature else {}
    out = {}
    for name, value in inputs.items():
        if isinstance(value, list | tuple):
            value = _none_to_nan(value)
        x = np.asarray(value)
        want = dtypes.get(name)
        if want is None:
            want = {"f": "float32", "i": "int64", "u": "int64"}.get(x.dtype.kind)
            if x.dtype.kind in "USO":
                want = "string"
        if want == "string":
            flat = [v.encode() if isinstance(v, str) else v for v in x.reshape(-1)]
            x = np.asarray(flat, dtype=object).reshape(x.shape)
        elif want is not None and want != "bool":
            x = x.astype("float32" if want == "bfloat16" else want)
        out[name] = x
    return out


# --------------------------------------------------------------------------- REST JSON


def _json_value(x: Any) -> Any:
    """A numpy value as JSON: bytes as UTF-8 text or {"b64": ...}; floats keep NaN/Infinity."""
    if isinstance(x, np.ndarray):
        return [_json_value(v) for v in x] if x.ndim else _json_value(x.item())
    if isinstance(x, bytes):
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(x).decode("ascii")}
    if isinstance(x, np.generic):
        return x.item()
    return x


def rest_request_body(
    inputs: Mapping[str, np.ndarray],
    signature_name: str = SERVING_DEFAULT,
    request_format: str = "inputs",
) -> dict:
    """The JSON body of a REST `:predict` request, in the `inputs` or `instances` form.

    Example:

    >>> rest_request_body({"item": np.array([3, 4])}, request_format="instances")
    {'signature_name': 'serving_default', 'instances': [{'item': 3}, {'item': 4}]}
    """
    if request_format == "inputs":
        return {
            "signature_name": signature_name,
            "inputs": {k: _json_value(np.asarray(v)) for k, v in inputs.items()},
        }
    if request_format == "instances":
        columns = {k: np.asarray(v) for k, v in inputs.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        return {
            "signature_name": signature_name,
            "instances": [{k: _json_value(v[i]) for k, v in columns.items()} for i in range(n)],
        }
    raise ValueError(
        f"`request_format` must be 'inputs' or 'instances', got request_format={request_format!r}."
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def parse_rest_response(body: Mapping, output_names: list[str]) -> dict[str, np.ndarray]:
    """Columnar `{output: array}` from a `predictions` (row) or `outputs` (columnar) response.

    With one output TF Serving omits its name (`predictions`/`outputs` hold the values); with
    several, `predictions` is a list of objects and `outputs` an object.
    """
    if "error" in body:
        raise ServingError(str(body["error"]))
    if "outputs" in body:
        outputs = body["outputs"]
        if len(output_names) == 1 and not isinstance(outputs, dict):
            outputs = {output_names[0]: outputs}
        return {k: np.asarray(_from_json(v)) for k, v in outputs.items()}
    if "predictions" in body:
        rows = body["predictions"]
        if len(output_names) == 1 and not (rows and isinstance(rows[0], dict)):
            return {output_names[0]: np.asarray(_from_json(rows))}
        return {k: np.asarray([_from_json(r[k]) for r in rows]) for k in output_names}
    raise ServingError(f"unexpected response: no 'outputs' or 'predictions' in {list(body)}.")


# --------------------------------------------------------------------------- clients


class _Client:
    """Shared logic: cached metadata, validation, signature choice."""

    def __init__(self, model_name: str, version: int | None, signature_name: str, validate: bool):
        self.model_name = model_name
        self.version = version
        self.signature_name = signature_name
        self.validate = validate
        self._signatures: dict[str, SignatureInfo] | None = None

    def _fetch_signatures(self) -> dict[str, SignatureInfo]:
        raise NotImplementedError

    def signatures(self, refresh: bool = False) -> dict[str, SignatureInfo]:
        """The model's serving signatures (fetched once, then cached)."""
        if self._signatures is None or refresh:
            self._signatures = self._fetch_signatures()
        return self._signatures

    def signature(self, name: str | None = None) -> SignatureInfo:
        name = name or self.signature_name
        signatures = self.signatures()
        if name not in signatures:
            raise FeatureError(
                f"model {self.model_name!r} has no signature {name!r}; it has {sorted(signatures)}."
            )
        return signatures[name]

    def prepare(self, inputs: Mapping[str, Any], signature_name: str | None = None) -> dict:
        """Validate (unless `validate=False`) and convert a request; returns numpy arrays."""
        if self.validate:
            return validate_request(inputs, self.signature(signature_name))
        return cast_request(inputs, self._known_signature(signature_name))

    def _known_signature(self, name: str | None) -> SignatureInfo | None:
        """The signature if its metadata is at hand without a call to the server."""
        if self._signatures is None:
            return None
        return self._signatures.get(name or self.signature_name)


class GrpcClient(_Client):
    """gRPC client for TF Serving's `PredictionService`.

    Args:
        target: `host:port` of the gRPC endpoint (TF Serving's default port is 8500).
        model_name: The served model name (`--model_name` / `models.config`).
        version: A version number, or None for the latest.
        signature_name: Default signature (`serving_default` or `tf_example`).
        timeout: Per-call deadline in seconds.
        validate: Check requests against the signature metadata before sending.
        channel: An existing `grpc.Channel` (otherwise an insecure channel to `target`).
    """

    def __init__(
        self,
        target: str = "localhost:8500",
        model_name: str = "rankmixer",
        version: int | None = None,
        signature_name: str = SERVING_DEFAULT,
        timeout: float = 10.0,
        validate: bool = True,
        channel=None,
    ) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        super().__init__(model_name, version, signature_name, validate)
        self.target = target
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _model_spec(self, signature_name: str | None = None):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.model_name)
        if signature_name:
            spec.signature_name = signature_name
        if self.version is not None:
            spec.version.value = int(self.version)
        return spec

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            details = _first_error_line(e.details() or "")
            raise ServingError(f"{self.target}: {e.code().name}: {details}") from e

    def _fetch_signatures(self) -> dict[str, SignatureInfo]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(), metadata_field=["signature_def"]
        )
        response = self._call(self._stub.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return signatures_from_map(sig_map)

    def predict(
        self, inputs: Mapping[str, Any], signature_name: str | None = None
    ) -> dict[str, np.ndarray]:
        """Score a columnar batch `{feature: values}`; returns `{output: array}`."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        signature_name = signature_name or self.signature_name
        arrays = self.prepare(inputs, signature_name)
        request = predict_pb2.PredictRequest(model_spec=self._model_spec(signature_name))
        for name, value in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._stub.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RestClient(_Client):
    """REST client for TF Serving (`/v1/models/<name>[/versions/<v>]:predict`).

    Args:
        url: Base URL of the REST endpoint (TF Serving's default port is 8501).
        model_name: The served model name.
        version: A version number, or None for the latest.
        signature_name: Default signature.
        request_format: `"inputs"` (columnar, compact) or `"instances"` (row).
        timeout: Per-request timeout in seconds.
        validate: Check requests against the signature metadata before sending.
    """

    def __init__(
        self,
        url: str = "http://localhost:8501",
        model_name: str = "rankmixer",
        version: int | None = None,
        signature_name: str = SERVING_DEFAULT,
        request_format: str = "inputs",
        timeout: float = 10.0,
        validate: bool = True,
    ) -> None:
        super().__init__(model_name, version, signature_name, validate)
        if request_format not in ("inputs", "instances"):
            raise ValueError(
                "`request_format` must be 'inputs' or 'instances', "
                f"got request_format={request_format!r}."
            )
        self.url = url.rstrip("/")
        self.request_format = request_format
        self.timeout = timeout

    @property
    def model_url(self) -> str:
        version = f"/versions/{int(self.version)}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{version}"

    def _http(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except ValueError:
                pass
            raise ServingError(f"{url}: HTTP {e.code}: {text}") from e
        except urllib.error.URLError as e:
            raise ServingError(f"{url}: {e.reason}") from e

    def _fetch_signatures(self) -> dict[str, SignatureInfo]:
        return signatures_from_rest_metadata(self._http(f"{self.model_url}/metadata"))

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        request_format: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Score a columnar batch `{feature: values}`; returns `{output: array}`."""
        signature_name = signature_name or self.signature_name
        arrays = self.prepare(inputs, signature_name)
        body = rest_request_body(arrays, signature_name, request_format or self.request_format)
        response = self._http(f"{self.model_url}:predict", body)
        outputs = list(self.signature(signature_name).outputs) if self.validate else None
        if outputs is None:
            payload = response.get("outputs", response.get("predictions"))
            first = payload[0] if isinstance(payload, list) and payload else payload
            outputs = list(first) if isinstance(first, dict) else ["output"]
        return parse_rest_response(response, outputs)


class LocalClient(_Client):
    """The client interface on a SavedModel loaded in this process (`tf.saved_model.load`)."""

    def __init__(
        self, path: str, signature_name: str = SERVING_DEFAULT, validate: bool = True
    ) -> None:
        import tensorflow as tf

        super().__init__(os.path.basename(os.path.normpath(path)), None, signature_name, validate)
        self.path = path
        self._loaded = tf.saved_model.load(path)

    def _fetch_signatures(self) -> dict[str, SignatureInfo]:
        return signatures_from_saved_model(self.path)

    def _known_signature(self, name: str | None) -> SignatureInfo | None:
        return self.signatures().get(name or self.signature_name)  # local: no server call

    def predict(
        self, inputs: Mapping[str, Any], signature_name: str | None = None
    ) -> dict[str, np.ndarray]:
        import tensorflow as tf

        signature_name = signature_name or self.signature_name
        arrays = self.prepare(inputs, signature_name)
        if signature_name not in self._loaded.signatures:
            raise ServingError(
                f"{self.path}: no signature {signature_name!r}; it has "
                f"{sorted(self._loaded.signatures)}."
            )
        fn = self._loaded.signatures[signature_name]
        try:
            out = fn(**{k: tf.constant(v) for k, v in arrays.items()})
        except (tf.errors.OpError, TypeError, ValueError) as e:
            # What TF Serving would answer (INVALID_ARGUMENT and the graph's message), e.g. a
            # sequence of the wrong length sent with validate=False.
            text = getattr(e, "message", None) or str(e)
            raise ServingError(f"{self.path}: {_first_error_line(text)}") from e
        return {k: v.numpy() for k, v in out.items()}


def _first_error_line(text: str) -> str:
    """The informative line of a TF error: an assertion's message, else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("assertion failed:"):
            return line
    return lines[0] if lines else text


def load_request(path: str) -> dict[str, Any]:
    """Read a request file: a JSON object `{feature: [values]}` (columnar), a JSON list of
    instance objects, a `{"inputs": ...}` / `{"instances": ...}` REST body, or JSON lines
    (one instance object per line). Returns the columnar form."""
    if not os.path.isfile(path):
        raise FeatureError(f"request file not found: {path}")
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise FeatureError(f"{path}: empty request file.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole:
        lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) == 1:  # one line: it was meant as one JSON document
            raise FeatureError(
                f"{path}: not valid JSON ({whole.msg} at line {whole.lineno}, column "
                f"{whole.colno})."
            ) from None
        data = []
        for i, line in lines:
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FeatureError(
                    f"{path}: not valid JSON ({whole.msg} at line {whole.lineno}, column "
                    f"{whole.colno}), nor JSON lines (line {i}: {e.msg} at column {e.colno})."
                ) from None
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    elif isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if isinstance(data, list):
        if not data or not all(isinstance(r, dict) for r in data):
            raise FeatureError(f"{path}: instances must be a non-empty list of objects.")
        names = list(data[0])
        for i, row in enumerate(data):
            if set(row) != set(names):
                raise FeatureError(
                    f"{path}: instance {i} has features {sorted(row)}, instance 0 has "
                    f"{sorted(names)}."
                )
        data = {k: [_from_json(r[k]) for r in data] for k in names}
    if not isinstance(data, dict):
        raise FeatureError(f"{path}: expected a JSON object or a list of objects.")
    return {k: _nan_safe(_from_json(v)) for k, v in data.items()}


def _nan_safe(value: Any) -> Any:
    """JSON `null` in a numeric list means missing: NaN (floats)."""
    if isinstance(value, list) and any(v is None for v in value):
        return [math.nan if v is None else v for v in value]
    return value

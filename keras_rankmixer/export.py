"""SavedModel export for TensorFlow Serving: named signatures, tf.Example parsing, warmup.

`export_saved_model(model, base_dir)` writes the layout TF Serving polls,
`<base_dir>/<model_name>/<version>/`, with numeric version folders:

```
<base_dir>/<model_name>/<version>/
    saved_model.pb, variables/, fingerprint.pb
    assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog (<= 1000 records)
    assets.extra/rankmixer_export.json        what was exported (inputs, outputs, precision, ...)
```

Signatures (both `tensorflow/serving/predict`):

- `serving_default`: one input per raw feature, named and typed as the model's inputs
  (`int64` ids, `string` values, `float32` numbers; scalars `(batch,)`, sequences
  `(batch, max_length)`), one output per task, `(batch, 1)` float32 probabilities.
- `tf_example`: input `examples`, a `(batch,)` string tensor of serialized `tf.Example` protos,
  parsed in the graph with `tf.io.parse_example`; same outputs. A feature absent from an example
  takes the documented missing value of `keras_rankmixer.features`: `-1` for ids, `""` for
  strings, NaN for numbers. Sequence features may hold 0 to `max_length` values (padded with
  the missing value; longer lists are truncated to the first `max_length`).

All preprocessing (vocabulary lookup, hashing, normalisation, OOV and missing handling) is in
the model graph, so clients send raw features. The SavedModel is a plain TensorFlow graph: it
loads with `tf.saved_model.load` or TF Serving's C++ loader without `keras_rankmixer` or Keras
installed, and it is traced without XLA (TF Serving runs with XLA off by default).

With `precision="bfloat16"` or `"float16"` the model is rebuilt under the matching mixed
precision policy (float32 variables, reduced-precision compute); inputs and outputs stay
float32, and the export reports the largest difference from the float32 model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

SERVING_DEFAULT = "serving_default"
TF_EXAMPLE_SIGNATURE = "tf_example"
EXAMPLES_INPUT = "examples"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "rankmixer_export.json"
MAX_WARMUP_RECORDS = 1000
PRECISIONS = ("float32", "bfloat16", "float16")
_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass
class ExportResult:
    """What `export_saved_model` wrote.

    Attributes:
        path: The version directory `<base_dir>/<model_name>/<version>`.
        model_name: TF Serving model name (the folder under `base_dir`).
        version: The numeric version.
        precision: `"float32"`, `"bfloat16"` or `"float16"` (compute precision).
        signatures: `{signature: {"inputs": {...}, "outputs": {...}}}` (dtype and shape).
        num_warmup_records: Records in `assets.extra/tf_serving_warmup_requests`.
        max_abs_diff: Per task, max |exported SavedModel - float32 Keras model| over the
            reference batch (None when verification was skipped).
    """

    path: str
    model_name: str
    version: int
    precision: str
    signatures: dict
    num_warmup_records: int
    max_abs_diff: dict[str, float] | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- input specs


def serving_input_specs(model: keras.Model) -> dict:
    """`{name: tf.TensorSpec}` of the model's raw-feature inputs, batch dimension `None`.

    Example:

    >>> from keras_rankmixer import CategoricalFeature, build_from_preset
    >>> m = build_from_preset("tiny", [CategoricalFeature("item", vocabulary_size=9)])
    >>> serving_input_specs(m)["item"]
    TensorSpec(shape=(None,), dtype=tf.int64, name='item')
    """
    import tensorflow as tf

    specs = {}
    for tensor in model.inputs:
        name = tensor.name
        if not re.fullmatch(r"[A-Za-z0-9_]+", name or ""):
            raise ValueError(f"model input name {name!r} is not a valid signature key.")
        specs[name] = tf.TensorSpec((None, *tensor.shape[1:]), tf.as_dtype(tensor.dtype), name=name)
    return specs


def _missing_value(dtype) -> Any:
    """The documented missing value of `keras_rankmixer.features` for a dtype."""
    if dtype.is_floating:
        return float("nan")
    if dtype == "string":
        return b""
    return -1


def example_parsing_spec(input_specs: Mapping[str, Any]) -> dict:
    """`tf.io.parse_example` features for the input specs.

    Scalars are `FixedLenFeature([], default=missing)`; rank-1 inputs (sequences) are
    `RaggedFeature`s, padded/truncated to the fixed length in `parse_examples`. Integers are
    parsed as int64 and floats as float32 (the only tf.Example list types) and cast after.
    """
    import tensorflow as tf

    features = {}
    for name, spec in input_specs.items():
        dtype = spec.dtype
        parse_dtype = (
            tf.string if dtype == tf.string else tf.float32 if dtype.is_floating else tf.int64
        )
        inner = tuple(spec.shape[1:])
        if len(inner) == 1:
            features[name] = tf.io.RaggedFeature(parse_dtype, row_splits_dtype=tf.int64)
        else:
            default = np.full(inner, _missing_value(dtype), dtype=parse_dtype.as_numpy_dtype)
            features[name] = tf.io.FixedLenFeature(
                inner, parse_dtype, default_value=default if inner else default.item()
            )
    return features


def parse_examples(serialized, input_specs: Mapping[str, Any]) -> dict:
    """Parse a batch of serialized `tf.Example`s into raw-feature tensors (graph ops only)."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, example_parsing_spec(input_specs))
    out = {}
    for name, spec in input_specs.items():
        value = parsed[name]
        if isinstance(value, tf.RaggedTensor):
            length = spec.shape[1]
            value = value.to_tensor(default_value=_missing_value(spec.dtype), shape=[None, length])
        out[name] = tf.cast(value, spec.dtype) if value.dtype != spec.dtype else value
    return out


def check_sequence_lengths(features: Mapping[str, Any], input_specs: Mapping[str, Any]) -> dict:
    """Graph ops that reject a sequence input whose length is not its `max_length`.

    A signature's declared shape `(batch, max_length)` is not enforced when it is called:
    TF Serving (and `tf.saved_model.load(...).signatures[...]`) would feed a `(batch, 3)` or
    `(batch, 7)` tensor straight into the model and score it. The served graph refuses it
    instead, with an `InvalidArgumentError` naming the feature (TF Serving answers
    INVALID_ARGUMENT with this text). Callers pad short sequences with -1 (or "") as the
    readers do; the `tf_example` signature, whose lists have any length, pads and truncates
    before this check.
    """
    import tensorflow as tf

    out = dict(features)
    for name, spec in input_specs.items():
        if len(spec.shape) == 2 and spec.shape[1] is not None:
            length = int(spec.shape[1])
            got = tf.shape(features[name], out_type=tf.int64)[1]
            check = tf.debugging.Assert(
                tf.equal(got, length),
                [
                    # no quotes: TF escapes them in the error text
                    f"feature {name}: a sequence needs exactly {length} values per row "
                    "(max_length; pad with -1, or the empty string for strings), got",
                    got,
                ],
                name=f"check_length_{name}",
            )
            with tf.control_dependencies([check]):
                out[name] = tf.identity(features[name])
    return out


def make_examples(features: Mapping[str, Any]) -> list[bytes]:
    """Serialize a columnar batch `{name: array}` into one `tf.Example` per row.

    Missing values are left out of the example (the parser fills the missing value back in):
    negative ids, empty strings, non-finite floats, and the padding of sequences.

    Example:

    >>> records = make_examples({"item": np.array([3, -1]), "price": np.array([1.5, 2.0])})
    >>> len(records)
    2
    """
    import tensorflow as tf

    columns = {k: np.asarray(v) for k, v in features.items()}
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise ValueError(f"all features need the same batch size, got {sizes}.")
    records = []
    for i in range(sizes.pop()):
        feature = {}
        for name, column in columns.items():
            values = np.atleast_1d(column[i])
            if values.dtype.kind in "USO":
                values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
                values = [v for v in values if v]
                if values:
                    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
            elif values.dtype.kind == "f":
                values = values[np.isfinite(values)]
                if values.size:
                    feature[name] = tf.train.Feature(
                        float_list=tf.train.FloatList(value=values.tolist())
                    )
            else:
                values = values[values >= 0]
                if values.size:
                    feature[name] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=values.tolist())
                    )
        records.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    return records


# --------------------------------------------------------------------------- inputs


def representative_inputs(model: keras.Model, batch_size: int = 64, seed: int = 0) -> dict:
    """A plausible raw batch for `model`, from its embedding layers' vocabularies.

    Categorical ids are drawn from the vocabulary (5% missing), sequences get random lengths,
    numbers follow the layer's normalisation statistics (5% NaN). Inputs without a
    `keras_rankmixer` embedding layer get zeros / empty strings.
    """
    from keras_rankmixer.layers.categorical_embedding import CategoricalEmbedding
    from keras_rankmixer.layers.numeric_embedding import NumericEmbedding

    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in serving_input_specs(model).items():
        shape = (batch_size, *spec.shape[1:])
        try:
            layer = model.get_layer(f"embed_{name}")
        except ValueError:
            layer = None
        if isinstance(layer, CategoricalEmbedding):
            if layer.vocabulary is not None:
                vocab = np.asarray(
                    layer.vocabulary, dtype=object if spec.dtype == "string" else None
                )
                values = vocab[rng.integers(0, len(vocab), shape)]
            else:
                values = rng.integers(0, layer.vocabulary_size or layer.num_hash_bins, shape)
                if spec.dtype == "string":
                    values = np.vectorize(lambda v: f"v{v}", otypes=[object])(values)
            missing = rng.random(shape) < 0.05
            if len(shape) == 2:  # sequences: random lengths, padded at the end
                lengths = rng.integers(0, shape[1] + 1, (shape[0], 1))
                missing = np.arange(shape[1])[None, :] >= lengths
            fill = "" if spec.dtype == "string" else -1
            values = np.where(missing, fill, values)
        elif isinstance(layer, NumericEmbedding):
            z = rng.normal(layer.mean, layer.std, shape)
            values = np.sign(z) * np.expm1(np.abs(z)) if layer.transform == "log1p" else z
            values = np.where(rng.random(shape) < 0.05, np.nan, values)
        elif spec.dtype == "string":
            values = np.full(shape, "", dtype=object)
        else:
            values = np.zeros(shape)
        if spec.dtype == "string":
            flat = [v.encode() if isinstance(v, str) else bytes(v) for v in np.ravel(values)]
            out[name] = np.asarray(flat, dtype=object).reshape(shape)
        else:
            out[name] = np.asarray(values).astype(spec.dtype.as_numpy_dtype)
    return out


def _take_rows(inputs: Mapping[str, np.ndarray], batch_size: int, start: int = 0) -> dict:
    n = len(next(iter(inputs.values())))
    idx = (np.arange(batch_size) + start) % n
    return {k: np.asarray(v)[idx] for k, v in inputs.items()}


def _to_tensors(inputs: Mapping[str, Any], input_specs: Mapping[str, Any]) -> dict:
    import tensorflow as tf

    out = {}
    for name, spec in input_specs.items():
        if name not in inputs:
            raise ValueError(f"missing feature {name!r} in the reference/warmup inputs.")
        out[name] = tf.convert_to_tensor(np.asarray(inputs[name]), dtype=spec.dtype)
    return out


# --------------------------------------------------------------------------- precision


_FLOAT_POLICIES = ("float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16")


def _is_float_policy(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value in _FLOAT_POLICIES
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        return value.get("config", {}).get("name") in _FLOAT_POLICIES
    return False


def _with_policy(config: Any, policy: str) -> Any:
    """Replace every floating dtype policy in a (nested) layer config by `policy`."""
    if isinstance(config, dict):
        return {
            key: policy
            if key == "dtype" and _is_float_policy(value)
            else value  # a Backbone's feature specs: their "dtype" is the input's, not a policy
            if key == "features"
            else _with_policy(value, policy)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_with_policy(v, policy) for v in config]
    return config


def compute_dtypes(model: keras.Model) -> set[str]:
    """The floating compute dtypes of the model's layers (e.g. `{"float32", "bfloat16"}`)."""
    return {
        layer.dtype_policy.compute_dtype
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if layer.dtype_policy.compute_dtype in ("float32", "bfloat16", "float16")
    }


def model_with_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of `model` with every layer but the output layers under dtype policy `policy`.

    The output layers keep their own (float32) policy, so outputs stay float32. Weights are
    copied; variables stay float32 under the mixed policies.
    """
    output_layers = {t._keras_history[0].name for t in keras.tree.flatten(model.outputs)}

    def clone(layer):
        config = layer.get_config()
        if layer.name not in output_layers:
            config = _with_policy(config, policy)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def reduced_precision_model(model: keras.Model, precision: str) -> keras.Model:
    """A copy of `model` computing in bf16/fp16 (float32 variables, float32 outputs).

    Every layer except the output layers is rebuilt under `mixed_bfloat16` / `mixed_float16`.
    """
    if precision not in _POLICIES:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got precision={precision!r}.")
    return model_with_policy(model, _POLICIES[precision])


# --------------------------------------------------------------------------- warmup


def warmup_records(
    inputs: Mapping[str, np.ndarray],
    model_name: str,
    batch_sizes: Sequence[int] = (1, 64),
    signatures: Sequence[str] = (SERVING_DEFAULT, TF_EXAMPLE_SIGNATURE),
) -> list[bytes]:
    """Serialized `PredictionLog`s (one per batch size and signature) from a raw batch."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for i, size in enumerate(batch_sizes):
        batch = _take_rows(inputs, int(size), start=i)
        for signature in signatures:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            if signature == TF_EXAMPLE_SIGNATURE:
                examples = np.asarray(make_examples(batch), dtype=object)
                request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(examples))
            else:
                for name, value in batch.items():
                    request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            records.append(log.SerializeToString())
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"{len(records)} warmup records; TF Serving reads at most {MAX_WARMUP_RECORDS}."
        )
    return records


def read_warmup_records(path: str) -> list:
    """The `PredictionLog` protos of a warmup file (or of a version directory)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if os.path.isdir(path):
        path = os.path.join(path, "assets.extra", WARMUP_FILE)
    logs = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        logs.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return logs


# --------------------------------------------------------------------------- export


def next_version(model_dir: str) -> int:
    """1 + the largest numeric version folder in `model_dir` (1 when there is none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def _signature_summary(input_specs, outputs) -> dict:
    def describe(spec):
        return {"dtype": spec.dtype.name, "shape": [-1 if d is None else d for d in spec.shape]}

    outs = {k: {"dtype": "float32", "shape": [-1, *v.shape[1:]]} for k, v in outputs.items()}
    return {
        SERVING_DEFAULT: {
            "inputs": {k: describe(s) for k, s in input_specs.items()},
            "outputs": outs,
        },
        TF_EXAMPLE_SIGNATURE: {
            "inputs": {EXAMPLES_INPUT: {"dtype": "string", "shape": [-1]}},
            "outputs": outs,
        },
    }


def export_saved_model(
    model: keras.Model,
    base_dir: str,
    model_name: str = "rankmixer",
    version: int | None = None,
    *,
    precision: str = "float32",
    warmup_inputs: Mapping[str, Any] | None = None,
    warmup_batch_sizes: Sequence[int] = (1, 64),
    features: Sequence | None = None,
    verify: bool = True,
    overwrite: bool = False,
    serving_graph: str | Sequence[str] = "fused",
    jit_compile: bool = False,
) -> ExportResult:
    """Export `model` as a TF Serving model version `<base_dir>/<model_name>/<version>/`.

    Args:
        model: A `keras_rankmixer` functional model (dict of raw features -> dict of task
            probabilities), e.g. from `build_rankmixer` or `keras.saving.load_model`.
        base_dir: The TF Serving base path (`--model_base_path` is `<base_dir>/<model_name>`).
        model_name: Model name (folder, and `model_spec.name` of the warmup requests).
        version: Numeric version; None takes `1 + ` the largest existing one.
        precision: `"float32"` (default), `"bfloat16"` or `"float16"` compute; inputs and
            outputs stay float32. This is the precision of the export whatever the model's
            own dtype policy (a model trained under `mixed_bfloat16` exports in float32
            unless asked otherwise).
        warmup_inputs: Raw batch `{feature: array}` for the warmup requests and the
            verification (e.g. a slice of validation data); None draws
            `representative_inputs(model)`.
        warmup_batch_sizes: One warmup request per batch size and signature (at most 1000
            records in all).
        features: Optional feature specs (objects or `feature_to_config` dicts), written to
            `assets.extra/rankmixer_export.json` for clients.
        verify: Reload the written SavedModel with `tf.saved_model.load` and report the max
            absolute difference of its outputs from the Keras model run in float32.
        overwrite: Replace an existing version folder (otherwise that is an error).
        serving_graph: How the layers spell the served graph: `"fused"` (default) traces
            them in the form TF's CPU graph optimiser (grappler's remapper, oneDNN) fuses:
            per-token 2-D matmuls with bias + exact GELU and bias + residual in the matmul
            epilogue, oneDNN's fused LayerNorm and a per-slice tokenizer
            (`keras_rankmixer.layers.per_token_ffn.cpu_serving_graph`); `"plain"` traces the
            training spelling (batched matmuls, an einsum). Same weights and math. A
            comma-separated subset of `"ffn,residual,layer_norm,tokenizer,swiglu"` picks
            single levers; `"swiglu"` (TokenMixer-Large's gate and up projections as two
            matmuls) is opt-in: faster at large batches, slower at small ones
            (docs/performance.md). Ignored (plain) with `jit_compile=True`: XLA fuses itself.
        jit_compile: Compile the model inside both signatures with XLA
            (`tf.function(jit_compile=True)`). Off by default: TF Serving runs such a graph
            only when started with `--xla_cpu_compilation_enabled=true` (experimental;
            without it the first compilation fails, so the warmup fails and the version
            does not load; docs/deployment.md), and it compiles once per new batch size.
            Needs numeric inputs (XLA cannot compile string lookups).

    Returns:
        An `ExportResult` (path, version, signatures, warmup record count, max_abs_diff).

    Example:

    >>> import tempfile
    >>> from keras_rankmixer import CategoricalFeature, build_from_preset
    >>> m = build_from_preset("tiny", [CategoricalFeature("item", vocabulary_size=9)])
    >>> result = export_saved_model(m, tempfile.mkdtemp(), "demo")
    >>> result.version, sorted(result.signatures)
    (1, ['serving_default', 'tf_example'])
    """
    if keras.backend.backend() != "tensorflow":  # a user's setting: ValueError, a CLI user error
        raise ValueError(
            "export_saved_model needs the TensorFlow backend (a SavedModel is a TF graph), "
            f"but Keras runs on {keras.backend.backend()!r}. Save the model "
            "(`model.save('model.keras')`) and export it in a process started with "
            "KERAS_BACKEND=tensorflow, e.g. `rankmixer export model.keras --output DIR`."
        )
    import tensorflow as tf

    from keras_rankmixer.layers.per_token_ffn import cpu_serving_graph, parse_serving_levers

    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got precision={precision!r}.")
    if serving_graph in ("fused", "plain"):
        levers = parse_serving_levers(serving_graph if serving_graph == "fused" else "none")
    else:
        levers = parse_serving_levers(serving_graph)
    if jit_compile:
        levers = frozenset()  # XLA fuses the batched form itself
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name or ""):
        raise ValueError(
            f"`model_name` must be a plain folder name, got model_name={model_name!r}."
        )
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ValueError(f"`version` must be a non-negative int, got version={version!r}.")
    if not isinstance(model.output, dict):
        raise ValueError("export_saved_model needs a model with dict outputs {task: probability}.")
    model_dir = os.path.join(base_dir, model_name)
    version = next_version(model_dir) if version is None else version
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or another version.")

    sizes = list(warmup_batch_sizes)
    if not sizes or not all(isinstance(b, int) and b > 0 for b in sizes):
        raise ValueError(
            "`warmup_batch_sizes` must be a non-empty list of positive ints, "
            f"got warmup_batch_sizes={warmup_batch_sizes!r}."
        )
    input_specs = serving_input_specs(model)
    strings = sorted(k for k, spec in input_specs.items() if spec.dtype == tf.string)
    if jit_compile and strings:
        raise ValueError(
            "jit_compile=True compiles the whole model with XLA, which cannot compile the "
            f"string lookups of {strings}; export those models without jit_compile."
        )
    if warmup_inputs is None:
        warmup_inputs = representative_inputs(model, max(sizes))
    # A warmup request TF Serving cannot run makes the whole version fail to load: check the
    # batch against the signature first (FeatureError naming the feature).
    warmup_inputs = _check_against_specs(warmup_inputs, input_specs)
    # A model trained under a mixed policy is served in float32 unless `precision` says
    # otherwise; the float32 version is also the reference of `max_abs_diff`.
    reference = (
        model if compute_dtypes(model) <= {"float32"} else model_with_policy(model, "float32")
    )
    serving_model = (
        reference if precision == "float32" else reduced_precision_model(reference, precision)
    )

    def run_model(features):
        with cpu_serving_graph(levers):
            outputs = serving_model(features, training=False)
        return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

    # With jit_compile, only the model is compiled: the tf.Example parsing and the
    # sequence-length assertions stay outside XLA (which cannot compile them).
    model_fn = tf.function(run_model, jit_compile=True) if jit_compile else run_model

    def serve(features):
        return model_fn(check_sequence_lengths(features, input_specs))

    def serve_examples(examples):
        return serve(parse_examples(examples, input_specs))

    archive = keras.export.ExportArchive()
    archive.track(serving_model)
    archive.add_endpoint(SERVING_DEFAULT, serve, input_signature=[input_specs])
    archive.add_endpoint(
        TF_EXAMPLE_SIGNATURE,
        serve_examples,
        input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)],
    )
    os.makedirs(model_dir, exist_ok=True)
    # Write next to the final folder, then rename: TF Serving polls `model_dir` and must never
    # see a half-written version (non-numeric folders are ignored by it).
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        archive.write_out(staging, verbose=False)
        records = warmup_records(warmup_inputs, model_name, sizes)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in records:
                writer.write(record)
        signatures = _signature_summary(input_specs, model.output)
        max_abs_diff = None
        if verify:
            max_abs_diff = _verify(reference, staging, warmup_inputs, input_specs)
        result = ExportResult(
            path=final,
            model_name=model_name,
            version=version,
            precision=precision,
            signatures=signatures,
            num_warmup_records=len(records),
            max_abs_diff=max_abs_diff,
        )
        metadata = {
            **result.to_json(),
            "tasks": list(model.output),
            "missing_values": {"int64": -1, "string": "", "float32": "NaN"},
            "serving_graph": sorted(levers),
            "jit_compile": bool(jit_compile),
            "features": [_feature_json(f) for f in features] if features else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        }
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return result


def _check_against_specs(inputs: Mapping[str, Any], input_specs: Mapping[str, Any]) -> dict:
    """`serving.validate_request` of a raw batch against the `serving_default` inputs."""
    from keras_rankmixer.serving import SignatureInfo, TensorInfo, validate_request

    signature = SignatureInfo(
        SERVING_DEFAULT,
        {
            name: TensorInfo(
                name, spec.dtype.name, tuple(-1 if d is None else d for d in spec.shape)
            )
            for name, spec in input_specs.items()
        },
        {},
    )
    return validate_request(inputs, signature)


def _feature_json(feature) -> dict:
    from keras_rankmixer.features import feature_to_config

    return dict(feature) if isinstance(feature, Mapping) else feature_to_config(feature)


def _verify(model, path, inputs, input_specs) -> dict[str, float]:
    """Max |SavedModel(serving_default) - float32 Keras model| per task on `inputs`."""
    import tensorflow as tf

    batch = {k: v[:512] for k, v in inputs.items()}
    tensors = _to_tensors(batch, input_specs)
    expected = model(tensors, training=False)
    loaded = tf.saved_model.load(path)
    got = loaded.signatures[SERVING_DEFAULT](**tensors)
    diffs = {}
    for task, value in expected.items():
        a = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
        b = got[task].numpy().astype("float64")
        if not np.all(np.isfinite(b)):
            raise RuntimeError(f"exported output {task!r} has non-finite values.")
        diffs[task] = float(np.max(np.abs(a - b)))
    return diffs

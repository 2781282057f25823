"""The bad-request fault suite of the serving path (issue #19), as tables.

1. `SIGNATURE_CASES`: raw tensors sent straight to the exported `serving_default` /
   `tf_example` signatures in a Python that cannot import Keras or keras_rankmixer (what a
   TF Serving caller without our client gets): scored, or refused with the graph's message.
2. `CLIENT_CASES`: requests through the client (`LocalClient`, validating): converted, or a
   `FeatureError` naming the feature; the same checks run in `GrpcClient` / `RestClient`
   (one `_Client.prepare`), and one case goes through the gRPC test double.
3. `PREDICT_CASES`: `rankmixer predict` command lines: exit status and the one stderr line.

The same tables are in docs/deployment.md ("Bad requests: what happens").
"""

from __future__ import annotations

import json
import math
import textwrap
import time

import keras
import numpy as np
import pytest
from export_helpers import NO_KERAS, export_tiny, needs_tensorflow
from helpers import keras_free_python, run_json_script

from keras_rankmixer import (
    CategoricalFeature,
    FeatureError,
    NumericFeature,
    SequenceFeature,
    build_from_preset,
)
from keras_rankmixer.serving import LocalClient, ServingError

pytestmark = needs_tensorflow

FEATURES = [
    CategoricalFeature("user", vocabulary_size=100, embedding_dim=8, group="user"),
    CategoricalFeature("city", vocabulary=("paris", "rome"), dtype="string", embedding_dim=8),
    SequenceFeature("history", vocabulary_size=50, max_length=3, embedding_dim=8, group="user"),
    NumericFeature("price", embedding_dim=8, group="item"),
]
LENGTH_ERROR = (
    "assertion failed: [feature history: a sequence needs exactly 3 values per row "
    "(max_length; pad with -1, or the empty string for strings), got] [{n}]"
)


def good() -> dict:
    return {
        "user": [7, 500, -1],
        "city": ["rome", "berlin", ""],
        "history": [[1, 2, -1], [-1, -1, -1], [4, 4, 4]],
        "price": [3.0, float("nan"), -1.5],
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    _, result, _ = export_tiny(
        tmp_path_factory, "bad_requests", FEATURES, ["click"], 5, version=1, warmup_batch_sizes=(1,)
    )
    return result.path


# ------------------------------------------------------------ 1. the signatures, no Keras

# (case, signature, {feature: (values, dtype)} changes to good(), expected: "ok" or error)
SIGNATURE_CASES = [
    ("good_request", {}, "ok"),
    ("missing_values", {"user": [-1] * 3, "city": [""] * 3, "price": [math.nan] * 3}, "ok"),
    ("inf_number", {"price": [math.inf, -math.inf, 1.0]}, "ok"),
    ("unseen_id_and_string", {"user": [10**6] * 3, "city": ["x", "y", "z"]}, "ok"),
    ("sequence_too_short", {"history": [[1, 2], [3, 4], [5, 6]]}, LENGTH_ERROR.format(n=2)),
    ("sequence_too_long", {"history": [[1] * 7] * 3}, LENGTH_ERROR.format(n=7)),
    ("sequence_empty", {"history": [[], [], []]}, LENGTH_ERROR.format(n=0)),
]

SIGNATURE_SCRIPT = NO_KERAS + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    path, cases_file = sys.argv[1:3]
    loaded = tf.saved_model.load(path)
    fn, parse = loaded.signatures["serving_default"], loaded.signatures["tf_example"]
    dtypes = {"user": tf.int64, "city": tf.string, "history": tf.int64, "price": tf.float32}
    out = {}
    for case in json.load(open(cases_file)):
        try:
            got = fn(**{k: tf.constant(v, dtypes[k]) for k, v in case["inputs"].items()})
            p = got["click"].numpy()
            out[case["id"]] = "ok" if p.shape == (3, 1) and np.isfinite(p).all() else repr(p)
        except tf.errors.InvalidArgumentError as e:
            out[case["id"]] = [l for l in e.message.splitlines() if "assertion" in l][0].strip()

    # tf_example: lists of any length are padded / truncated to max_length in the graph.
    def example(history):
        feature = {"history": tf.train.Feature(int64_list=tf.train.Int64List(value=history))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    scores = parse(examples=tf.constant([example([4, 5]), example([4, 5, -1]),
                                         example([1, 2, 3, 9, 9]), example([1, 2, 3])]))
    p = scores["click"].numpy()[:, 0]
    out["example_short_is_padded"] = bool(abs(p[0] - p[1]) < 1e-7)
    out["example_long_is_truncated"] = bool(abs(p[2] - p[3]) < 1e-7)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def signature_results(exported, tmp_path_factory):
    d = tmp_path_factory.mktemp("signature_cases")
    cases = [{"id": c, "inputs": {**good(), **change}} for c, change, _ in SIGNATURE_CASES]
    cases_file = str(d / "cases.json")
    with open(cases_file, "w") as f:
        json.dump(cases, f)
    python, env = keras_free_python(str(d / "site"))
    start = time.time()
    out = run_json_script(python + ["-c", SIGNATURE_SCRIPT, exported, cases_file], env, str(d))
    assert time.time() - start < 120
    return out


@pytest.mark.parametrize(
    "case, change, expected", SIGNATURE_CASES, ids=[c[0] for c in SIGNATURE_CASES]
)
def test_signature_without_keras(signature_results, case, change, expected):
    assert signature_results[case] == expected


def test_tf_example_pads_and_truncates_sequences(signature_results):
    assert signature_results["example_short_is_padded"] is True
    assert signature_results["example_long_is_truncated"] is True


# ------------------------------------------------------------ 2. the clients

# (case, changes to good(), expected: "ok", "same as <case>" or the FeatureError message)
CLIENT_CASES = [
    ("good_request", {}, "ok"),
    ("none_in_floats_is_nan", {"price": [3.0, None, -1.5]}, "same as good_request"),
    ("none_in_ids", {"user": [7, None, -1]},
     "feature 'user': None in the values; send -1 for missing."),
    ("none_in_strings", {"city": ["rome", None, ""]},
     "feature 'city': None in the values; send '' for missing."),
    ("ragged_sequence", {"history": [[1, 2], [3], [4, 4, 4]]},
     "feature 'history': rows of different lengths [1, 2, 3]; every row needs exactly 3 values "
     "(pad short sequences with -1, or '' for strings)."),
    ("sequence_wrong_length", {"history": [[1, 2], [3, 4], [5, 6]]},
     "feature 'history': expected shape (batch, 3), got (3, 2)."),
    ("id_2_pow_63", {"user": [2**63, 1, 2]},
     "feature 'user': id 9223372036854775808 is outside the int64 range "
     "[-9223372036854775808, 9223372036854775807]."),
    ("id_2_pow_64_alone", {"user": [2**64] * 3},
     "feature 'user': id 18446744073709551616 is outside the int64 range "
     "[-9223372036854775808, 9223372036854775807]."),
    ("float_ids", {"user": [7.0, 1.5, 2.0]},
     "feature 'user': expected integer ids (int64), got dtype float64 (use -1 for missing ids, "
     "not NaN)."),
    ("strings_for_numbers", {"price": ["3.0", "x", "1"]},
     "feature 'price': expected numbers, got dtype <U3."),
    ("numbers_for_strings", {"city": [1, 2, 3]},
     "feature 'city': expected strings, got dtype int64."),
    ("batch_sizes_differ", {"price": [1.0, 2.0]},
     "feature 'price': batch size 2 differs from 'city' (3)."),
    ("unknown_feature", {"colour": [1, 2, 3]},
     "unknown feature(s) ['colour'] for signature 'serving_default'; it expects ['city', "
     "'history', 'price', 'user']."),
]  # fmt: skip


@pytest.fixture(scope="module")
def local(exported):
    return LocalClient(exported)


@pytest.mark.parametrize("case, change, expected", CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client(local, case, change, expected):
    request = {**good(), **change}
    if expected == "ok" or expected.startswith("same as"):
        scores = local.predict(request)["click"]
        assert scores.shape == (3, 1) and np.isfinite(scores).all()
        if expected.startswith("same as"):
            np.testing.assert_allclose(scores, local.predict(good())["click"], atol=0)
    else:
        with pytest.raises(FeatureError) as err:
            local.predict(request)
        assert str(err.value) == expected


def test_missing_feature_and_no_validate(exported, local):
    request = good()
    del request["user"]
    with pytest.raises(FeatureError, match=r"^missing feature 'user' for signature"):
        local.predict(request)
    # validate=False: JSON floats (float64) and ints are cast to the signature's dtypes...
    raw = LocalClient(exported, validate=False)
    np.testing.assert_allclose(raw.predict(good())["click"], local.predict(good())["click"])
    # ... and the graph itself refuses a wrong sequence length, naming the feature.
    with pytest.raises(ServingError) as err:
        raw.predict({**good(), "history": [[1] * 5] * 3})
    assert str(err.value) == f"{exported}: {LENGTH_ERROR.format(n=5)}"


def test_grpc_without_validation_gets_the_graph_error(exported):
    """A TF Serving caller that skips our checks: INVALID_ARGUMENT naming the feature."""
    from serving_double import grpc_server

    from keras_rankmixer.serving import GrpcClient

    with grpc_server(exported, "ranker") as (target, _):
        with GrpcClient(target, "ranker", validate=False) as client:
            assert client.predict(good())["click"].shape == (3, 1)  # float64 cast to float32
            with pytest.raises(ServingError) as err:
                client.predict({**good(), "history": [[1, 2]] * 3})
    assert str(err.value) == f"{target}: INVALID_ARGUMENT: {LENGTH_ERROR.format(n=2)}"


# ------------------------------------------------------------ 3. rankmixer predict

# (case, request file text or None for no file, extra flags, status, stderr or stdout prefix)
PREDICT_CASES = [
    ("good_rows", json.dumps([{"user": 7, "city": "rome", "history": [1, 2, -1], "price": None}]),
     [], 0, None),
    ("no_validate_good", json.dumps({k: v for k, v in good().items() if k != "price"}
                                    | {"price": [3.0, 1.0, -1.5]}),
     ["--no-validate"], 0, None),
    ("broken_json", '{"user": [7, 8', [], 2,
     "[predict] error: {path}: not valid JSON (Expecting ',' delimiter at line 1, column 15)."),
    ("broken_json_lines", '{"user": 7}\n{"user": 8,\n', [], 2,
     "[predict] error: {path}: not valid JSON (Extra data at line 2, column 1), nor JSON lines "
     "(line 2: Expecting property name enclosed in double quotes at column 12)."),
    ("empty_file", "", [], 2, "[predict] error: {path}: empty request file."),
    ("no_such_file", None, [], 2, "[predict] error: request file not found: {path}"),
    ("instances_differ", json.dumps([{"user": 1}, {"city": "x"}]), [], 2,
     "[predict] error: {path}: instance 1 has features ['city'], instance 0 has ['user']."),
    ("ragged_history", json.dumps(good() | {"history": [[1], [2, 3], [4, 4, 4]]}), [], 2,
     "[predict] error: feature 'history': rows of different lengths [1, 2, 3]; every row needs "
     "exactly 3 values (pad short sequences with -1, or '' for strings)."),
    ("no_validate_wrong_length", json.dumps(good() | {"history": [[1, 2]] * 3}),
     ["--no-validate"], 2, "[predict] error: {model}: " + LENGTH_ERROR.format(n=2)),
]  # fmt: skip


@pytest.mark.parametrize(
    "case, text, flags, status, message", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_cli(exported, tmp_path, capsys, case, text, flags, status, message):
    from keras_rankmixer.cli import main

    path = str(tmp_path / "request.json")
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    start = time.time()
    code = main(["predict", path, "--saved-model", exported, *flags])
    # A hang guard, not a speed target: the first case pays the SavedModel load, which took
    # 36 s on a loaded CI machine; a hang would run far past this bound.
    assert time.time() - start < 120
    out, err = capsys.readouterr()
    assert code == status
    if status == 0:
        scores = json.loads(out)["click"]
        assert err == "" and np.isfinite(scores).all()
    else:
        assert err == message.format(path=path, model=exported) + "\n"
        assert out == ""


def test_load_model_without_import_names_the_package(tmp_path):
    """Documented: a `.keras` file of ours needs `import keras_rankmixer` before
    `keras.saving.load_model`. Without it (our classes taken out of Keras' registry here, as
    in a fresh Python) Keras' own message names our module, so the fix can be read off."""
    model = build_from_preset("tiny", FEATURES[:1], tasks=["click"])
    path = str(tmp_path / "m.keras")
    model.save(path)
    registry = keras.saving.get_custom_objects()
    ours = {k: v for k, v in registry.items() if k.startswith("keras_rankmixer>")}
    assert ours
    for k in ours:
        del registry[k]
    try:
        with pytest.raises(TypeError) as err:
            keras.saving.load_model(path)
    finally:
        registry.update(ours)
    assert "Could not locate class" in str(err.value)
    assert "'module': 'keras_rankmixer." in str(err.value)
    assert keras.saving.load_model(path).count_params() == model.count_params()  # with it

"""`rankmixer export`: a `.keras` model or a run directory -> a TF Serving model version."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a .keras model or a run directory as a TF Serving SavedModel",
        description=(
            "Write <output>/<model-name>/<version>/ (SavedModel with the serving_default and "
            "tf_example signatures, assets.extra/tf_serving_warmup_requests). SOURCE is a "
            ".keras file or a run directory holding model.keras (and features.json)."
        ),
    )
    parser.add_argument("source", help="a .keras file, or a run directory with model.keras")
    parser.add_argument("--output", default="serving/models", help="TF Serving base directory")
    parser.add_argument("--model-name", default="rankmixer")
    parser.add_argument("--version", type=int, default=None, help="default: latest + 1")
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "bfloat16", "float16"]
    )
    parser.add_argument(
        "--warmup-batch-sizes",
        default="1,64",
        help="comma-separated batch sizes of the warmup requests (one per signature each)",
    )
    parser.add_argument(
        "--warmup-data",
        default=None,
        help="optional .npz of raw features (one array per feature) for warmup and checks",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--no-verify", action="store_true", help="skip the reload check")
    parser.set_defaults(func=run)


def resolve_source(source: str) -> tuple[str, str | None]:
    """(path of the .keras file, path of features.json or None) for a file or run directory."""
    from keras_rankmixer.runs import FEATURES_FILE, MODEL_FILE  # the `rankmixer train` layout

    if os.path.isdir(source):
        model_path = os.path.join(source, MODEL_FILE)
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{source} is a directory without {MODEL_FILE}.")
        features_path = os.path.join(source, FEATURES_FILE)
        return model_path, features_path if os.path.exists(features_path) else None
    if not source.endswith(".keras"):
        raise ValueError(f"SOURCE must be a .keras file or a run directory, got {source!r}.")
    if not os.path.exists(source):
        raise FileNotFoundError(f"no such model file: {source}")
    return source, None


def load_for_export(source: str):
    """(model, feature specs or None) from a `.keras` file or a run directory."""
    import keras

    import keras_rankmixer  # noqa: F401  (registers the custom layers)
    from keras_rankmixer.features import check_features

    model_path, features_path = resolve_source(source)
    model = keras.saving.load_model(model_path, compile=False)
    features = None
    if features_path:
        with open(features_path) as f:
            features = check_features(json.load(f))
        inputs = sorted(t.name for t in model.inputs)
        names = sorted(f.name for f in features)
        if inputs != names:
            raise ValueError(
                f"{features_path} declares features {names}, but the model's inputs are {inputs}."
            )
    return model, features


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_rankmixer.export import export_saved_model

    model, features = load_for_export(args.source)
    warmup = None
    if args.warmup_data:
        with np.load(args.warmup_data, allow_pickle=True) as data:
            warmup = {k: data[k] for k in data.files}
    sizes = [int(s) for s in args.warmup_batch_sizes.split(",") if s.strip()]
    result = export_saved_model(
        model,
        args.output,
        args.model_name,
        args.version,
        precision=args.precision,
        warmup_inputs=warmup,
        warmup_batch_sizes=sizes,
        features=features,
        verify=not args.no_verify,
        overwrite=args.overwrite,
    )
    print(
        f"[export] wrote {result.path} ({result.precision}, {result.num_warmup_records} warmup records)"
    )
    for name, sig in result.signatures.items():
        inputs = ", ".join(f"{k}:{v['dtype']}{v['shape']}" for k, v in sig["inputs"].items())
        print(f"[export] signature {name}: {inputs} -> {', '.join(sig['outputs'])}")
    if result.max_abs_diff is not None:
        worst = max(result.max_abs_diff.values())
        print(f"[export] max |SavedModel - Keras float32| = {worst:.3g} ({result.max_abs_diff})")
    print(json.dumps(result.to_json()))
    return 0

"""`rankmixer export`: a `.keras` model or a run directory -> a TF Serving model version."""

from __future__ import annotations

import argparse
import json
import os

from keras_rankmixer.commands import add_import_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a .keras model or a run directory as a TF Serving SavedModel",
        description=(
            "Write <output>/<model-name>/<version>/ (SavedModel with the serving_default and "
            "tf_example signatures, assets.extra/tf_serving_warmup_requests). SOURCE is a "
            ".keras file (it holds the feature specs) or a run directory holding model.keras "
            "(an old run's plain functional model takes its specs from features.json)."
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
    add_import_argument(parser, note=" (a run directory's config.json lists its own)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--no-verify", action="store_true", help="skip the reload check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_rankmixer.export import export_saved_model
    from keras_rankmixer.training.run_dir import CONFIG_FILE, load_run_model, read_json
    from keras_rankmixer.training.runner import import_modules

    imports = list(args.imports)
    config_path = os.path.join(args.source, CONFIG_FILE)
    if os.path.isdir(args.source) and os.path.exists(config_path):
        imports += read_json(config_path, "config").get("imports") or []
    import_modules(imports)
    model, features = load_run_model(args.source)
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

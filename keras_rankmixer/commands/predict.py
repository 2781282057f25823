"""`rankmixer predict`: score a JSON request with a served model (gRPC or REST) or a SavedModel."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score a JSON request against TF Serving (gRPC / REST) or a local SavedModel",
        description=(
            "INPUT is a JSON file: {feature: [values]} (columnar), a list of instance objects, "
            "a REST body ({'inputs': ...} or {'instances': ...}) or JSON lines. The request is "
            "validated against the model's signature metadata before it is sent. Prints "
            "{output: [[p], ...]} as JSON."
        ),
    )
    parser.add_argument("input", help="JSON request file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving gRPC endpoint (port 8500)")
    where.add_argument("--rest", metavar="URL", help="TF Serving REST endpoint (port 8501)")
    where.add_argument("--saved-model", metavar="DIR", help="a SavedModel version directory")
    parser.add_argument("--model-name", default="rankmixer")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument(
        "--rest-format", default="inputs", choices=["inputs", "instances"], help="REST body form"
    )
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--no-validate", action="store_true", help="send without checking")
    parser.set_defaults(func=run)


def make_client(args: argparse.Namespace):
    from keras_rankmixer import serving

    validate = not args.no_validate
    if args.grpc:
        return serving.GrpcClient(
            args.grpc, args.model_name, args.version, args.signature, args.timeout, validate
        )
    if args.rest:
        return serving.RestClient(
            args.rest,
            args.model_name,
            args.version,
            args.signature,
            args.rest_format,
            args.timeout,
            validate,
        )
    return serving.LocalClient(args.saved_model, args.signature, validate)


def run(args: argparse.Namespace) -> int:
    from keras_rankmixer.features import FeatureError
    from keras_rankmixer.serving import ServingError, load_request

    try:
        request = load_request(args.input)
        outputs = make_client(args).predict(request)
    except (FeatureError, ServingError) as e:
        print(f"[predict] error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(outputs.items())}))
    return 0

"""`scantune predict`: classify scans through the inference API and print the results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.commands.client import ApiClient, ApiError, add_connection_args, guarded

DEFAULT_URL = "http://127.0.0.1:8001"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("predict", help="classify scans with a served model")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PNG, JPEG or DICOM")
    parser.add_argument("--model", required=True, help="model name")
    selector = parser.add_mutually_exclusive_group()
    selector.add_argument("--version", type=int, help="an explicit version")
    selector.add_argument("--alias", help="an alias (default: the service's, production)")
    add_connection_args(
        parser,
        service="inference",
        url_env="SCANTUNE_INFERENCE_URL",
        default_url=DEFAULT_URL,
        timeout=60.0,
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON response")
    parser.set_defaults(func=guarded(run_predict))


def run_predict(args: argparse.Namespace, api: ApiClient) -> int:
    params: dict[str, Any] = {}
    if args.version is not None:
        params["version"] = args.version
    if args.alias:
        params["alias"] = args.alias
    try:
        files = [("file", (path.name, path.read_bytes())) for path in args.files]
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        body = api.json("POST", f"/v1/models/{args.model}:predict", params=params, files=files)
    except ApiError as exc:
        if exc.status == 404 and "no model named" in str(exc):
            raise ApiError(f"{exc}{served_models(api, args.model)}", 404, exc.problem) from None
        raise
    print(json.dumps(body, indent=2) if args.json else format_table(body))
    return 0


def format_table(body: dict[str, Any]) -> str:
    """One line per scan: file, label, the label's probability, then every class's."""
    model = body["model"]
    classes = list(body["predictions"][0]["probabilities"]) if body["predictions"] else []
    width = max([len("file"), *(len(p["file"]) for p in body["predictions"])])
    header = f"{'file':<{width}}  {'label':<12} " + " ".join(f"{c[:12]:>12}" for c in classes)
    lines = [f"model {model['name']} version {model['version']} ({model['sha256'][:12]})", header]
    for pred in body["predictions"]:
        probs = " ".join(f"{pred['probabilities'][c]:>12.4f}" for c in classes)
        lines.append(f"{pred['file']:<{width}}  {pred['label']:<12} {probs}")
    return "\n".join(lines)


def served_models(api: ApiClient, name: str) -> str:
    """The models the inference service has, the closest to `name` first, for a 404."""
    import difflib

    try:
        names = [m["name"] for m in api.json("GET", "/v1/models")["models"]]
    except (ApiError, KeyError, TypeError):
        return ""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"\n  ({guess}models there are: {', '.join(names) or 'none'})"

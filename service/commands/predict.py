"""`scantune predict`: classify scans through the inference API and print the results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.commands.client import ApiClient, ApiError, add_connection_args, guarded
from service.hospital.hl7v2 import HL7_MEDIA_TYPE
from service.hospital.multipart import MULTIPART_DICOM

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
    parser.add_argument(
        "--accept",
        choices=sorted(ACCEPTS),
        help="answer in a hospital format: a DICOM SR (application/dicom, DICOM scans of one"
        " study), a FHIR R4 Bundle (application/fhir+json) or an HL7 v2 ORU^R01"
        " (x-application/hl7-v2+er7, DICOM scans of one study); default the JSON answer",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="write the answer to this file instead of stdout"
    )
    parser.add_argument(
        "--explain", action="store_true",
        help="with each DICOM scan's attention map: in the JSON answer a heatmap; in an SR-based"
        " answer (--dicom-dir, HL7) or a FHIR Bundle, the scan under the map",
    )  # fmt: skip
    parser.add_argument(
        "--dicom-dir", type=Path, metavar="DIR",
        help="write the answer's DICOM files into this new folder: report.dcm (the SR) and,"
        " with --explain, map-001.dcm... (each scan under its attention map, a Secondary"
        " Capture); DICOM scans of one study",
    )  # fmt: skip
    parser.add_argument(
        "--outcomes-sheet", type=Path, metavar="FILE.csv",
        help="also write a sheet for reporting outcomes: one row per scan (file, a reference,"
        " an empty label to fill in, each class's probability), for `scantune models outcomes"
        " NAME VERSION --report FILE.csv` once the diagnoses are confirmed",
    )  # fmt: skip
    parser.set_defaults(func=guarded(run_predict))


ACCEPTS = {
    "application/json": False,
    "application/dicom": True,
    "application/fhir+json": False,
    HL7_MEDIA_TYPE: False,
}
"""The media types `--accept` offers, and whether the answer is binary."""


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
    if args.outcomes_sheet is not None and args.accept not in (None, "application/json"):
        print("--outcomes-sheet is made from the JSON answer: drop --accept", file=sys.stderr)
        return 2
    if args.explain:
        params["explain"] = "true"
    if args.dicom_dir is not None:
        if args.accept or args.output or args.outcomes_sheet:
            print("--dicom-dir is the answer: drop --accept, --output and --outcomes-sheet",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.dicom_dir.exists():
            print(f"{args.dicom_dir} exists: name a new folder", file=sys.stderr)
            return 2
        args.accept = MULTIPART_DICOM
    binary = ACCEPTS.get(args.accept or "", False)
    if binary and args.output is None and sys.stdout.isatty():
        print(f"{args.accept} is binary: pass --output FILE (or redirect)", file=sys.stderr)
        return 2
    headers = {"Accept": args.accept} if args.accept else {}
    path = f"/v1/models/{args.model}:predict"
    try:
        response = api.request("POST", path, params=params, files=files, headers=headers)
    except ApiError as exc:
        if exc.status == 404 and "no model named" in str(exc):
            raise ApiError(f"{exc}{served_models(api, args.model)}", 404, exc.problem) from None
        raise
    if args.dicom_dir is not None:
        names = write_parts(args.dicom_dir, response.content, response.headers["Content-Type"])
        print(f"wrote {', '.join(names)} in {args.dicom_dir}", file=sys.stderr)
        return 0
    if args.accept and args.accept != "application/json":
        answer = response.content
        if args.accept == HL7_MEDIA_TYPE and args.output is None and sys.stdout.isatty():
            answer = answer.replace(b"\r", b"\n")  # segments end with CR: one line each
    elif args.json or args.accept:
        answer = (json.dumps(response.json(), indent=2) + "\n").encode()
    else:
        answer = (format_table(response.json()) + "\n").encode()
    if args.outcomes_sheet is not None:
        body = response.json()
        write_whole(args.outcomes_sheet, outcomes_sheet(body))
        model = body["model"]
        print(f"wrote {args.outcomes_sheet}: fill its label column, then: scantune models"
              f" outcomes {model['name']} {model['version']} --report {args.outcomes_sheet}",
              file=sys.stderr)  # fmt: skip
    if args.output is not None:
        write_whole(args.output, answer)
    elif binary or hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(answer)
        sys.stdout.buffer.flush()
    else:  # a text-only stdout (an embedding program's)
        sys.stdout.write(answer.decode())
    return 0


def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it, so a failure leaves no half
    file (and an existing one untouched)."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parts(folder: Path, body: bytes, content_type: str) -> list[str]:
    """The DICOM files of a multipart answer, written into a temporary folder beside `folder`
    then renamed to it, so a failure leaves no half folder: report.dcm, map-001.dcm, ..."""
    import shutil
    import tempfile

    from service.hospital.multipart import dicom_parts

    parts = dicom_parts(content_type, body)
    names = ["report.dcm", *(f"map-{i:03d}.dcm" for i in range(1, len(parts)))]
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for name, data in zip(names, parts, strict=True):
            (tmp / name).write_bytes(data)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def outcomes_sheet(body: dict[str, Any]) -> bytes:
    """The CSV `scantune models outcomes --report` reads: the scan's file name (kept on this
    machine, never sent), a reference naming nobody (the answer's request id and the scan's
    place in it), the label left empty for the confirmed diagnosis, each class's probability,
    and the answer's signature when the service signs its predictions."""
    import csv
    import io

    classes = list(body["predictions"][0]["probabilities"]) if body["predictions"] else []
    signed = any("signature" in p for p in body["predictions"])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "reference", "label", *classes, *(["signature"] * signed)])
    for i, pred in enumerate(body["predictions"]):
        probabilities = [repr(float(pred["probabilities"][c])) for c in classes]
        signature = [pred.get("signature", "")] if signed else []
        writer.writerow([pred["file"], f"{body['request_id']}/{i}", "", *probabilities,
                         *signature])  # fmt: skip
    return out.getvalue().encode()


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

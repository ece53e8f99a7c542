"""What attention maps cost: the inference service's CPU per predict of one DICOM scan with
`explain=true` (the class activation map as a PNG at the scan's size) against without, and the
DICOM node's CPU to make the map it sends to a PACS from that answer (`build_maps`: decode
the scan, blend, the Secondary Capture, the spool's zip), and to turn that map into what an
EHR (FHIR Media, PNG) or an engine (HL7 ED, JPEG) gets, with its base64 size, at two scan
sizes.

Not a test. The app runs in-process as `bench/answer_formats.py` runs it (one sync worker of
the per-core layout, the bench's 512x512 chest X-ray as a DX instance; the 2048x2048 one is
the same scan upsampled, a radiograph's usual size). Paths are interleaved in rounds; each
figure is the median over rounds of CPU time per scan (`time.process_time`).

    python bench/attention_maps.py --rounds 8 --requests 5
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_formats import scan_dicom
from bench.harness import CONTENT_TYPE, MODEL, multipart_body
from bench.overhead import call, interleaved

SIZES = (512, 2048)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="scantune-maps-") as tmp:
        paths, sizes = setup(Path(tmp))
        report(interleaved(paths, args.rounds, args.requests, warm=2), sizes)
    return 0


def setup(work: Path) -> tuple[dict[str, Callable[[], object]], dict[str, int]]:
    from pydicom import dcmread

    from bench.overhead import prepare, service_app
    from service.dicom_node.classify import Classification
    from service.dicom_node.maps import build_maps
    from service.hospital.attention_map import encoded_map

    prepare(work)  # the model, published, and the service's environment
    app = service_app()
    predict = f"/v1/models/{MODEL}:predict"
    paths: dict[str, Callable[[], object]] = {}
    map_bytes: dict[str, int] = {}
    for size in SIZES:
        scan = scan_of(size)
        body = multipart_body(scan, "scan.dcm", "application/dicom")
        answer = answer_of(app, predict, body)
        header = dcmread(io.BytesIO(scan), stop_before_pixels=True)
        found = Classification(answer["predictions"], answer["model"], card_of(app))
        made = build_maps([scan], [header], found, None, "not for diagnostic use")
        map_bytes[f"{size} spool"] = len(made or b"")
        image = sc_of(made)
        for kind in ("PNG", "JPEG"):
            map_bytes[f"{size} {kind}"] = len(base64.b64encode(encoded_map(image, kind)))

        def run(query: str, body: bytes = body) -> Callable[[], None]:
            def once() -> None:
                status = call(app, "POST", predict, body, {"QUERY_STRING": query})
                if status != 200:
                    raise RuntimeError(f"status {status}")

            return once

        def node_map(
            scan: bytes = scan, header: Any = header, found: Classification = found
        ) -> None:
            build_maps([scan], [header], found, None, "not for diagnostic use")

        paths[f"{size} predict"] = run("")
        paths[f"{size} predict explain"] = run("explain=true")
        paths[f"{size} node map"] = node_map
        for kind in ("PNG", "JPEG"):
            paths[f"{size} {kind}"] = partial(encoded_map, image, kind)
    return paths, map_bytes


def sc_of(made: bytes | None) -> Any:
    """The one Secondary Capture in `build_maps`' zip."""
    import zipfile

    from pydicom import dcmread

    if made is None:
        raise RuntimeError("no map made")
    with zipfile.ZipFile(io.BytesIO(made)) as bundle:
        return dcmread(io.BytesIO(bundle.read(bundle.namelist()[0])))


def scan_of(size: int) -> bytes:
    """The bench's DX instance, its pixels resized to `size` x `size`."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(scan_dicom()))
    pixels = Image.fromarray(ds.pixel_array).resize((size, size), Image.Resampling.BILINEAR)
    ds.Rows = ds.Columns = size
    ds.PixelData = np.asarray(pixels, dtype=np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def answer_of(app: Any, path: str, body: bytes) -> dict[str, Any]:
    """One explained predict's JSON, through the app's test client."""
    answer = app.test_client().post(f"{path}?explain=true", data=body, content_type=CONTENT_TYPE)
    if answer.status_code != 200:
        raise RuntimeError(f"explain: status {answer.status_code}")
    found: dict[str, Any] = json.loads(answer.data)
    return found


def card_of(app: Any) -> dict[str, Any]:
    answer = app.test_client().get(f"/v1/models/{MODEL}")
    card: dict[str, Any] = json.loads(answer.data)["serving"]["card"]
    return card


def report(per_scan: dict[str, list[float]], map_bytes: dict[str, int]) -> None:
    rounds = len(next(iter(per_scan.values())))
    print(f"CPU per scan, in-process, median of {rounds} rounds:")
    for size in SIZES:
        plain = per_scan[f"{size} predict"]
        explained = per_scan[f"{size} predict explain"]
        diffs = [a - b for a, b in zip(explained, plain, strict=True)]
        node_map = statistics.median(per_scan[f"{size} node map"])
        print(
            f"  {size}x{size}: predict {statistics.median(plain):.1f} ms; explain=true"
            f" {statistics.median(diffs):+.1f} ms (rounds {min(diffs):+.1f} to"
            f" {max(diffs):+.1f}); the node's map {node_map:.1f} ms,"
            f" {map_bytes[f'{size} spool'] / 1e6:.2f} MB in the spool"
        )
        for kind, whom in (("PNG", "FHIR Media"), ("JPEG", "HL7 ED")):
            spent = statistics.median(per_scan[f"{size} {kind}"])
            print(
                f"    as {whom} ({kind}): {spent:.1f} ms,"
                f" {map_bytes[f'{size} {kind}'] / 1e3:.0f} KB of base64"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5, help="per path and round")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())

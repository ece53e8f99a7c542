"""What each answer format costs: CPU per predict of one DICOM scan, by `Accept`.

Not a test. A hospital system asks for its own format; the service builds it from the same
prediction: JSON, the DICOM SR (highdicom), the FHIR R4 Bundle (fhir.resources, validated as
it is built) or the HL7 v2 ORU^R01 (hl7apy's strict 2.5.1 model, from the SR), and with
`explain=true` each with the scan's attention map (a Secondary Capture in the multipart DICOM
answer, a PNG Media in FHIR, a JPEG ED in HL7), set against the JSON answer with its heatmap.
This calls the
inference app in-process, set up as `bench/overhead.py` sets it up (one sync worker of the
per-core layout, a single-threaded onnxruntime session), with the same 512x512 chest X-ray
as a DICOM file carrying a patient, a study and an accession, so every format has its whole
content. Paths are interleaved in rounds; each figure is the median over rounds of CPU time
per request (`time.process_time`), and what it costs beyond the JSON answer of the same scan.

    python bench/answer_formats.py --rounds 12 --requests 20
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import IMAGE, MODEL, multipart_body
from bench.overhead import call, interleaved

MULTIPART = 'multipart/related; type="application/dicom"'
FORMATS = {  # name: (Accept, query, the path it is compared with)
    "JSON": ("application/json", "", "JSON"),
    "DICOM SR": ("application/dicom", "", "JSON"),
    "FHIR R4": ("application/fhir+json", "", "JSON"),
    "HL7 v2": ("x-application/hl7-v2+er7", "", "JSON"),
    # explain=true: the class activation map; in the hospital formats, the scan under it
    "JSON, explain": ("application/json", "explain=true", "JSON"),
    "DICOM SR + map (multipart)": (MULTIPART, "explain=true", "JSON, explain"),
    "FHIR R4 + map (Media PNG)": ("application/fhir+json", "explain=true", "JSON, explain"),
    "HL7 v2 + map (ED JPEG)": ("x-application/hl7-v2+er7", "explain=true", "JSON, explain"),
}


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="scantune-formats-") as tmp:
        report(interleaved(setup(Path(tmp)), args.rounds, args.requests, warm=5))
    return 0


def setup(work: Path) -> dict[str, Callable[[], None]]:
    from bench.overhead import prepare, service_app

    prepare(work)  # the model, published, and the service's environment
    app = service_app()
    body = multipart_body(scan_dicom(), "scan.dcm", "application/dicom")
    predict = f"/v1/models/{MODEL}:predict"

    def path(accept: str, query: str) -> Callable[[], None]:
        def run() -> None:
            headers = {"HTTP_ACCEPT": accept, "QUERY_STRING": query}
            status = call(app, "POST", predict, body, headers)
            if status != 200:
                raise RuntimeError(f"{accept}?{query}: status {status}")

        return run

    return {name: path(accept, query) for name, (accept, query, _) in FORMATS.items()}


def scan_dicom() -> bytes:
    """The benchmark's PNG as a DX instance with a patient, a study and an accession (made-up
    values: the bench sends no real patient data)."""
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    pixels = np.asarray(Image.open(IMAGE).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Case", "B1", "", "O"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC1", "1", ""
    ds.StudyDate, ds.StudyTime, ds.Modality = "20261206", "120000", "DX"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def report(per_request: dict[str, Any]) -> None:
    rounds = len(per_request["JSON"])
    print(f"CPU per predict of one DICOM scan, in-process, median of {rounds} rounds:")
    for name, (_, _, base) in FORMATS.items():
        diffs = [a - b for a, b in zip(per_request[name], per_request[base], strict=True)]
        beyond = "" if name == base else (
            f", beyond {base} {statistics.median(diffs):+.2f} ms"
            f" (rounds {min(diffs):+.2f} to {max(diffs):+.2f})"
        )  # fmt: skip
        print(f"  {name}: {statistics.median(per_request[name]):.2f} ms{beyond}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=20, help="per format and round")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())

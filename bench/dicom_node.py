"""The DICOM node under load: 200 instances over 4 concurrent associations, and the time from
each study's last instance to its SR in the PACS.

Real parts on loopback: Orthanc receives the results, the inference service (gunicorn)
serves EfficientNet-Lite0 at 224 px (bench/harness.py's model), the node runs under
`scantune serve dicom`, and four pynetdicom modalities each send one 50-instance study at
once. Prints a JSON summary: every instance acknowledged and referenced by an SR (none lost),
and the last-instance-to-SR latency, whose floor is the quiet period.

    python bench/dicom_node.py [--instances 200] [--associations 4] [--quiet-s 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import MODEL, build_model, publish
from service.auth import hash_key
from tests.conftest import free_port
from tests.dicom_node.parts import (
    MODALITY_AE,
    PACS_AE,
    Gunicorn,
    Orthanc,
    make_study,
    send,
    wait_until,
)

KEY = "bench-node-key"


def start_parts(root: Path, quiet_s: float) -> tuple[Gunicorn, Orthanc, Gunicorn]:
    model_dir, card = build_model(root)
    uri = publish(model_dir, card, root / "artifacts")
    keys = [{"name": "node", "sha256": hash_key(KEY), "scopes": ["predict", "read"]}]
    inference = Gunicorn(
        "inference",
        {"SCANTUNE_ARTIFACT_URI": uri, "SCANTUNE_API_KEYS": json.dumps(keys),
         "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL])},
        root / "inference",
        workers=2,
    ).start()  # fmt: skip
    node_port = free_port()
    orthanc = Orthanc(root / "orthanc", node_port).start()
    settings = {
        "DATABASE_URL": f"sqlite:///{root / 'node.db'}",
        "DICOM_SPOOL_DIR": str(root / "spool"),
        "DICOM_PORT": str(node_port),
        "DICOM_ALLOWED_CALLERS": json.dumps([{"ae_title": MODALITY_AE, "host": "127.0.0.1"}]),
        "DICOM_ROUTES": json.dumps([{"model": MODEL, "alias": "production"}]),
        "DICOM_DESTINATIONS": json.dumps(
            [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}]
        ),
        "DICOM_SERIES_QUIET_S": str(quiet_s),
        "INFERENCE_URL": inference.url,
        "DICOM_INFERENCE_API_KEY": KEY,
        "LOG_LEVEL": "WARNING",
    }
    node = Gunicorn("dicom", {f"SCANTUNE_{k}": v for k, v in settings.items()}, root / "node")
    node.port_dicom = node_port
    return inference, orthanc, node.start()


def run(instances: int, associations: int, quiet_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        inference, orthanc, node = start_parts(Path(tmp), quiet_s)
        try:
            result = measure(node, orthanc, instances, associations, quiet_s)
            result["inference_alone_seconds"] = inference_alone(inference, instances, associations)
            return result
        finally:
            node.stop()
            orthanc.stop()
            inference.stop()


def measure(
    node: Gunicorn, orthanc: Orthanc, instances: int, associations: int, quiet_s: float
) -> dict[str, object]:
    studies = [make_study(instances // associations) for _ in range(associations)]
    last_ack: dict[str, float] = {}
    statuses: list[int] = []

    def modality(study: list) -> None:  # type: ignore[type-arg]
        statuses.extend(send(node.port_dicom, study))
        last_ack[study[0].StudyInstanceUID] = time.monotonic()

    started = time.monotonic()
    threads = [threading.Thread(target=modality, args=(s,)) for s in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent_s = time.monotonic() - started
    latency, referenced = {}, 0
    pending = {s[0].StudyInstanceUID: s for s in studies}
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        for uid in list(pending):
            reports = orthanc.reports(uid)
            if reports:
                latency[uid] = time.monotonic() - last_ack[uid]
                refs = {
                    r.ReferencedSOPInstanceUID
                    for st in reports[0].CurrentRequestedProcedureEvidenceSequence
                    for se in st.ReferencedSeriesSequence
                    for r in se.ReferencedSOPSequence
                }
                referenced += len(refs & {ds.SOPInstanceUID for ds in pending.pop(uid)})
        time.sleep(0.05)
    wait_until(lambda: node.metric("scantune_dicom_queue_depth") == 0, 30, "queue empties")
    values = sorted(latency.values())
    return {
        "instances": instances,
        "associations": associations,
        "quiet_s": quiet_s,
        "acknowledged_success": statuses.count(0),
        "stored_by_node": node.metric("scantune_dicom_instances_received_total", outcome="stored"),
        "referenced_by_srs": referenced,
        "studies_without_sr": len(pending),
        "send_seconds": round(sent_s, 2),
        "instances_per_second": round(instances / sent_s, 1),
        "last_instance_to_sr_seconds": {
            "min": round(values[0], 2) if values else None,
            "median": round(statistics.median(values), 2) if values else None,
            "max": round(values[-1], 2) if values else None,
        },
        "delivery_failures": node.metric("scantune_dicom_delivery_failures_total"),
    }


def inference_alone(inference: Gunicorn, instances: int, associations: int) -> dict[str, float]:
    """The same studies classified by calling inference directly, two at a time as the node
    does (SCANTUNE_DICOM_CLASSIFY_CONCURRENCY): the part of the latency that is inference."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from service.dicom_node.classify import InferenceClient

    def encoded(ds: object) -> bytes:
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)  # type: ignore[attr-defined]
        return out.getvalue()

    studies = [[encoded(ds) for ds in make_study(instances // associations)]
               for _ in range(associations)]  # fmt: skip

    def classify(files: list[bytes]) -> float:
        started = time.monotonic()
        InferenceClient(inference.url, KEY, 120).classify(MODEL, "production", files)
        return time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        times = sorted(pool.map(classify, studies))
    return {"min": round(times[0], 2), "median": round(statistics.median(times), 2),
            "max": round(times[-1], 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--quiet-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = run(args.instances, args.associations, args.quiet_s)
    print(json.dumps(result, indent=2))
    lost = args.instances - int(result["referenced_by_srs"])  # type: ignore[call-overload]
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

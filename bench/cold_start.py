"""Cold start and memory of the inference service with and without the master's imports.

Not a test. Under `scantune serve inference`, gunicorn's master imports the web side (and
boto3 for an S3 store) before it forks (`service.inference.gunicorn_conf`); with
`--config python:service.cores` alone, every worker imports them itself. This starts the
service's own gunicorn command both ways, interleaved, from a local artifact folder and from
S3 (moto's server on loopback), and prints the time from process start to /readyz 200 with
the model preloaded. Then, from the local folder, after 3 s of load at concurrency 8, the
memory of the master and of each worker from /proc/PID/smaps_rollup: RSS, PSS (shared pages
split between the processes that share them) and private dirty pages. Last, in one worker
of the default configuration, the first requests after /readyz against the ones after them:
a 512x512 PNG, then a DICOM (the first DICOM scan imports pydicom).

    python bench/cold_start.py --starts 15
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, servers

CONFIGS = {
    "workers import (service.cores only)": "python:service.cores",
    "master imports first (default)": "python:service.inference.gunicorn_conf",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=15, help="per configuration and store")
    options = parser.parse_args()
    args = servers.service_options([])  # the service's defaults
    body = harness.multipart_body(harness.IMAGE.read_bytes())
    with tempfile.TemporaryDirectory(prefix="scantune-cold-") as tmp:
        work = Path(tmp)
        model_dir, card = harness.build_model(work)
        local = harness.publish(model_dir, card, work / "artifacts")
        with servers.s3_store(model_dir, card) as (s3_uri, s3_env):
            stores = {"local folder": (local, {}), "S3 on moto": (s3_uri, s3_env)}
            for store, (uri, env) in stores.items():
                seconds: dict[str, list[float]] = {label: [] for label in CONFIGS}
                for i in range(options.starts):
                    for label, config in CONFIGS.items():
                        metrics = harness.mkdir(work / f"metrics-{store[:5]}-{i}-{config[7:]}")
                        server = servers.Server(uri, args, metrics, "gunicorn", env, config)
                        try:
                            seconds[label].append(server.wait_ready())
                        finally:
                            server.stop()
                print(f"cold start to ready, {store}, {options.starts} starts each:")
                for label, values in seconds.items():
                    print(f"  {label}: median {statistics.median(values):.3f} s "
                          f"(range {min(values):.3f}-{max(values):.3f})")  # fmt: skip
        print("memory after 3 s at c=8, local folder (MB):")
        for label, config in CONFIGS.items():
            server = servers.Server(local, args, harness.mkdir(work / f"metrics-mem-{config[7:]}"),
                                  "gunicorn", None, config)  # fmt: skip
            try:
                server.wait_ready()
                harness.load(server.port, body, 8, seconds=3, client=args.client)
                master = smaps(server.proc.pid)
                workers = [smaps(pid) for pid in server.worker_pids()]
            finally:
                server.stop()
            total = master["Pss"] + sum(w["Pss"] for w in workers)
            print(f"  {label}: master {fmt(master)}; workers "
                  f"{'; '.join(fmt(w) for w in workers)}; PSS of all {total:.0f}")  # fmt: skip
        first_requests(local, work)
    return 0


def first_requests(uri: str, work: Path, starts: int = 3, each: int = 4) -> None:
    """One worker, the default configuration: the first scans after /readyz, then the rest."""
    one = servers.service_options(["--workers", "1"])
    scans = {
        "PNG 512x512": harness.multipart_body(harness.IMAGE.read_bytes()),
        "DICOM": harness.multipart_body((harness.IMAGE.parent / "normal_0_mono1.dcm").read_bytes(),
                                      "scan.dcm", "application/dicom"),
    }  # fmt: skip
    print(f"first requests after ready, one worker, {starts} starts (ms, in order):")
    for i in range(starts):
        server = servers.Server(uri, one, harness.mkdir(work / f"metrics-first-{i}"), "gunicorn")
        try:
            server.wait_ready()
            time.sleep(1.0)  # the all-core session is built after /readyz
            times = {label: [post(server.port, body) for _ in range(each)]
                     for label, body in scans.items()}  # fmt: skip
        finally:
            server.stop()
        print("  " + "; ".join(f"{label} {' '.join(f'{t:.1f}' for t in values)}"
                               for label, values in times.items()))  # fmt: skip


def post(port: int, body: bytes) -> float:
    """Milliseconds for one predict request, which must succeed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        start = time.perf_counter()
        conn.request("POST", f"/v1/models/{harness.MODEL}:predict", body,
                     {"Content-Type": harness.CONTENT_TYPE})  # fmt: skip
        response = conn.getresponse()
        response.read()
        elapsed = (time.perf_counter() - start) * 1000
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"predict answered {response.status}")
    return elapsed


def smaps(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0]) / 1024
    return fields


def fmt(fields: dict[str, float]) -> str:
    return (f"RSS {fields['Rss']:.0f} PSS {fields['Pss']:.0f} "
            f"private dirty {fields['Private_Dirty']:.0f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

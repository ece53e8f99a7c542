"""The benchmarks' harness: the benchmark model, the in-process limit, load generation and
process figures (CPU time, RSS). Starting the service and the reference classifiers under
gunicorn is `bench/servers.py`; the scripts (`bench/inference.py`, `compare.py`,
`cold_start.py`, `overhead.py`, `request_memory.py`, `arena.py`) use both.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODEL = "bench-lite0"
IMAGE = REPO / "tests" / "data" / "images" / "big_pneumonia_1.png"
BOUNDARY = "scantunebench"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


# --- the model ----------------------------------------------------------------------------


def build_model(workdir: Path) -> tuple[Path, Any]:
    """Export EfficientNet-Lite0 (224 px, 1 channel) through models.export; returns (dir, card)."""
    import hashlib

    import torch

    from models.backbones import create_backbone, get_info
    from models.card import Calibration, DatasetInfo, InputSpec, ModelCard, Parity, TrainingInfo
    from models.export import export_onnx
    from models.network import Classifier, build_head
    from models.scans import PREPROCESSING_VERSION

    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", in_chans=1, cache_dir=workdir / "cache")
    model = Classifier(backbone, build_head(backbone.num_features, 2, [], 0.2)).eval()
    out = workdir / "model"
    export_onnx(model, out / "model.onnx", size=224, channels=1, temperature=1.0)
    mean, std = get_info("efficientnet_lite0").input_stats(1)
    card = ModelCard(
        name=MODEL,
        classes=("normal", "pneumonia"),
        input=InputSpec(
            size=224, channels=1, mean=mean, std=std, preprocessing_version=PREPROCESSING_VERSION
        ),
        base_model="efficientnet_lite0",
        dataset=DatasetInfo(uri="none", format="npz", sha256="0" * 64),
        calibration=Calibration(temperature=1.0, applied_in_graph=True),
        parity=Parity(max_abs_diff=0.0, images=0, tolerance=1e-4),
        training=TrainingInfo(
            seconds=0, device="cpu", hardware="bench", epochs_run=0, best_epoch=0, seed=0
        ),
        onnx_sha256=hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest(),
        lineage={"note": "ImageNet-pretrained backbone, untrained head: for speed figures only"},
    )
    return out, card


def publish(model_dir: Path, card: Any, artifacts: Path | str,
            endpoint_url: str | None = None) -> str:  # fmt: skip
    """Publish the model as version 1 with `production` on it, to a local folder or a store
    URI; returns the store's URI."""
    from service.registry import Registry
    from service.storage import open_store

    uri = artifacts if isinstance(artifacts, str) else f"file://{artifacts}"
    registry = Registry(open_store(uri, endpoint_url=endpoint_url))
    registry.publish(MODEL, 1, model_dir, card)
    registry.set_alias(MODEL, "production", 1, actor="bench")
    return uri


def multipart_body(
    scan: bytes, filename: str = "scan.png", content_type: str = "image/png"
) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + scan + f"\r\n--{BOUNDARY}--\r\n".encode()


# --- the in-process limit -----------------------------------------------------------------


def _classify_loop(onnx: bytes, card_json: str, png: bytes, seconds: float, threads: int,
                   queue: Any) -> None:  # fmt: skip
    from bench import reference_model
    from models import scans
    from models.card import ModelCard

    card = ModelCard.from_json(card_json)
    session = reference_model.session(onnx, threads)
    latencies = []

    def once() -> None:
        batch = scans.to_batch([scans.decode(png, "bench.png")], card.input)
        session.run(None, {"image": batch})

    for _ in range(5):
        once()
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - started)
    queue.put((latencies, time.process_time() - cpu))


def in_process(onnx: bytes, card: Any, png: bytes, seconds: float, procs: int,
               threads: int) -> dict[str, float]:  # fmt: skip
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_classify_loop, args=(onnx, card.to_json(), png, seconds, threads, queue)
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    outcomes = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    results = [latencies for latencies, _ in outcomes]
    all_lat = [x for r in results for x in r]
    return {
        "rps": sum(len(r) / sum(r) for r in results),
        "p50_ms": statistics.median(all_lat) * 1000,
        "p99_ms": percentile(all_lat, 99) * 1000,
        "cpu_ms": sum(cpu for _, cpu in outcomes) * 1000 / len(all_lat),
    }


# --- load generation and process figures --------------------------------------------------


WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "failures": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f}\\n',
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def load(port: int, body: bytes, concurrency: int, *, seconds: float | None = None,
         requests: int | None = None, client: str = "wrk",
         content_type: str = CONTENT_TYPE) -> dict[str, float]:  # fmt: skip
    """Closed-loop load on keep-alive connections for a fixed time (wrk) or, with the Python
    client, optionally a fixed request count."""
    if client == "python":
        return load_python(port, body, concurrency, seconds=seconds, requests=requests,
                           content_type=content_type)  # fmt: skip
    if seconds is None:
        raise ValueError("wrk runs for a time, not a request count")
    with tempfile.TemporaryDirectory(prefix="scantune-wrk-") as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "body"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_CONTENT_TYPE": content_type}
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout",
             "60s", "-s", str(script), f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    lines = [x for x in out.stdout.splitlines() if x.startswith("BENCH ")]
    if not lines:
        raise RuntimeError(f"wrk gave no figures:\n{out.stdout}\n{out.stderr}")
    figures = json.loads(lines[0][len("BENCH ") :])
    return {
        "concurrency": concurrency,
        "requests": figures["requests"],
        "failures": figures["failures"],
        "rps": figures["requests"] / figures["seconds"],
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
    }


def load_python(port: int, body: bytes, concurrency: int, *, seconds: float | None = None,
                requests: int | None = None,
                content_type: str = CONTENT_TYPE) -> dict[str, float]:  # fmt: skip
    """The fallback client: Python threads, one keep-alive connection each."""
    path = f"/v1/models/{MODEL}:predict"
    headers = {"Content-Type": content_type}
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + (seconds or 1e9)
    remaining = [requests if requests is not None else 1 << 62]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures[0],
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # exited between listing and reading
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path

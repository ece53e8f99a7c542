"""Inference benchmark: raw onnxruntime in-process (the limit) versus the service over HTTP.

Not a test. One model (EfficientNet-Lite0 at 224 px, 1 channel, exported by the trainer's
exporter: ImageNet-pretrained backbone, untrained 2-class head) and the same 512x512 PNG for
every request. Measures:

- the limit: decode + preprocess + onnxruntime run in as many single-threaded processes as
  there are cores, summed (req/s);
- an in-process single-image run using all cores (p50), the reference for concurrency 1;
- the service under gunicorn over loopback HTTP at concurrency 1, 8, 32: req/s, p50, p99,
  and its CPU time per request at each concurrency (all gunicorn processes, from /proc);
- two references at concurrency 8, so every run shows what a framework and gunicorn alone
  reach: the one the issue names, a minimal Flask classifier (`bench/minimal_app.py`, one sync
  worker per core), and a framework-free one, a bare WSGI classifier (`bench/bare_app.py`,
  in the service's layout, one sync worker per core; `bench/compare.py` measures both in
  other layouts);
- cold start (process start to /readyz 200 with the model preloaded), from a local artifact
  folder and, with --s3-cold-starts, from S3 (moto's server on loopback, which shares the
  cores and serves the 14 MB model slower than S3 would);
- resident memory per worker, sampled over --memory-requests requests (flat or not).

The load generator is wrk (a C client in its own process, so the service's share of the
cores is not spent on the client; the limit has no client at all); without wrk on PATH, or
with --client python, closed-loop Python threads on keep-alive connections instead.

The machine's speed drifts by tens of percent over minutes (shared virtual CPUs), so each
figure is compared only with its reference measured right before it: every block runs the
limit then the service at concurrency 8 and 32, then the single-image run then the service at
concurrency 1, for --seconds each; ratios and differences are per block, then the median.

    python bench/inference.py --blocks 6 --seconds 6 --memory-requests 10000 --out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODEL = "bench-lite0"
IMAGE = REPO / "tests" / "data" / "images" / "big_pneumonia_1.png"
BOUNDARY = "scantunebench"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
REFERENCES = {  # the reference classifiers run beside the service, by label
    "minimal": "minimal Flask classifier",
    "bare": "bare WSGI classifier",
}


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


# --- the service over HTTP ----------------------------------------------------------------


def multipart_body(
    scan: bytes, filename: str = "scan.png", content_type: str = "image/png"
) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + scan + f"\r\n--{BOUNDARY}--\r\n".encode()


class Server:
    """The service under gunicorn: started directly, or (entry "scantune") the way the image
    and the chart start it, `scantune serve inference`, which execs the same gunicorn."""

    def __init__(self, uri: str, args: argparse.Namespace, metrics_dir: Path,
                 entry: str = "gunicorn", extra_env: dict[str, str] | None = None,
                 config: str | None = None) -> None:  # fmt: skip
        self.port = _free_port()
        env = {
            **os.environ,
            **(extra_env or {}),
            "SCANTUNE_ARTIFACT_URI": uri,
            "SCANTUNE_AUTH_DISABLED": "true",
            "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL]),
            "SCANTUNE_ORT_INTRA_OP_THREADS": str(args.intra_op),
            "SCANTUNE_MAX_BATCH_SIZE": str(args.max_batch_size),
            "SCANTUNE_BATCH_RUNNERS": str(args.runners),
            "SCANTUNE_ORT_CPU_MEM_ARENA": str(args.arena).lower(),
            "SCANTUNE_MAX_BATCH_WAIT_MS": str(args.max_batch_wait_ms),
            "SCANTUNE_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        layout = {"workers": args.workers, "threads": args.threads,
                  "worker_class": args.worker_class}  # fmt: skip
        if entry == "scantune":  # the image's and the chart's command
            cmd = [str(Path(sys.executable).with_name("scantune")), "serve", "inference",
                   "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
            for option, value in layout.items():
                if value:
                    cmd += [f"--{option.replace('_', '-')}", str(value)]
        else:  # the gunicorn command it execs, with the access log off
            from service.commands.serve import gunicorn_command

            cmd = gunicorn_command("inference", "127.0.0.1", self.port, **layout,
                                   access_log=False)  # fmt: skip
            cmd[-1:-1] = ["--log-level", "warning"]
            if config:  # another gunicorn configuration module than the service's
                cmd[cmd.index("--config") + 1] = config
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO)

    ready_path, ready_status = "/readyz", 200

    def wait_ready(self, timeout: float = 60) -> float:
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            try:
                if self.get(self.ready_path)[0] == self.ready_status:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise TimeoutError(f"the server on port {self.port} never became ready")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gunicorn master and its workers so far."""
        return sum(process_cpu_s(p) for p in [self.proc.pid, *self.worker_pids()])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ReferenceServer(Server):
    """A reference classifier of `bench/` under gunicorn (no service features), serving 404
    everywhere but its predict route."""

    ready_path, ready_status = "/", 404

    def __init__(self, app: str, onnx_path: Path, card_path: Path, gunicorn: list[str],
                 intra_op: int = 1) -> None:  # fmt: skip
        self.port = _free_port()
        env = {**os.environ, "BENCH_ONNX": str(onnx_path), "BENCH_CARD": str(card_path),
               "BENCH_INTRA_OP": str(intra_op)}  # fmt: skip
        cmd = [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", *gunicorn,
            "--keep-alive", "30", "--log-level", "warning", app,
        ]  # fmt: skip
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO)


def reference(label: str, model_dir: Path, card_path: Path, cores: int) -> ReferenceServer:
    """A reference of REFERENCES in the service's CPU layout, one sync worker per core (the
    layout of the issue's figure for the minimal Flask classifier too)."""
    layout = ["--workers", str(cores), "--worker-class", "sync"]
    return ReferenceServer(f"bench.{label}_app:app", model_dir / "model.onnx", card_path, layout)


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
         requests: int | None = None, client: str = "wrk") -> dict[str, float]:  # fmt: skip
    """Closed-loop load on keep-alive connections for a fixed time (wrk) or, with the Python
    client, optionally a fixed request count."""
    if client == "python":
        return load_python(port, body, concurrency, seconds=seconds, requests=requests)
    if seconds is None:
        raise ValueError("wrk runs for a time, not a request count")
    with tempfile.TemporaryDirectory(prefix="scantune-wrk-") as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "body"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_CONTENT_TYPE": CONTENT_TYPE}
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
                requests: int | None = None) -> dict[str, float]:  # fmt: skip
    """The fallback client: Python threads, one keep-alive connection each."""
    path = f"/v1/models/{MODEL}:predict"
    headers = {"Content-Type": CONTENT_TYPE}
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"cores": cores, "config": vars(args) | {"out": str(args.out)}}
    png = IMAGE.read_bytes()
    body = png if args.raw else multipart_body(png)
    with tempfile.TemporaryDirectory(prefix="scantune-bench-") as tmp:
        work = Path(tmp)
        model_dir, card = build_model(work)
        uri = publish(model_dir, card, work / "artifacts")
        onnx = (model_dir / "model.onnx").read_bytes()
        results["loadavg_start"] = loadavg()
        for entry in ("gunicorn", "scantune"):
            results[f"cold_start_{entry}_s"] = [
                cold_start(uri, args, work / f"metrics-{entry}{i}", entry)
                for i in range(args.cold_starts)
            ]
        if args.s3_cold_starts:
            results["cold_start_s3_s"] = s3_cold_starts(model_dir, card, args, work)
        refs: dict[str, ReferenceServer] = {}
        if args.references:
            card_path = work / "card.json"
            card_path.write_text(card.to_json())
            refs = {label: reference(label, model_dir, card_path, cores) for label in REFERENCES}
        server = Server(uri, args, _mkdir(work / "metrics"))
        try:
            server.wait_ready()
            load(server.port, body, 4, seconds=2, client=args.client)  # warm-up
            for ref in refs.values():
                ref.wait_ready()
                load(ref.port, body, 4, seconds=2, client=args.client)
            results["blocks"] = [
                one_block(server, refs, onnx, card, png, body, args, cores)
                for _ in range(args.blocks)
            ]
            if args.memory_requests:
                results["memory"] = memory_run(server, body, args)
        finally:
            server.stop()
            for ref in refs.values():
                ref.stop()
        results["loadavg_end"] = loadavg()
    summarise(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase and block")
    parser.add_argument("--blocks", type=int, default=6, help="interleaved measurement blocks")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32],
                        help="compared with the limit (concurrency 1 always runs)")  # fmt: skip
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--s3-cold-starts", type=int, default=0,
                        help="cold starts from S3 on moto's server (a dev dependency)")  # fmt: skip
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--client", choices=["wrk", "python"],
                        default="wrk" if shutil.which("wrk") else "python")  # fmt: skip
    parser.add_argument("--worker-class", choices=["sync", "gthread"],
                        help="default: the service's (sync, one worker per core)")  # fmt: skip
    parser.add_argument("--workers", type=int, help="default: the service's for the class")
    parser.add_argument("--threads", type=int, help="default: the service's for the class")
    parser.add_argument("--intra-op", type=int, default=0,
                        help="SCANTUNE_ORT_INTRA_OP_THREADS (0: the cores)")  # fmt: skip
    parser.add_argument("--runners", type=int, default=0, help="SCANTUNE_BATCH_RUNNERS (0: cores)")
    parser.add_argument("--no-arena", dest="arena", action="store_false",
                        help="onnxruntime CPU memory arena off")  # fmt: skip
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--max-batch-wait-ms", type=float, default=2.0)
    parser.add_argument(
        "--raw", action="store_true", help="send the PNG as a raw image/png body, not multipart"
    )
    parser.add_argument("--no-references", dest="references", action="store_false",
                        help="skip the minimal Flask and bare WSGI references")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    global CONTENT_TYPE
    CONTENT_TYPE = "image/png" if args.raw else f"multipart/form-data; boundary={BOUNDARY}"
    return args


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def cold_start(uri: str, args: argparse.Namespace, metrics_dir: Path, entry: str,
               extra_env: dict[str, str] | None = None) -> float:  # fmt: skip
    server = Server(uri, args, _mkdir(metrics_dir), entry, extra_env)
    try:
        return server.wait_ready()
    finally:
        server.stop()


@contextlib.contextmanager
def s3_store(model_dir: Path, card: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """The model published to moto's standalone S3 server on a loopback port, as the tests
    do; yields the store's URI and the environment a service needs to reach it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "SCANTUNE_S3_ENDPOINT_URL": endpoint}  # fmt: skip
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    saved = {key: os.environ.get(key) for key in env}
    try:
        os.environ.update(env)  # for this process's publishing client
        from models.uri import s3_client

        deadline = time.monotonic() + 30
        while True:
            try:
                s3_client(endpoint).create_bucket(Bucket="bench")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield publish(model_dir, card, "s3://bench/artifacts", endpoint), env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        moto.terminate()
        moto.wait(10)


def s3_cold_starts(model_dir: Path, card: Any, args: argparse.Namespace, work: Path) -> list[float]:
    """Cold starts of `scantune serve inference` from an S3 store on moto."""
    with s3_store(model_dir, card) as (uri, env):
        return [
            cold_start(uri, args, work / f"metrics-s3-{i}", "scantune", env)
            for i in range(args.s3_cold_starts)
        ]


def one_block(server: Server, refs: dict[str, ReferenceServer], onnx: bytes, card: Any,
              png: bytes, body: bytes, args: argparse.Namespace,
              cores: int) -> dict[str, Any]:  # fmt: skip
    """Each service figure right after its in-process reference (the same machine speed)."""
    row: dict[str, Any] = {"loadavg": loadavg()}
    row["limit"] = in_process(onnx, card, png, args.seconds, cores, 1)
    row["http"] = [measured(server, body, c, args) for c in args.concurrency]
    for label, ref in refs.items():
        row[f"{label}_c8"] = measured(ref, body, 8, args)
    row["single_all_cores"] = in_process(onnx, card, png, args.seconds, 1, cores)
    row["http_c1"] = measured(server, body, 1, args)
    print(json.dumps(row), flush=True)
    return row


def measured(server: Server, body: bytes, concurrency: int,
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """`load`, plus the server's CPU time per request over the run."""
    before = server.cpu_seconds()
    figures = load(server.port, body, concurrency, seconds=args.seconds, client=args.client)
    figures["cpu_ms"] = (server.cpu_seconds() - before) * 1000 / max(1, figures["requests"])
    return figures


def memory_run(server: Server, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """RSS of every worker at the start and after each tenth of --memory-requests (concurrency
    8; each tenth is timed from the rate of the one before, as wrk runs for a time)."""
    pids = server.worker_pids()
    samples = [[round(rss_mb(p), 1) for p in pids]]
    step = max(1, args.memory_requests // 10)
    rate = load(server.port, body, 8, seconds=2, client=args.client)["rps"]
    done = failures = 0
    while done < args.memory_requests:
        figures = load(server.port, body, 8, seconds=step / rate, requests=step,
                       client=args.client)  # fmt: skip
        done += int(figures["requests"])
        failures += int(figures["failures"])
        rate = figures["rps"]
        samples.append([round(rss_mb(p), 1) for p in pids])
    return {"requests": done, "failures": failures, "rss_mb_per_worker": samples}


def summarise(results: dict[str, Any]) -> None:
    print(f"\ncores {results['cores']}, load average {results['loadavg_start']} -> "
          f"{results['loadavg_end']}, client {results['config']['client']}")  # fmt: skip
    for i, row in enumerate(results["blocks"]):
        limit, single = row["limit"]["rps"], row["single_all_cores"]["p50_ms"]
        print(f"block {i + 1} (load {row['loadavg']}): limit {limit:.1f} req/s, "
              f"single image all cores p50 {single:.1f} ms")  # fmt: skip
        print(f"  limit CPU {row['limit']['cpu_ms']:.2f} ms per image")
        rows = [("HTTP", row["http_c1"]), *(("HTTP", h) for h in row["http"])]
        rows += [(label, row[f"{label}_c8"]) for label in REFERENCES if f"{label}_c8" in row]
        for label, h in rows:
            versus = (f"{h['p50_ms'] - single:+.1f} ms vs single" if h["concurrency"] == 1
                      else f"{h['rps'] / limit:.2f}x limit")  # fmt: skip
            print(f"  {label} c={h['concurrency']:>2}: {h['rps']:6.1f} req/s ({versus}), "
                  f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
                  f"CPU {h['cpu_ms']:.2f} ms/request, failures {h['failures']}")  # fmt: skip
    for c in results["config"]["concurrency"]:
        ratios = [h["rps"] / r["limit"]["rps"] for r in results["blocks"] for h in r["http"]
                  if h["concurrency"] == c]  # fmt: skip
        print(f"c={c}: median {statistics.median(ratios):.2f}x limit "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    for label, title in REFERENCES.items():
        ratios = [r[f"{label}_c8"]["rps"] / r["limit"]["rps"] for r in results["blocks"]
                  if f"{label}_c8" in r]  # fmt: skip
        if ratios:
            print(f"{title} c=8: median {statistics.median(ratios):.2f}x limit "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    first = results["config"]["concurrency"][0]
    extra = [r["http"][0]["cpu_ms"] - r["limit"]["cpu_ms"] for r in results["blocks"]]
    print(f"service CPU per request beyond the limit's per image, c={first}: "
          f"median {statistics.median(extra):+.2f} ms")  # fmt: skip
    deltas = [r["http_c1"]["p50_ms"] - r["single_all_cores"]["p50_ms"] for r in results["blocks"]]
    print(f"c=1 p50 minus single-image all-core p50: median {statistics.median(deltas):+.1f} ms "
          f"(range {min(deltas):+.1f} to {max(deltas):+.1f})")  # fmt: skip
    for entry in ("gunicorn", "scantune", "s3"):
        if f"cold_start_{entry}_s" in results:
            figures = [round(x, 3) for x in results[f"cold_start_{entry}_s"]]
            label = "scantune from S3 on moto" if entry == "s3" else entry
            print(f"cold start to ready, {label} (s):", figures)
    memory = results.get("memory")
    if memory:
        print(f"RSS per worker over {memory['requests']} requests "
              f"({memory['failures']} failed), MB:", memory["rss_mb_per_worker"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""Starting what the benchmarks measure over HTTP: the service under gunicorn (or as
`scantune serve inference`), the reference classifiers of `bench/`, an S3 store on moto."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    CONTENT_TYPE,
    MODEL,
    REPO,
    free_port,
    load,
    mkdir,
    process_cpu_s,
    publish,
)

REFERENCES = {  # the reference classifiers run beside the service, by label
    "minimal": "minimal Flask classifier",
    "bare": "bare WSGI classifier",
}


def add_service_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that say how the service runs and how it is loaded, shared by the scripts."""
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase and block")
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
    return parser


def service_options(argv: list[str]) -> argparse.Namespace:
    """`add_service_options`' values from `argv` (defaults: the service's own)."""
    return add_service_options(argparse.ArgumentParser()).parse_args(argv)


class Server:
    """The service under gunicorn: started directly, or (entry "scantune") the way the image
    and the chart start it, `scantune serve inference`, which execs the same gunicorn."""

    def __init__(self, uri: str, args: argparse.Namespace, metrics_dir: Path,
                 entry: str = "gunicorn", extra_env: dict[str, str] | None = None,
                 config: str | None = None) -> None:  # fmt: skip
        self.port = free_port()
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
        self.port = free_port()
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


def cold_start(uri: str, args: argparse.Namespace, metrics_dir: Path, entry: str,
               extra_env: dict[str, str] | None = None) -> float:  # fmt: skip
    server = Server(uri, args, mkdir(metrics_dir), entry, extra_env)
    try:
        return server.wait_ready()
    finally:
        server.stop()


def measured(server: Server, body: bytes, concurrency: int,
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """`load`, plus the server's CPU time per request over the run."""
    before = server.cpu_seconds()
    content_type = "image/png" if getattr(args, "raw", False) else CONTENT_TYPE
    figures = load(server.port, body, concurrency, seconds=args.seconds, client=args.client,
                   content_type=content_type)  # fmt: skip
    figures["cpu_ms"] = (server.cpu_seconds() - before) * 1000 / max(1, figures["requests"])
    return figures


@contextlib.contextmanager
def s3_store(model_dir: Path, card: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """The model published to moto's standalone S3 server on a loopback port, as the tests
    do; yields the store's URI and the environment a service needs to reach it."""
    port = free_port()
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

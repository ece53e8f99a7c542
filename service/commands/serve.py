"""`scantune up` and `scantune serve`: the services under gunicorn."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    workers: int | None  # None: one per core this process may use
    threads: int
    # gunicorn's worker timeout. A sync worker does not report to the master while it serves
    # a request, so for it this is also the longest a client may take to send one: a stalled
    # or trickling upload holds the worker until then, and the master replaces the worker.
    timeout_s: int = 120


@dataclass(frozen=True)
class ServiceDef:
    app: str
    port: int
    layouts: dict[str, Layout]  # by gunicorn worker class; the first is the default
    config: str | None = None  # a gunicorn configuration module ("python:...")

    @property
    def worker_class(self) -> str:
        return next(iter(self.layouts))


SERVICES = {
    "training": ServiceDef(
        "service.training_api:create_app()",
        8000,
        {"gthread": Layout(workers=2, threads=4)},
        config="python:service.training_api.gunicorn_conf",  # checks the settings first
    ),
    # CPU: one sync worker per core, each with a single-threaded onnxruntime session, and the
    # all-core session for a request while the other workers are idle (service.cores).
    # gthread (a GPU): one worker whose batcher micro-batches its threads' requests.
    "inference": ServiceDef(
        "service.inference:create_app()",
        8001,
        {
            "sync": Layout(workers=None, threads=1, timeout_s=30),
            "gthread": Layout(workers=1, threads=16),
        },
        config="python:service.inference.gunicorn_conf",  # service.cores' hooks, preimports
    ),
    # The DICOM node: one worker owns the DICOM port (SCANTUNE_DICOM_PORT) and the queue
    # worker; its threads serve STOW-RS, health and metrics on the HTTP port.
    "dicom": ServiceDef(
        "service.dicom_node.app:create_app()",
        8002,
        {"gthread": Layout(workers=1, threads=8)},
        config="python:service.dicom_node.gunicorn_conf",
    ),
}


def register(subparsers: Any) -> None:
    up = subparsers.add_parser("up", help="run both services on embedded defaults")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument(
        "--no-auth", action="store_true", help="serve without API keys (local use only)"
    )
    up.add_argument("--training-port", type=int, default=SERVICES["training"].port, help="8000")
    up.add_argument("--inference-port", type=int, default=SERVICES["inference"].port, help="8001")
    up.add_argument(
        "--data-root",
        action="append",
        default=[],
        type=Path,
        help="a folder jobs may read local data from, besides the one it runs in (repeatable)",
    )
    up.set_defaults(func=run_up)

    serve = subparsers.add_parser("serve", help="run one service under gunicorn")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="default: by worker class (see README)")
    serve.add_argument("--threads", type=int)
    serve.add_argument(
        "--worker-class",
        choices=["sync", "gthread"],
        help="inference: sync (default, one worker per core) or gthread (one worker, for a GPU)",
    )
    serve.set_defaults(func=run_serve)


def gunicorn_command(
    name: str,
    host: str,
    port: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    worker_class: str | None = None,
    *,
    access_log: bool = True,
) -> list[str]:
    from service.cores import available_cores

    spec = SERVICES[name]
    worker_class = worker_class or spec.worker_class
    if worker_class not in spec.layouts:
        raise SystemExit(f"scantune serve {name}: worker class is one of {', '.join(spec.layouts)}")
    layout = spec.layouts[worker_class]
    config = ["--config", spec.config] if spec.config else []
    # The path without its query string, its UIDs taken out (service.access_log): a query or
    # a path may carry a Study Instance UID (the node's series filter, STOW-RS to a study).
    line = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
    access = [
        "--access-logfile", "-", "--access-logformat", line,
        "--logger-class", "service.access_log.AccessLogger",
    ] if access_log else []  # fmt: skip
    return [
        sys.executable, "-m", "gunicorn",
        *config,
        *_no_control_socket(),
        *_heartbeat_in_memory(),
        "--bind", f"{host}:{port or spec.port}",
        "--workers", str(workers or layout.workers or available_cores()),
        "--threads", str(threads or layout.threads),
        "--worker-class", worker_class,
        "--timeout", str(layout.timeout_s),
        "--graceful-timeout", "30",
        # Request lines up to gunicorn's maximum reach the app, which refuses a query string
        # over service.web.MAX_QUERY_BYTES; longer lines gunicorn refuses itself, as a
        # problem document too (service.gunicorn_errors).
        "--limit-request-line", "8190",
        *access,
        spec.app,
    ]  # fmt: skip


def _heartbeat_in_memory(shm: str = "/dev/shm") -> list[str]:
    """Each worker touches a heartbeat file before every request; on a disk-backed directory
    (a container's overlay /tmp, gunicorn's default) that metadata write can stall the
    worker, so keep it in memory where the system has a tmpfs there (Linux, containers)."""
    return ["--worker-tmp-dir", shm] if os.path.isdir(shm) else []


def _no_control_socket() -> list[str]:
    """gunicorn 25.1+ opens a control socket at one fixed path per user (~/.gunicorn): the two
    services of `scantune up` would fight over it, and a pod's read-only home cannot hold it.
    Nothing here uses it (scaling is the orchestrator's), so it stays closed."""
    import gunicorn

    return ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []


def service_env(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for one gunicorn: a fresh Prometheus multiprocess folder per service."""
    env = dict(os.environ if base is None else base)
    if "PROMETHEUS_MULTIPROC_DIR" not in env:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"scantune-{name}-metrics-")
    return env


def run_serve(args: argparse.Namespace) -> int:
    cmd = gunicorn_command(
        args.service, args.host, args.port, args.workers, args.threads, args.worker_class
    )
    env = service_env(args.service)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def run_up(args: argparse.Namespace) -> int:
    from service.auth import hash_key
    from service.config import SCOPES

    base = dict(os.environ)
    if args.no_auth:
        base["SCANTUNE_AUTH_DISABLED"] = "true"
    elif not base.get("SCANTUNE_API_KEYS"):
        key = secrets.token_urlsafe(24)
        scopes = list(SCOPES)
        base["SCANTUNE_API_KEYS"] = json.dumps(
            [{"name": "local", "sha256": hash_key(key), "scopes": scopes}]
        )
        print(
            f"API key for this run (all scopes): {key}\n  export SCANTUNE_API_KEY={key}", flush=True
        )
    ports = {"training": args.training_port, "inference": args.inference_port}
    _local_data_roots(base, args.data_root)
    # The dashboard's "Try a scan" forwards to the inference service started beside it.
    inference_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base.setdefault("SCANTUNE_INFERENCE_URL", f"http://{inference_host}:{ports['inference']}")
    # Each gunicorn in a process group of its own: Ctrl-C at the terminal reaches only this
    # process, which forwards it to the masters (`_wait_all`), and each master stops its
    # workers with one signal. Had a gthread worker also got the terminal's SIGINT, the two
    # signals would re-enter gunicorn's quit handler, which deadlocks on its thread pool's
    # shutdown lock until the 30 s graceful timeout SIGKILLs it.
    procs = [
        subprocess.Popen(
            gunicorn_command(name, args.host, port), env=service_env(name, base), process_group=0
        )
        for name, port in ports.items()
    ]
    print(
        f"training  http://{args.host}:{ports['training']}   "
        f"inference http://{args.host}:{ports['inference']}",
        flush=True,
    )
    return _wait_all(procs)


def _local_data_roots(env: dict[str, str], extra: list[Path]) -> None:
    """Local use: jobs may read data under the folder `scantune up` runs in and the
    `--data-root` folders (said aloud), as no data is allowed by default; a
    SCANTUNE_LOCAL_DATA_ROOTS already set is kept."""
    if "SCANTUNE_LOCAL_DATA_ROOTS" not in env:
        roots = [Path.cwd(), *(root.resolve() for root in extra)]
        env["SCANTUNE_LOCAL_DATA_ROOTS"] = json.dumps([str(root) for root in roots])
    print(f"jobs may read local data under {env['SCANTUNE_LOCAL_DATA_ROOTS']}", flush=True)


# After a forwarded stop, how long before the stragglers' process groups are told again.
NUDGE_AFTER_S, NUDGE_EVERY_S = 3.0, 2.0


def _wait_all(procs: list[subprocess.Popen[bytes]]) -> int:
    stopping: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(time.monotonic())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    nudged = 0.0
    while any(proc.poll() is None for proc in procs):
        time.sleep(0.1)
        now = time.monotonic()
        if stopping and now - stopping[0] > NUDGE_AFTER_S and now - nudged > NUDGE_EVERY_S:
            # A worker forked just before its master stopped can lose the master's signal
            # (it arrives before the worker installs its handlers) and would serve on until
            # the graceful timeout kills it: SIGTERM to each group (master and workers).
            nudged = now
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)
    return max((proc.returncode for proc in procs), default=0)

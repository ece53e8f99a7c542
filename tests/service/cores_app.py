"""A WSGI app for tests/service/test_cores.py: reports what `service.cores` says in a worker.

`GET /state` answers at once; `GET /hold?s=SECONDS` answers after that long, so the worker
counts as busy meanwhile. Both return this worker's pid, slot and `others_busy()`. With
PROMETHEUS_MULTIPROC_DIR set, each worker adds 1 to a live-summed gauge when it starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from service import cores

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from prometheus_client import Gauge

    WORKERS = Gauge("cores_app_workers", "Workers alive", multiprocess_mode="livesum")
    WORKERS.inc()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/hold":
        time.sleep(float(parse_qs(environ["QUERY_STRING"])["s"][0]))
    body = json.dumps(
        {
            "pid": os.getpid(),
            "active": cores.active(),
            "slot": cores.slot(),
            "others_busy": cores.others_busy(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

"""A recording stand-in for the Kubernetes API server, for the real `kubernetes` client.

A real HTTP server on loopback: it records every request (method, path, query, JSON body) and
answers the few routes the launcher uses with canned Job/Pod objects, so tests assert the
exact objects and calls the code makes. No cluster is involved.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$")
JOB = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+?)(/status)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class StandIn:
    """State the test controls: stored Jobs, the status each reports, pods and their logs."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    log_text: str = ""
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def calls(self, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if method is None or r.method == method]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def start(state: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Recorded:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            rec = Recorded(self.command, url.path, parse_qs(url.query), body)
            state.requests.append(rec)
            return rec

        def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            rec = self._record()
            if not JOBS.match(rec.path):
                return self._send(404, _status(404, "NotFound", rec.path))
            name = rec.body["metadata"]["name"]
            if name in state.jobs:
                return self._send(409, _status(409, "AlreadyExists", f"jobs {name} exists"))
            state.jobs[name] = rec.body
            return self._send(201, {**rec.body, "status": {}})

        def do_GET(self) -> None:
            rec = self._record()
            if m := JOB.match(rec.path):
                name = m.group(2)
                if name not in state.jobs:
                    return self._send(404, _status(404, "NotFound", f"jobs {name} not found"))
                return self._send(
                    200, {**state.jobs[name], "status": state.job_status.get(name, {})}
                )
            if PODS.match(rec.path):
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": state.pods})
            if POD_LOG.match(rec.path):
                return self._send(200, state.log_text, "text/plain")
            return self._send(404, _status(404, "NotFound", rec.path))

        def do_DELETE(self) -> None:
            rec = self._record()
            m = JOB.match(rec.path)
            if not m or m.group(2) not in state.jobs:
                return self._send(404, _status(404, "NotFound", rec.path))
            state.jobs.pop(m.group(2))
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pod(
    name: str, job_id: str, attempt: int, *, phase: str, container: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A canned Pod as the API server would return it."""
    status: dict[str, Any] = {"phase": phase}
    if container is not None:
        status["containerStatuses"] = [
            {
                "name": "runner",
                "image": "img",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": container,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"scantune.dev/job-id": job_id, "scantune.dev/attempt": str(attempt)},
        },
        "status": status,
    }

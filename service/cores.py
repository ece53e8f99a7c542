"""One worker per core: which of a gunicorn's sync workers are busy, shared between them.

The CPU layout of the inference service is one sync worker per core, each running its
requests on a single-threaded onnxruntime session: no threads, so no GIL or thread hand-offs,
and the cores are used the way the in-process limit uses them. A lone request, though, should
use every core (an all-core session), which a worker may do only while the others are idle.

This module is that coordination, loaded as gunicorn configuration
(`gunicorn --config python:service.cores ...`; `scantune serve inference` adds it). The
master creates one shared byte per worker slot before forking; each worker takes a slot,
marks it busy around every request, and asks `others_busy()` before choosing the all-core
session. The master frees a slot (and clears its flag) when its worker exits, so a worker
killed in the middle of a request leaves no stale flag; it also tells Prometheus' multiprocess
mode that the worker is gone. Outside such a gunicorn (gthread workers, tests, the CLI),
`active()` is false and `others_busy()` is always false.

It imports only the standard library: the master loads it before it forks, and cold start
counts.
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path
from typing import Any

MAX_SLOTS = 256
SYNC_WORKER = "SyncWorker"
BUSY = b"\x01"
CGROUP = Path("/sys/fs/cgroup")

_flags: mmap.mmap | None = None  # created by the master, inherited by the workers
_slot: int | None = None  # this worker's slot


def available_cores(cgroup: Path = CGROUP) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota.

    Inside a container `os.cpu_count()` is the node's count, not the pod's CPU limit.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota(cgroup)
    if quota is not None:
        count = min(count or 1, math.ceil(quota))
    return max(1, count or 1)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPU quota in cores from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), if any."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def active() -> bool:
    """This process is a sync worker of a gunicorn that loaded this module."""
    return _flags is not None and _slot is not None


def slot() -> int | None:
    return _slot


def others_busy() -> bool:
    """Another worker of this gunicorn is serving a request right now."""
    flags, mine = _flags, _slot
    if flags is None or mine is None:
        return False
    return flags.find(BUSY, 0, mine) != -1 or flags.find(BUSY, mine + 1) != -1


# gunicorn server hooks: the names gunicorn reads from a configuration module ----------------


def on_starting(server: Any) -> None:
    """Master, before any worker: the shared flags, only when workers are sync workers."""
    global _flags
    if server.cfg.worker_class.__name__ == SYNC_WORKER:
        _flags = mmap.mmap(-1, MAX_SLOTS, flags=mmap.MAP_SHARED)


def pre_fork(server: Any, worker: Any) -> None:
    """Master: give the worker about to be forked the lowest slot no live worker holds."""
    if _flags is None:
        return
    taken = {getattr(w, "scantune_slot", None) for w in server.WORKERS.values()}
    free = next((i for i in range(MAX_SLOTS) if i not in taken), None)
    worker.scantune_slot = free
    if free is not None:
        _flags[free] = 0


def post_fork(server: Any, worker: Any) -> None:
    """Worker: remember its slot (none past MAX_SLOTS workers: it then never counts as busy)."""
    global _slot
    _slot = getattr(worker, "scantune_slot", None)


def pre_request(worker: Any, req: Any) -> None:
    if _flags is not None and _slot is not None:
        _flags[_slot] = 1


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    if _flags is not None and _slot is not None:
        _flags[_slot] = 0


def child_exit(server: Any, worker: Any) -> None:
    """Master: a worker exited (or was killed mid-request): clear its flag, free its slot,
    and drop its live Prometheus gauges (`scantune_models_loaded` would count it forever)."""
    freed = getattr(worker, "scantune_slot", None)
    if _flags is not None and freed is not None:
        _flags[freed] = 0
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

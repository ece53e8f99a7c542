"""service.cores under a real gunicorn: worker slots, busy flags, a killed worker, gthread."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service import cores
from tests.conftest import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
APP = "tests.service.cores_app:app"
Popen = subprocess.Popen[bytes]
Start = Callable[..., tuple[str, Popen]]


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Start]:
    procs: list[Popen] = []

    def start(*options: str, env: dict[str, str] | None = None) -> tuple[str, Popen]:
        port = free_port()
        cmd = [sys.executable, "-m", "gunicorn", "--config", "python:service.cores",
               "--bind", f"127.0.0.1:{port}", "--timeout", "60", *options, APP]  # fmt: skip
        log = (tmp_path / f"gunicorn-{port}.log").open("wb")
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**environ, **(env or {})}, stdout=log, stderr=log
        )
        procs.append(proc)
        wait_for_port(port, proc=proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def get(url: str, timeout: float = 10) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        found: dict[str, Any] = json.load(response)
        return found


def poll_state(url: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        state = get(f"{url}/state")
        if until(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def workers_of(master: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                found.add(int(entry.name))
    return found


def test_sync_workers_take_distinct_slots_and_see_each_other_busy(gunicorn: Start) -> None:
    url, _ = gunicorn("--workers", "2", "--worker-class", "sync")
    idle = poll_state(url, lambda s: True)
    assert idle["active"] is True and idle["others_busy"] is False
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(get, f"{url}/hold?s=1.5")
        busy = poll_state(url, lambda s: s["others_busy"])
        assert busy["others_busy"] is True  # the other worker is holding a request
        holder = held.result()
    assert holder["others_busy"] is False  # by then the polling had stopped
    assert {busy["slot"], holder["slot"]} == {0, 1}
    assert busy["pid"] != holder["pid"]
    assert get(f"{url}/state")["others_busy"] is False


def test_a_worker_killed_mid_request_leaves_no_busy_flag(gunicorn: Start) -> None:
    url, proc = gunicorn("--workers", "2", "--worker-class", "sync")
    poll_state(url, lambda s: True)

    def hold() -> None:
        with contextlib.suppress(OSError):  # its worker is killed under it
            get(f"{url}/hold?s=30", timeout=40)

    holder = threading.Thread(target=hold)
    holder.start()
    busy = poll_state(url, lambda s: s["others_busy"])
    assert busy["others_busy"] is True
    victim = (workers_of(proc.pid) - {busy["pid"]}).pop()
    os.kill(victim, signal.SIGKILL)
    holder.join(15)

    deadline = time.monotonic() + 15
    while len(workers_of(proc.pid) - {victim}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the master forks a replacement
    assert poll_state(url, lambda s: not s["others_busy"])["others_busy"] is False
    with ThreadPoolExecutor(2) as pool:  # two at once: one on each worker
        states = list(pool.map(get, [f"{url}/hold?s=0.5"] * 2))
    assert {s["slot"] for s in states} == {0, 1}  # the replacement took the freed slot
    assert victim not in {s["pid"] for s in states}


def test_a_dead_workers_live_gauges_stop_counting(gunicorn: Start, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = tmp_path / "metrics"
    metrics.mkdir()

    def live() -> float:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics))
        return registry.get_sample_value("cores_app_workers") or 0.0

    url, proc = gunicorn(
        "--workers", "2", "--worker-class", "sync", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    )
    poll_state(url, lambda s: True)
    deadline = time.monotonic() + 10
    while live() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live() == 2
    victim = min(workers_of(proc.pid))
    os.kill(victim, signal.SIGKILL)
    while len(workers_of(proc.pid) - {victim}) < 2 and time.monotonic() < deadline + 10:
        time.sleep(0.05)  # the master forks a replacement, which counts itself in
    with ThreadPoolExecutor(2) as pool:  # both workers answer: the replacement has booted
        assert len({s["pid"] for s in pool.map(get, [f"{url}/hold?s=0.3"] * 2)}) == 2
    assert live() == 2  # not 3: the killed worker's share is gone


def test_threaded_workers_do_not_take_part(gunicorn: Start) -> None:
    url, _ = gunicorn("--workers", "2", "--worker-class", "gthread", "--threads", "2")
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(get, f"{url}/hold?s=0.5")
        time.sleep(0.1)
        state = get(f"{url}/state")
        held.result()
    assert state == {**state, "active": False, "slot": None, "others_busy": False}


def test_outside_gunicorn_nothing_is_busy() -> None:
    assert cores.active() is False and cores.others_busy() is False


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 cores: round up
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity count
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_available_cores_follows_the_cgroup_quota(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert cores.available_cores(tmp_path) == min(affinity, expected or affinity)

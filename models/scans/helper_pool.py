"""The worker's side of the sandboxed GDCM decoder: helper processes that decode JPEG
Lossless and JPEG-LS DICOM pixel data (`models.scans.gdcm_helper` says why, and what runs in
them), started on a process's first such scan and kept for the next ones.

`Pool`: one more helper for each scan decoded while the others are busy, up to its size
(`configure`, called once by whoever owns the process: the inference app factory, the
training data loader). A crash, a hang past `HELPER_TIMEOUT_S` or an answer that is not the
frame asked for costs that scan a refusal (`ImageDecodeError`, a 422) and the helper a
restart; the worker and its other requests go on.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from models.scans.errors import ImageDecodeError
from models.scans.gdcm_helper import MODULE, REASON_MAX
from models.scans.limits import HELPER_TIMEOUT_S

_DTYPES = frozenset({"|u1", "|i1", "<u2", "<i2", "<u4", "<i4"})
_HEADER_MAX = 4096


class _Broken(Exception):
    """The helper crashed, hung or answered out of protocol: it is stopped and restarted."""


class Helper:
    """One helper process, used by one thread at a time (`Pool` hands it out); started when
    first needed."""

    def __init__(self, on_broken: Callable[[], None] | None = None) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._on_broken = on_broken

    def decode(self, data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
        """The first frame of the DICOM file `data`, of `shape`, as its stored values."""
        deadline = time.monotonic() + HELPER_TIMEOUT_S
        try:
            proc = self._running()
            _send(proc, data)
            return _receive(proc, shape, deadline, name)
        except _Broken as exc:
            self.close()
            if self._on_broken is not None:
                self._on_broken()
            raise ImageDecodeError(name, f"cannot decode DICOM pixel data ({exc})") from None
        except ImageDecodeError:  # its refusal, read whole: the helper serves on
            raise
        except BaseException:  # mid-answer (out of memory, say): the rest is unread
            self.close()
            raise

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()
        root = Path(__file__).resolve().parents[2]  # the folder holding `models`
        try:
            self._proc = subprocess.Popen(
                command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # GDCM's own messages: no scan content in logs
                env=environment(root),
                cwd=root,
                close_fds=True,
            )
        except OSError as exc:
            raise _Broken(f"the decoder process did not start: {exc.strerror}") from None
        return self._proc

    def forget(self) -> None:
        """In a forked child: drop the parent's helper without stopping it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        os.close(pipe.fileno())


def command() -> list[str]:
    return [sys.executable, "-m", MODULE]


def environment(root: Path) -> dict[str, str]:
    """The helper's whole environment: what Python needs to find this package, no more."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(root),
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",  # one thread, and no per-thread buffers under the limit
        "OMP_NUM_THREADS": "1",
    }


def _send(proc: subprocess.Popen[bytes], data: bytes) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        stdin.write(struct.pack("<Q", len(data)))
        stdin.write(data)
        stdin.flush()
    except OSError:  # it died before reading it all
        raise _Broken(_ended(proc)) from None


def _receive(
    proc: subprocess.Popen[bytes], shape: tuple[int, ...], deadline: float, name: str
) -> np.ndarray:
    stdout = proc.stdout
    assert stdout is not None
    (length,) = struct.unpack("<I", _read(proc, stdout, 4, deadline))
    if length > _HEADER_MAX:
        raise _Broken("the decoder process answered out of protocol")
    try:
        header: Any = json.loads(_read(proc, stdout, length, deadline))
    except ValueError:
        raise _Broken("the decoder process answered out of protocol") from None
    if not isinstance(header, dict):
        raise _Broken("the decoder process answered out of protocol")
    if "error" in header:  # a file GDCM refused without harm: the helper carries on
        reason = str(header["error"])[:REASON_MAX]
        raise ImageDecodeError(name, f"cannot decode DICOM pixel data ({reason})")
    dtype, got = header.get("dtype"), header.get("shape")
    if not isinstance(dtype, str) or dtype not in _DTYPES or not isinstance(got, list) \
            or tuple(got) != shape:  # fmt: skip
        raise _Broken(f"the decoder gave a frame of {got} {dtype}, not of the file's {list(shape)}")
    payload = _read(proc, stdout, math.prod(shape) * np.dtype(dtype).itemsize, deadline)
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def _read(proc: subprocess.Popen[bytes], pipe: IO[bytes], size: int, deadline: float) -> bytearray:
    out = bytearray()
    fd = pipe.fileno()
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise _Broken(f"decoding took over {HELPER_TIMEOUT_S:g} s")
        chunk = os.read(fd, min(size - len(out), 1 << 20))
        if not chunk:
            raise _Broken(_ended(proc))
        out += chunk
    return out  # not copied into bytes: the frame's array is made on it


def _ended(proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "the decoder process stopped answering"
    if code < 0:
        try:
            return f"the decoder process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the decoder process was killed by signal {-code}"
    return f"the decoder process exited with status {code}"


class Pool:
    """A process's helpers: one per scan being decoded at once, up to `size`, each kept for
    the next scans. A sync worker decodes one scan at a time and so keeps one helper; the
    threads of a gthread worker (the GPU layout) decode side by side instead of queueing
    for one."""

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self.on_broken: Callable[[], None] | None = None
        """Called each time a helper crashed, hung or answered out of protocol (a metric)."""
        self._ready = threading.Condition()
        self._idle: list[Helper] = []
        self._all: list[Helper] = []

    def decode(self, data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
        helper = self._take()
        try:
            return helper.decode(data, shape, name)
        finally:
            with self._ready:
                if helper in self._all:  # not closed meanwhile
                    self._idle.append(helper)
                    self._ready.notify()

    def resize(self, size: int) -> None:
        """At most `size` helpers from now on (running ones beyond it stay)."""
        with self._ready:
            self.size = max(1, size)
            self._ready.notify_all()

    def pids(self) -> list[int]:
        """The helpers' processes that are running, in the order they were first needed."""
        return [pid for helper in self._all if (pid := helper.pid()) is not None]

    def close(self) -> None:
        """Stop every helper; the next scans start new ones."""
        with self._ready:
            helpers, self._all, self._idle = self._all, [], []
            self._ready.notify_all()
        for helper in helpers:
            helper.close()

    def forget(self) -> None:
        """In a forked child: drop the parent's helpers without stopping them."""
        for helper in self._all:
            helper.forget()
        self._ready = threading.Condition()  # it may have been held by a thread at the fork
        self._idle, self._all = [], []

    def _broken(self) -> None:
        if self.on_broken is not None:
            self.on_broken()

    def _take(self) -> Helper:
        with self._ready:
            while not self._idle and len(self._all) >= self.size:
                self._ready.wait()
            if self._idle:
                return self._idle.pop()  # the one used last: its pages are the warmest
            helper = Helper(self._broken)
            self._all.append(helper)
            return helper


_lock = threading.Lock()
_pool: Pool | None = None


def configure(size: int, on_broken: Callable[[], None] | None = None) -> Pool:
    """Size this process's helpers and say what to call when one breaks (a metric); the
    first call makes the pool and registers what stops its helpers at exit, and what a
    forked child does with its parent's (drops them: the pipes are the parent's)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = Pool(size)
            os.register_at_fork(after_in_child=_forget_in_child)
            atexit.register(_close)
        _pool.resize(size)
        _pool.on_broken = on_broken
        return _pool


def pool() -> Pool:
    """This process's helpers; one helper unless `configure` said otherwise."""
    return _pool if _pool is not None else configure(1)


def decode(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    return pool().decode(data, shape, name)


def _forget_in_child() -> None:
    if _pool is not None:
        _pool.forget()


def _close() -> None:
    if _pool is not None:
        _pool.close()

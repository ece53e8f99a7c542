"""JPEG Lossless and JPEG-LS DICOM pixel data, decoded by GDCM in a process of its own.

No decoder the services trust in-process reads these syntaxes (`models.dicom.TRUSTED_PLUGINS`),
and GDCM, which does, aborted or crashed its process on random mutations of valid files
within a few hundred tries (docs/benchmarks.md). PACS archives hold many CR, DX and CT scans
in them, so GDCM runs here, in a helper process (`python -m models.dicom_helper`) that each
decoding process starts on its first such scan and keeps for the next ones (`Pool`: one more
for each scan decoded while the others are busy, up to its size). A crash, a hang
past `TIMEOUT_S` or an answer that is not the frame asked for costs that scan a refusal
(`ImageDecodeError`, a 422) and the helper a restart; the worker and its other requests go on.

The helper gets the file's bytes and nothing else: no inherited descriptors (a worker's
listening socket), an environment without the parent's (no credentials or keys), no core
dumps (a dump would put patient pixels on disk), a limit on its address space. Having
decoded pydicom's samples of each kind once (`WARM_UP`: what decoding loads lazily is then
loaded), it seals itself with a seccomp filter (`SYSCALLS`, `models.syscalls`) before it
reads a scan: a helper subverted by a crafted file can then neither open a file (the
worker's `/proc/<pid>/environ` included) nor reach the network, exec, fork or signal. It
answers with a small JSON header and the frame's raw bytes, never a pickle: such a helper
can send only pixels, which are checked against the shape and type asked for. A helper that
cannot seal itself (a kernel without seccomp filters, an unknown architecture) refuses
every scan, saying so, instead of decoding unsealed.

On the helper's stdin and stdout, per scan:

    request   <u8 length> the DICOM file
    answer    <u4 length> JSON {"dtype": "<u2", "shape": [rows, columns(, 3)]}, the pixels
              or        <u4 length> JSON {"error": "why"} alone
"""

from __future__ import annotations

import atexit
import contextlib
import io
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

from models.imaging import ImageDecodeError

PLUGIN = "gdcm, in a helper process"
"""What `models.dicom` decodes these syntaxes with, in place of a pydicom plugin's name."""

SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, Process 14, Selection Value 1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    }
)
TIMEOUT_S = 30.0
"""Longest one scan may take, the helper's start included (a 64 MP JPEG-LS frame: ~3 s)."""
MEMORY_LIMIT = 2 * 1024**3
"""The helper's address space: a 64 MP frame is 128 MB as 16-bit values, GDCM's copy as much."""

WARM_UP = (
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS, signed 16-bit
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS near-lossless, 8-bit
    "SC_rgb_jls_lossy_sample.dcm",  # JPEG-LS, RGB
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless, RGB
)
"""pydicom's test files (in its wheel) the helper decodes before it seals itself."""
SYSCALLS = (
    "read", "write", "close", "fstat", "lseek",  # its pipes
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",  # memory
    "futex", "sched_yield", "getpid", "gettid", "clock_gettime",
    "rt_sigprocmask", "rt_sigreturn", "restart_syscall", "exit", "exit_group",
)  # fmt: skip
"""All the helper may do once sealed (`models.syscalls`), with `tgkill` to itself (an abort):
no open, no socket, no exec, no signal to another process; a scan gets a 422 for anything
else it tries."""

_DTYPES = frozenset({"|u1", "|i1", "<u2", "<i2", "<u4", "<i4"})
_HEADER_MAX = 4096
_REASON_MAX = 300


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
        deadline = time.monotonic() + TIMEOUT_S
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
        root = Path(__file__).resolve().parent.parent
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
    return [sys.executable, "-m", "models.dicom_helper"]


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
        reason = str(header["error"])[:_REASON_MAX]
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
            raise _Broken(f"decoding took over {TIMEOUT_S:g} s")
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


_pool = Pool()  # one helper: the service sizes it (SCANTUNE_DICOM_DECODERS, or its cores)


def pool() -> Pool:
    """This process's helpers (a forked child gets its own: the pipes are the parent's)."""
    return _pool


def decode(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    return _pool.decode(data, shape, name)


def _after_fork_in_child() -> None:
    _pool.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_pool.close)


# The helper process.


def _confine() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _first_frame(data: bytearray) -> np.ndarray:
    import pydicom
    from pydicom.pixels import pixel_array

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if str(syntax) not in SYNTAXES:
        raise ValueError(f"transfer syntax {syntax} is not one this decoder takes")
    return np.ascontiguousarray(pixel_array(ds, index=0, decoding_plugin="gdcm"))


def _read_exactly(stream: IO[bytes], size: int) -> bytearray | None:
    out = bytearray()
    while len(out) < size:
        chunk = stream.read(size - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def _answer(out: IO[bytes], header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    encoded = json.dumps(header).encode()
    out.write(struct.pack("<I", len(encoded)) + encoded)
    out.write(payload)
    out.flush()


def main() -> int:
    _confine()
    # The answers go to a private copy of stdout; anything a library prints goes nowhere.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    import logging
    import warnings

    if "gdcm" in sys.modules and sys.modules["gdcm"] is None:  # set by models.dicom
        del sys.modules["gdcm"]
    import gdcm

    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()
    gdcm.Trace.DebugOff()
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    _warm_up()
    return serve(sys.stdin.buffer, out, _seal())


def _warm_up() -> None:
    """Decode pydicom's own samples once: what decoding imports or opens lazily is then
    loaded before the filter forbids opening files."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    for name in WARM_UP:
        with contextlib.suppress(Exception):  # a sample missing from this pydicom
            _first_frame(bytearray((folder / name).read_bytes()))


def _seal() -> str | None:
    """Allow only `SYSCALLS` from here on; why every scan must be refused, if that fails."""
    from models import syscalls

    try:
        syscalls.allow_only(SYSCALLS, to_self=("tgkill",))
    except OSError as exc:
        return f"the decoder's sandbox could not be set up: {exc.strerror}"
    return None


def serve(stdin: IO[bytes], out: IO[bytes], refusal: str | None = None) -> int:
    """Answer requests until stdin ends; with a `refusal`, answer each with it, unread."""
    while (head := _read_exactly(stdin, 8)) is not None:
        data = _read_exactly(stdin, struct.unpack("<Q", head)[0])
        if data is None:
            return 0
        if refusal is None:
            _decode_one(out, data)
        else:
            _answer(out, {"error": refusal})
        del data  # nothing of a scan is held while the helper waits for the next
    return 0


def _decode_one(out: IO[bytes], data: bytearray) -> None:
    try:
        frame = _first_frame(data)
    except MemoryError:
        _answer(out, {"error": "the frame does not fit the decoder's memory limit"})
        return
    except Exception as exc:  # whatever pydicom or GDCM raise: the file is refused
        _answer(out, {"error": f"{type(exc).__name__}: {exc}"[:_REASON_MAX]})
        return
    little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    header = {"dtype": little.dtype.str, "shape": list(little.shape)}
    _answer(out, header, little.data.cast("B"))


if __name__ == "__main__":
    sys.exit(main())

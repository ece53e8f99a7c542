"""JPEG Lossless and JPEG-LS DICOM pixel data, decoded by GDCM in a process of its own.

No decoder the services trust in-process reads these syntaxes
(`models.scans.dicom.TRUSTED_PLUGINS`), and GDCM, which does, aborted or crashed its process
on random mutations of valid files within a few hundred tries (docs/benchmarks.md). PACS
archives hold many CR, DX and CT scans in them, so GDCM runs in this module, as a helper
process (`python -m models.scans.gdcm_helper`) that `models.scans.helper_pool` starts and
talks to.

The helper gets the file's bytes and nothing else: no inherited descriptors (a worker's
listening socket), an environment without the parent's (no credentials or keys), no core
dumps (a dump would put patient pixels on disk), a limit on its address space. Having
decoded pydicom's samples of each kind once (`WARM_UP`: what decoding loads lazily is then
loaded), it seals itself with a seccomp filter (`SYSCALLS`, `models.scans.syscalls`) before it
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

import contextlib
import io
import json
import os
import struct
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

PLUGIN = "gdcm, in a helper process"
"""What `models.scans.dicom` decodes these syntaxes with, in place of a pydicom plugin's name."""

SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, Process 14, Selection Value 1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    }
)
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
"""All the helper may do once sealed (`models.scans.syscalls`), with `tgkill` to itself (an abort):
no open, no socket, no exec, no signal to another process; a scan gets a 422 for anything
else it tries."""

MODULE = "models.scans.gdcm_helper"
"""What `python -m` runs as the helper (this module's `__name__` is `__main__` there)."""
REASON_MAX = 300
"""Longest refusal reason the helper sends, and the worker passes on."""


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
    from models.scans.syscalls import allow_only

    try:
        allow_only(SYSCALLS, to_self=("tgkill",))
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
        _answer(out, {"error": f"{type(exc).__name__}: {exc}"[:REASON_MAX]})
        return
    little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    header = {"dtype": little.dtype.str, "shape": list(little.shape)}
    _answer(out, header, little.data.cast("B"))


if __name__ == "__main__":
    sys.exit(main())

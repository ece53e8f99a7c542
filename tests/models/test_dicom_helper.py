"""GDCM in its own process (`models.scans.gdcm_helper`, `models.scans.helper_pool`): JPEG
Lossless and JPEG-LS scans decode, and a file that crashes or hangs the decoder costs a
refusal, never the process that asked."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import scans
from models.scans import gdcm_helper, helper_pool

CRASH = "normal_0_jpeg_ls_gdcm_crash.dcm"


def fake_helper(monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Run `body` as the helper (a real process): it gets `request` (the file) and `answer`."""
    script = textwrap.dedent(
        """
        import json, os, struct, sys
        size = struct.unpack("<Q", sys.stdin.buffer.read(8))[0]
        request = sys.stdin.buffer.read(size)
        def answer(header, payload=b""):
            data = json.dumps(header).encode()
            sys.stdout.buffer.write(struct.pack("<I", len(data)) + data + payload)
            sys.stdout.buffer.flush()
        """
    ) + textwrap.dedent(body)
    helper_pool.pool().close()
    monkeypatch.setattr(helper_pool, "command", lambda: [sys.executable, "-c", script])


@pytest.fixture(autouse=True)
def fresh_helper() -> Iterator[None]:
    """Each test starts without a helper and leaves none behind (a monkeypatched one)."""
    helper_pool.pool().close()
    yield
    helper_pool.pool().close()


def test_a_file_that_crashes_gdcm_is_refused_and_the_next_scan_decodes(fixture_images):
    crash = (fixture_images / CRASH).read_bytes()
    # The file is what it is kept for: GDCM in the process that decodes it dies.
    inline = subprocess.run(
        [sys.executable, "-c", "import sys, io, pydicom; from pydicom.pixels import pixel_array;"
         " pixel_array(pydicom.dcmread(io.BytesIO(sys.stdin.buffer.read()), force=True),"
         " index=0, decoding_plugin='gdcm')"],
        input=crash, capture_output=True, check=False,
    )  # fmt: skip
    assert inline.returncode < 0, inline.stderr[-500:]

    good = (fixture_images / "normal_0_jpeg_ls.dcm").read_bytes()
    first = scans.decode(good, "first.dcm")
    (before,) = helper_pool.pool().pids()
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(crash, CRASH)
    assert info.value.name == CRASH
    assert "the decoder process was killed by SIG" in info.value.reason
    assert helper_pool.pool().pids() == []  # stopped, and started again when next needed
    np.testing.assert_array_equal(scans.decode(good, "again.dcm"), first)
    assert helper_pool.pool().pids() not in ([], [before])


def test_a_helper_that_takes_too_long_is_killed_and_the_scan_refused(monkeypatch, fixture_images):
    good = (fixture_images / "normal_0_jpeg_lossless.dcm").read_bytes()
    fake_helper(monkeypatch, "import time; time.sleep(60)")
    monkeypatch.setattr(helper_pool, "HELPER_TIMEOUT_S", 0.5)
    with pytest.raises(scans.ImageDecodeError, match=r"decoding took over 0\.5 s"):
        scans.decode(good, "slow.dcm")
    assert helper_pool.pool().pids() == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("answer({'dtype': '<u2', 'shape': [999, 999]}, bytes(2 * 999 * 999))",
         "the decoder gave a frame of [999, 999] <u2, not of the file's [28, 28]"),
        ("answer({'dtype': '<f8', 'shape': [28, 28]}, bytes(8 * 28 * 28))",
         "the decoder gave a frame of [28, 28] <f8"),
        ("answer({'dtype': ['<u2'], 'shape': [28, 28]}, bytes(2 * 28 * 28))",
         "the decoder gave a frame of [28, 28] ['<u2']"),
        ("answer({'dtype': '<u2', 'shape': [28, 28]}, bytes(100))",
         "the decoder process exited with status 0"),
        ("sys.stdout.buffer.write(b'\\xff\\xff\\xff\\xff garbage'); sys.stdout.flush()",
         "the decoder process answered out of protocol"),
        ("answer(['not', 'a', 'header'])", "the decoder process answered out of protocol"),
        ("os.abort()", "the decoder process was killed by SIGABRT"),
    ],
    ids=["wrong shape", "wrong type", "type not a string", "short", "garbage", "not an object",
         "abort"],
)  # fmt: skip
def test_an_answer_that_is_not_the_frame_asked_for_is_refused(
    monkeypatch, fixture_images, body, reason
):
    """What a helper subverted by a crafted file could send: only checked pixels get out."""
    good = (fixture_images / "normal_0_jpeg_lossless.dcm").read_bytes()
    fake_helper(monkeypatch, body)
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(good, "odd.dcm")
    assert reason in info.value.reason
    assert helper_pool.pool().pids() == []  # stopped: what it sends next is not trusted


def test_a_failure_while_reading_an_answer_stops_the_helper(monkeypatch, fixture_images):
    """Out of memory for the frame, say: the rest of that answer is never read, so the
    helper must not serve the next scan with it."""
    good = (fixture_images / "normal_0_jpeg_lossless.dcm").read_bytes()
    expected = scans.decode(good, "good.dcm")

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    with monkeypatch.context() as patch:
        patch.setattr(helper_pool.np, "frombuffer", no_memory)
        with pytest.raises(MemoryError):
            scans.decode(good, "big.dcm")
    assert helper_pool.pool().pids() == []
    np.testing.assert_array_equal(scans.decode(good, "again.dcm"), expected)


def test_a_refusal_by_gdcm_keeps_the_helper(fixture_images):
    """A file GDCM rejects with an error, not a crash: a 422, and the same helper serves on."""
    import io

    import pydicom

    ds = pydicom.dcmread(fixture_images / "normal_0_jpeg_ls.dcm")
    ds.PixelData = ds.PixelData[:40] + bytes(8)  # the codestream cut short
    buf = io.BytesIO()
    ds.save_as(buf)
    good = (fixture_images / "normal_0_jpeg_ls.dcm").read_bytes()
    scans.decode(good, "good.dcm")
    (pid,) = helper_pool.pool().pids()
    with pytest.raises(scans.ImageDecodeError, match="cannot decode DICOM pixel data"):
        scans.decode(buf.getvalue(), "cut.dcm")
    assert helper_pool.pool().pids() == [pid]
    scans.decode(good, "good.dcm")
    assert helper_pool.pool().pids() == [pid]


def test_the_helper_gets_no_credentials_and_no_descriptors_of_the_parent(
    monkeypatch, fixture_images, tmp_path
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-helper")
    monkeypatch.setenv("SCANTUNE_API_KEYS", "[]")
    held = open(tmp_path / "held", "wb")  # noqa: SIM115  (open while the helper starts)
    os.set_inheritable(held.fileno(), True)
    try:
        fake_helper(
            monkeypatch,
            "answer({'error': ' '.join(sorted(os.environ)) + ' | '"
            " + ' '.join(sorted(os.listdir('/proc/self/fd')))})",
        )
        with pytest.raises(scans.ImageDecodeError) as info:
            scans.decode((fixture_images / "normal_0_jpeg_ls.dcm").read_bytes(), "env.dcm")
    finally:
        held.close()
    names, fds = info.value.reason.removesuffix(")").split("(", 1)[1].split(" | ")
    assert set(names.split()) <= {"PATH", "PYTHONPATH", "LC_ALL", "OPENBLAS_NUM_THREADS",
                                  "OMP_NUM_THREADS", "LC_CTYPE"}  # fmt: skip
    assert set(fds.split()) <= {"0", "1", "2", "3"}  # stdio, and listdir's own


def test_the_helper_process_writes_no_core_dump_and_has_a_memory_limit():
    found = subprocess.run(
        [sys.executable, "-c", "import resource; from models.scans import gdcm_helper as h;"
         " h._confine(); print(resource.getrlimit(resource.RLIMIT_CORE),"
         " resource.getrlimit(resource.RLIMIT_AS))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    limit = gdcm_helper.MEMORY_LIMIT
    assert found.stdout.split(") (") == ["(0, 0", f"{limit}, {limit})\n"]


def test_a_forked_child_decodes_with_a_helper_of_its_own(fixture_images):
    """A trainer's data-loader workers fork: the parent's pipes are not theirs to use."""
    good = (fixture_images / "normal_0_jpeg_lossless.dcm").read_bytes()
    expected = scans.decode(good, "parent.dcm")
    (parent_helper,) = helper_pool.pool().pids()
    proc = helper_pool.pool()._all[0]._proc
    assert proc is not None and proc.stdin is not None and proc.stdout is not None
    pipes = (proc.stdin.fileno(), proc.stdout.fileno())
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports by its exit status
        try:
            # Files the child opens after the fork may get the numbers of the parent's pipes;
            # letting go of the parent's Popen must not close them.
            files = [open(os.devnull, "rb")]  # noqa: SIM115
            while files[-1].fileno() < max(pipes):
                files.append(open(os.devnull, "rb"))  # noqa: SIM115
            subprocess._cleanup()  # type: ignore[attr-defined]
            gc.collect()
            kept = all(os.fstat(f.fileno()) for f in files)
            same = np.array_equal(scans.decode(good, "child.dcm"), expected)
            own = helper_pool.pool().pids() not in ([], [parent_helper])
            helper_pool.pool().close()
            os._exit(0 if same and own and kept else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(scans.decode(good, "parent.dcm"), expected)
    assert helper_pool.pool().pids() == [parent_helper]


def test_gdcm_is_not_even_loaded_in_a_process_that_decodes_dicom(fixture_images):
    """pydicom imports GDCM wherever it is installed (21 MB per worker): not in the services'
    processes, which decode JPEG Lossless through the helper all the same."""
    script = (
        "import sys; from models import scans; scans.configure();"
        f" scans.read_file({str(fixture_images / 'normal_0_jpeg_lossless.dcm')!r});"
        " import pydicom.pixels; print(sys.modules.get('gdcm'),"
        " any('gdcm' in line.lower() for line in open('/proc/self/maps')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert found.stdout.split() == ["None", "False"]


def test_the_helper_seals_itself_before_its_first_scan(fixture_images):
    scans.decode((fixture_images / "normal_0_jpeg_ls.dcm").read_bytes(), "sealed.dcm")
    (pid,) = helper_pool.pool().pids()
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":\t" in line
    )  # fmt: skip
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter (models.scans.syscalls)


@pytest.mark.parametrize(
    "sample",
    # pydicom's own test files, none of them among the helper's warm-up (gdcm_helper.WARM_UP):
    # the paths they take through pydicom and GDCM must already be loaded when it seals itself.
    ["JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_the_sealed_helper_decodes_as_gdcm_does_without_the_seal(sample):
    import pydicom.data

    assert sample not in gdcm_helper.WARM_UP[1:]  # the first warm-up file is the control
    path = Path(pydicom.data.__file__).parent / "test_files" / sample
    data = path.read_bytes()
    unsealed = subprocess.run(
        [sys.executable, "-c", "import sys;"
         " from models.scans import gdcm_helper as h;"
         " frame = h._first_frame(bytearray(sys.stdin.buffer.read()));"
         " sys.stdout.buffer.write(f'{frame.dtype.str} {list(frame.shape)}\\n'.encode()"
         " + frame.tobytes())"],
        input=data, capture_output=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    head, pixels = unsealed.stdout.split(b"\n", 1)
    dtype, shape = head.decode().split(" ", 1)
    expected = np.frombuffer(pixels, dtype=dtype).reshape(json.loads(shape))
    got = helper_pool.decode(data, expected.shape, sample)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_a_helper_that_cannot_seal_itself_refuses_every_scan(monkeypatch):
    import io
    import struct

    from models.scans import syscalls

    def no_seccomp(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(syscalls, "allow_only", no_seccomp)
    refusal = gdcm_helper._seal()
    assert refusal == "the decoder's sandbox could not be set up: Function not implemented"
    scans = b"".join(struct.pack("<Q", len(s)) + s for s in (b"DICM one", b"DICM two"))
    out = io.BytesIO()
    assert gdcm_helper.serve(io.BytesIO(scans), out, refusal) == 0
    answers, raw = [], out.getvalue()
    while raw:
        (size,) = struct.unpack("<I", raw[:4])
        answers.append(raw[4 : 4 + size])
        raw = raw[4 + size :]
    assert answers == [f'{{"error": "{refusal}"}}'.encode()] * 2


def test_the_warm_up_samples_ship_with_pydicom():
    """The helper warms up on them before it seals itself; a missing one would leave a code
    path unloaded, and its scans refused."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    assert all((folder / name).is_file() for name in gdcm_helper.WARM_UP)


def _decode_side_by_side(fixture_images, count: int) -> list[str]:
    """`count` threads decode at the same moment; what each helper answered (its pid)."""
    import threading

    data = (fixture_images / "normal_0_jpeg_ls.dcm").read_bytes()
    start = threading.Barrier(count)
    reasons: list[str] = []

    def one(i: int) -> None:
        start.wait()
        with pytest.raises(scans.ImageDecodeError) as info:
            scans.decode(data, f"scan{i}.dcm")
        reasons.append(info.value.reason)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return reasons


@pytest.mark.parametrize(("size", "helpers"), [(3, 3), (1, 1)])
def test_scans_decoded_at_once_get_a_helper_each_up_to_the_pool_size(
    monkeypatch, fixture_images, size, helpers
):
    """The GPU layout's threads decode side by side; the pool never grows past its size."""
    fake_helper(
        monkeypatch,
        """
        import time
        while request:  # each answered after half a second, with the helper's pid
            time.sleep(0.5)
            answer({"error": str(os.getpid())})
            head = sys.stdin.buffer.read(8)
            request = head and sys.stdin.buffer.read(struct.unpack("<Q", head)[0])
        """,
    )
    monkeypatch.setattr(helper_pool.pool(), "size", size)
    reasons = _decode_side_by_side(fixture_images, 3)
    assert len(reasons) == 3
    answered_by = {reason.rsplit("(", 1)[1].rstrip(")") for reason in reasons}
    assert len(answered_by) == helpers
    assert len(helper_pool.pool().pids()) == helpers


def test_the_helpers_are_reused_before_new_ones_start(fixture_images):
    good = (fixture_images / "normal_0_jpeg_lossless.dcm").read_bytes()
    expected = scans.decode(good, "one.dcm")
    for i in range(3):  # one after the other: the same helper
        np.testing.assert_array_equal(scans.decode(good, f"again{i}.dcm"), expected)
    assert len(helper_pool.pool().pids()) == 1

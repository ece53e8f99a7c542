"""The seccomp filter the DICOM helper seals itself with (`models.scans.syscalls`): once it is on,
a process can no longer open a file, make a socket, exec, fork or signal another process,
and what it may do still works."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from models.scans import gdcm_helper, syscalls

pytestmark = pytest.mark.skipif(not syscalls.supported(), reason="no table for this machine")
ROOT = Path(__file__).parents[2]

SEALED = """
import ctypes, os, socket, sys
from models.scans import gdcm_helper, syscalls

victim = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
tgkill = syscalls._NUMBERS[syscalls.machine()]["tgkill"]
syscalls.allow_only(gdcm_helper.SYSCALLS, to_self=("tgkill",))

def attempt(name, action):
    try:
        action()
    except OSError as exc:
        return f"{name}:{exc.errno}"
    return f"{name}:done"

parent = os.getppid()

def tgkill_parent():
    if libc.syscall(tgkill, parent, parent, 0) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")

tries = [
    attempt("read-parent-environ", lambda: open(f"/proc/{parent}/environ", "rb")),
    attempt("open-file", lambda: open(victim, "rb")),
    attempt("unlink", lambda: os.unlink(victim)),
    attempt("socket", lambda: socket.socket()),
    attempt("signal-parent", lambda: os.kill(parent, 0)),
    attempt("tgkill-parent", tgkill_parent),
    attempt("exec", lambda: os.execv("/bin/true", ["true"])),
    attempt("fork", os.fork),
    attempt("rename", lambda: os.rename(victim, victim + ".seen")),
]
big = bytearray(64 * 1024 * 1024)  # memory still comes (mmap), and the pipe still takes text
big[-1] = 1
sys.stdout.write(" ".join(tries) + f" memory:{sum(big)}\\n")
"""


def attempts(script: str, victim: Path) -> dict[str, str]:
    """Run `script` in a fresh interpreter; each attempt's outcome (an errno, or "done")."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(victim)],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(item.split(":") for item in done.stdout.split())


def test_a_sealed_process_cannot_open_connect_exec_fork_or_signal(tmp_path):
    victim = tmp_path / "patient.txt"
    victim.write_text("not for the helper")
    got = attempts(SEALED, victim)
    eperm = "1"
    assert got == {
        "read-parent-environ": eperm, "open-file": eperm, "unlink": eperm, "socket": eperm,
        "signal-parent": eperm, "tgkill-parent": eperm, "exec": eperm, "fork": eperm,
        "rename": eperm,
        "memory": "1",
    }  # fmt: skip
    assert victim.read_text() == "not for the helper"


def test_an_unsealed_process_can_do_all_that_so_the_test_above_means_something(tmp_path):
    victim = tmp_path / "patient.txt"
    victim.write_text("anyone's")
    script = (
        SEALED.replace('syscalls.allow_only(gdcm_helper.SYSCALLS, to_self=("tgkill",))', "")
        .replace('attempt("fork", os.fork),', "")
        .replace('attempt("exec", lambda: os.execv("/bin/true", ["true"])),', "")
    )
    got = attempts(script, victim)
    assert got["read-parent-environ"] == got["open-file"] == got["unlink"] == "done"
    assert got["socket"] == got["signal-parent"] == got["tgkill-parent"] == "done"
    assert got["rename"] == "2"  # done already: unlinked above
    assert not victim.exists()


def test_a_sealed_process_that_aborts_still_dies_by_sigabrt():
    """What GDCM's failed assertions do: the worker reports the helper killed by SIGABRT."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; from models.scans import gdcm_helper, syscalls;"
         " syscalls.allow_only(gdcm_helper.SYSCALLS, to_self=('tgkill',)); os.abort()"],
        capture_output=True, check=False, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == -signal.SIGABRT, done.stderr[-2000:]


def test_every_call_the_helper_allows_has_a_number_on_each_machine():
    for arch in ("x86_64", "aarch64"):
        code = syscalls.program(gdcm_helper.SYSCALLS, arch, ["tgkill"], pid=1234)
        assert len(code) == 8 * (4 + len(set(gdcm_helper.SYSCALLS)) + 1 + 2 + 4)
        assert struct.pack("=HBBI", 0x15, 0, 1, 1234) in code  # the first argument's check
    with pytest.raises(ValueError, match="no x86_64 number known here for openat"):
        syscalls.program(["read", "openat"], "x86_64")

"""A seccomp filter: from here on, this process may make only the system calls named.

`models.scans.gdcm_helper` runs GDCM, a C++ decoder that crashed on random mutations of valid
files, on untrusted scans. A file crafted to take control of the helper would run as the
service's user, so without a filter it could read the worker's `/proc/<pid>/environ`
(storage credentials, API keys), any file the service can read, and send it all over the
network. Once warmed up, the helper needs little more than to read its pipe, allocate
memory and write its pipe, so it asks for exactly that (`allow_only`): any other call fails
with EPERM (a lazy import that was missed then costs a scan a 422, not the helper its
confinement), and a call through another ABI (i386's `int 0x80`) kills the process.

Plain classic BPF through `seccomp(2)`, built with ctypes: no libseccomp needed in the image.
The filter covers every thread (`SECCOMP_FILTER_FLAG_TSYNC`) and, with `no_new_privs`, every
program the process could exec, were exec allowed. Tables for x86-64 and AArch64; elsewhere
`supported()` is false and the caller decides.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable

# linux/audit.h
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# The numbers, from the kernel's uapi headers: asm/unistd_64.h (x86-64) and
# asm-generic/unistd.h (AArch64). Only the calls the helper allows, and `seccomp` itself.
_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "read": 0, "write": 1, "close": 3, "fstat": 5, "lseek": 8, "mmap": 9, "mprotect": 10,
        "munmap": 11, "brk": 12, "rt_sigprocmask": 14, "rt_sigreturn": 15, "sched_yield": 24,
        "mremap": 25, "madvise": 28, "getpid": 39, "exit": 60, "gettid": 186, "futex": 202,
        "restart_syscall": 219, "clock_gettime": 228, "exit_group": 231, "tgkill": 234,
        "seccomp": 317,
    },
    "aarch64": {
        "read": 63, "write": 64, "close": 57, "fstat": 80, "lseek": 62, "mmap": 222,
        "mprotect": 226, "munmap": 215, "brk": 214, "rt_sigprocmask": 135,
        "rt_sigreturn": 139, "sched_yield": 124, "mremap": 216, "madvise": 233, "getpid": 172,
        "exit": 93, "gettid": 178, "futex": 98, "restart_syscall": 128, "clock_gettime": 113,
        "exit_group": 94, "tgkill": 131, "seccomp": 277,
    },
}  # fmt: skip

# linux/filter.h, linux/bpf_common.h
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
# linux/seccomp.h
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_SET_MODE_FILTER = 1
_FILTER_FLAG_TSYNC = 1
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (arg 0's low half)
# linux/prctl.h
_PR_SET_NO_NEW_PRIVS = 38


class _Program(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def machine() -> str:
    name = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def supported() -> bool:
    """Whether this machine's system call numbers are known here."""
    return os.name == "posix" and platform.system() == "Linux" and machine() in _NUMBERS


def program(names: Iterable[str], arch: str, to_self: Iterable[str] = (), pid: int = 0) -> bytes:
    """The filter's instructions (`struct sock_filter`s): the architecture, then each allowed
    number in turn, then each number allowed only with `pid` as its first argument (`tgkill`
    to this process: `abort()` must still end it by SIGABRT); anything else is EPERM."""
    numbers = _NUMBERS[arch]
    names, to_self = set(names), set(to_self)
    unknown = sorted((names | to_self) - numbers.keys())
    if unknown:
        raise ValueError(f"no {arch} number known here for {', '.join(unknown)}")
    allowed = sorted(numbers[n] for n in names)
    own = sorted(numbers[n] for n in to_self - names)
    if len(allowed) + len(own) > 250:  # a jump's offset is one byte
        raise ValueError("too many system calls for one filter")

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    n, m = len(allowed), len(own)
    out = [
        op(_LD_W_ABS, _OFFSET_ARCH),
        op(_JEQ_K, _AUDIT_ARCH[arch], jt=1),
        op(_RET_K, _RET_KILL_PROCESS),
        op(_LD_W_ABS, _OFFSET_NR),
    ]
    # The comparisons, then DENY, ALLOW, and the first-argument check; each jump's offset
    # counts the instructions it skips.
    out += [op(_JEQ_K, nr, jt=n + m - i) for i, nr in enumerate(allowed)]  # to ALLOW
    out += [op(_JEQ_K, nr, jt=m - j + 1) for j, nr in enumerate(own)]  # to the check
    out += [op(_RET_K, _RET_ERRNO | errno.EPERM), op(_RET_K, _RET_ALLOW)]
    if own:
        out += [
            op(_LD_W_ABS, _OFFSET_ARG0),
            op(_JEQ_K, pid, jf=1),
            op(_RET_K, _RET_ALLOW),
            op(_RET_K, _RET_ERRNO | errno.EPERM),
        ]
    return b"".join(out)


def allow_only(names: Iterable[str], to_self: Iterable[str] = ()) -> None:
    """Install the filter on every thread of this process, for good: `names` allowed, and
    `to_self` allowed with this process's id as first argument (OSError if the kernel
    refuses it; ValueError for a name with no number here)."""
    if not supported():
        raise OSError(errno.ENOSYS, f"no system call table here for {machine()}")
    arch = machine()
    code = program(names, arch, to_self, os.getpid())
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    prog = _Program(len(code) // 8, code)
    done = libc.syscall(
        ctypes.c_long(_NUMBERS[arch]["seccomp"]),
        ctypes.c_uint(_SET_MODE_FILTER),
        ctypes.c_uint(_FILTER_FLAG_TSYNC),
        ctypes.byref(prog),
    )
    if done != 0:  # -1 and errno, or the id of a thread that could not take the filter
        err = ctypes.get_errno() if done < 0 else errno.EBUSY
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {os.strerror(err)}")

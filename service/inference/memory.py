"""Keeping a worker's resident memory flat: fewer glibc malloc arenas for request threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int) -> None:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX would; call before threads start.

    A no-op when `arenas` is 0, when MALLOC_ARENA_MAX is already set, or off glibc.
    """
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        if libc.mallopt(M_ARENA_MAX, arenas) != 1:
            log.debug("mallopt(M_ARENA_MAX) refused")
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return

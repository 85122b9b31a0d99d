"""Giving freed heap memory back to the operating system (glibc only; elsewhere a no-op)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc's; musl and others have none
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def trim() -> bool:
    """Return the free memory at the top of the heap and in free pages of glibc's arenas to the
    system. After a burst of short-lived objects (the pages of rows read at start) glibc keeps
    what was freed mapped, so RSS stays at the peak; this takes it back down. True if trimmed."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False

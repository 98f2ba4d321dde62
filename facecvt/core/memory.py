"""Give the memory a process has freed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util


def return_free_memory() -> bool:
    """Ask glibc to return freed heap pages to the system (malloc_trim); False where there is no glibc.

    A runtime closed after a large run (a TensorFlow session, a converter) frees its memory to the
    C heap, which keeps it: without this the process's resident size stays at its peak.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False

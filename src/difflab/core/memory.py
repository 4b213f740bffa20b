"""Let the process keep the memory it frees, so CPU tensors are not faulted in anew.

A sampler or a training loop on the CPU allocates and frees the same few
megabyte-sized activations at every network call. With glibc's defaults such a
block is handed back to the kernel when it is freed (``munmap``, or a trim of the
heap's top) and faulted in page by page when it is allocated again, which costs
more than some of the arithmetic: on this project's two-core machine a forward pass
of the 8x8-digit UNet at batch 1000 took 123 ms with the defaults and 100 ms with
:func:`keep_freed_memory` (``python -m difflab bench alloc`` measures it side by side).
The results are the same to the bit: only where the memory comes from changes.

The price is that memory freed by the process stays with it (up to the peak it
used) until it exits, which is what a notebook kernel, a build worker or a training
command wants. Elsewhere than glibc (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks (once per process; later calls return
    the first answer). True if the setting took effect, False where there is no glibc.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return _done
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = [
        mallopt(_M_MMAP_THRESHOLD, 1 << 30),  # blocks below 1 GiB come from the heap
        mallopt(_M_TRIM_THRESHOLD, 1 << 30),  # and the heap is not trimmed after frees
        mallopt(_M_TOP_PAD, 64 << 20),  # it grows 64 MiB at a time
    ]
    _done = all(r == 1 for r in ok)
    return _done

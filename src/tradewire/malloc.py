"""The C allocator's one setting that matters to a long-running hub (glibc; elsewhere nothing is done).

glibc serves a block of 128 KiB or more with its own mmap, returned to the system when freed, and then
raises that threshold to the freed block's size (up to 32 MiB). After one large frame or snapshot, the
large buffers that follow come from the heap instead, and freed they leave it fragmented: the socket
fuzz run's RSS rose 93 -> 117 MiB over 1M inputs, with 24 MiB free but held in the heap. A fixed
threshold keeps large buffers mmapped and given back whole (the same run then stayed within 10 MiB).
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it also turns the sliding threshold off
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc mallopt or the operator set one.

    MALLOC_MMAP_THRESHOLD_ in the environment is the operator's choice and is left alone."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    done = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if done:
        log.info("malloc: mmap threshold fixed at %d bytes", threshold)
    return done

"""glibc's sliding mmap threshold, and `fix_mmap_threshold` pinning it (in a fresh process each time)."""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from tradewire.malloc import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
fixed = fix_mmap_threshold() if sys.argv[1] == "fixed" else None
big = bytearray(4 << 20)
del big  # a large mmapped block freed: glibc slides its threshold up to its size, unless pinned
before = libc.mallinfo2().hblkhd
held = [bytearray(256 << 10) for _ in range(8)]
print(fixed, (libc.mallinfo2().hblkhd - before) >> 10)
"""


def probe(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=False)
    if "mallinfo2" in out.stderr:
        pytest.skip("not glibc >= 2.33: no mallinfo2 to look with")
    assert out.returncode == 0, out.stderr
    fixed, mmapped_kib = out.stdout.split()
    return fixed, int(mmapped_kib)


def test_large_buffers_stay_mmapped_once_the_threshold_is_fixed():
    fixed, mmapped_kib = probe("fixed")
    assert fixed == "True"
    assert mmapped_kib >= 8 * 256  # each 256 KiB buffer its own mapping, given back whole when freed


def test_without_it_large_buffers_come_from_the_heap_after_one_large_free():
    """What the fix is for: glibc's own behaviour, which fragmented the heap in the socket fuzz run."""
    fixed, mmapped_kib = probe("default")
    assert fixed == "None" and mmapped_kib == 0

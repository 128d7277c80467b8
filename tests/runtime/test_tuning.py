"""Process tuning of ``livecart run``: :func:`livecart.runtime.pipeline.tune_malloc`."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

# In a child process (the tuning is process-wide): free a 20 MB block, which makes glibc raise its mmap
# threshold to 20 MB unless it was fixed, then allocate 3 MB and print whether that block got pages of its
# own (mallinfo2's count of mmapped blocks went up), i.e. whether it goes back to the OS when freed.
_PROBE = """
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from livecart.runtime.pipeline import tune_malloc
    assert tune_malloc()
big = bytearray(20 << 20)
del big
before = libc.mallinfo2().hblks
block = bytearray(3 << 20)
print(libc.mallinfo2().hblks > before)
"""


def _mmapped(mode: str) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own settings only
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return out.stdout.strip() == "True"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                    reason="glibc's malloc only")
def test_tune_malloc_keeps_large_blocks_returnable_after_a_large_free() -> None:
    assert not _mmapped("default")  # glibc's own behaviour: the 20 MB free raised the threshold
    assert _mmapped("tuned")

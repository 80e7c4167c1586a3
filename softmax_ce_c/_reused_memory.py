"""New N x K arrays (gradients, softmax, log_softmax) on memory that earlier results let go of.

A large np.empty gets fresh pages from the operating system every time (glibc maps anything of 32 MiB
or more on its own and unmaps it when freed), and the kernel zeroes each page when it is first
written: a whole extra pass over the array, measured at 1024x32000 float32 as 6-9 ms, more than half
of the fused pass on one thread. A training loop drops last step's gradient and asks for one of the
same size, so the memory of a released result is kept here for the next call that needs exactly
that many bytes, as PyTorch's CUDA caching allocator does. At most KEPT blocks are kept, and a call
that finds none of its size frees them before allocating; release_cached_memory() frees them too.
"""
import collections

import numpy as np

MIN_BYTES = 1 << 22  # where NumPy starts asking for huge pages: below it, page faults are a small cost
KEPT = 2  # a loop that keeps last step's result until the new one is assigned needs two blocks
_ALIGNMENT = 64  # a cache line: the kernel's streaming stores start at the first whole line
_released = collections.deque(maxlen=KEPT)  # deque appends and pops are atomic: no lock needed


class _Lease:
    """The base of one array handed out: exposes a block through __array_interface__, and returns
    it to the kept blocks when the last view of the array is gone."""

    __slots__ = ("block", "__array_interface__")

    def __init__(self, block):
        self.block = block
        self.__array_interface__ = block.__array_interface__

    def __del__(self, released=_released):  # bound now: module globals may be gone at exit
        released.append(self.block)


def empty_like(array):
    """np.empty_like(array) for a C-contiguous array, on kept memory when the array is large."""
    n_bytes = array.nbytes
    if n_bytes < MIN_BYTES:
        return np.empty_like(array)
    block = _take(n_bytes)
    return np.asarray(_Lease(block)).view(array.dtype).reshape(array.shape)


def _take(n_bytes):
    """A kept block of n_bytes, else a new one; the kept blocks of other sizes are freed."""
    while _released:
        try:
            block = _released.popleft()
        except IndexError:  # another thread took the last one
            break
        if block.nbytes == n_bytes:
            return block
    raw = np.empty(n_bytes + _ALIGNMENT - 1, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start:start + n_bytes]


def release_cached_memory():
    """Frees the memory kept from released results (see softmax_ce_c._reused_memory)."""
    _released.clear()

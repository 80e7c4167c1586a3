"""New arrays on memory that earlier ones let go of: N x K results (gradients, softmax, log_softmax),
and the per-call work arrays of N rows (the private class indices, the row losses).

A large np.empty gets fresh pages from the operating system every time (glibc maps anything of 32 MiB
or more on its own and unmaps it when freed), and the kernel zeroes each page when it is first
written: a whole extra pass over the array, measured at 1024x32000 float32 as 6-9 ms, more than half
of the fused pass on one thread. A training loop drops last step's gradient and asks for one of the
same size, so the memory of a released result is kept here for the next call that needs exactly
that many bytes, as PyTorch's CUDA caching allocator does. At most RESULTS_KEPT blocks are kept, and
a call that finds none of its size frees them before allocating; release_cached_memory() frees them
too. Smaller blocks fault as well: two work arrays of 512 KB (65536 rows), freed at the top of
glibc's heap, were trimmed off it after every call, and the next call faulted their 256 pages back
in (65536x2 float32: 45% of the call); 8 MB ones (a million rows) are mapped and unmapped every
call (1048576x10 float32: 25%). Work arrays from WORK_MIN_BYTES to WORK_MAX_BYTES are kept too,
given back by the call that used them (work_array, give_back): at most WORK_KEPT of
them, so that small calls, which never take one, hold on to at most 64 MiB.
"""
import collections
import math

import numpy as np

MIN_BYTES = 1 << 22  # results: where NumPy starts asking for huge pages, and page faults start to cost
WORK_MIN_BYTES = 1 << 16  # work arrays: below it the bookkeeping costs more than the faults it may save
WORK_MAX_BYTES = 1 << 24  # 2 million rows: a call that large spends little of its time on the faults
RESULTS_KEPT = 2  # a loop that keeps last step's result until the new one is assigned needs two blocks
WORK_KEPT = 4  # a call's indices and row losses (and z-losses), and the next call's as they are made
_ALIGNMENT = 64  # a cache line: the kernel's streaming stores start at the first whole line


class _Lease:
    """The base of one array handed out: exposes a block through __array_interface__, and returns
    it to the kept blocks when the last view of the array is gone."""

    __slots__ = ("block", "released", "__array_interface__")

    def __init__(self, block, released):
        self.block, self.released = block, released
        self.__array_interface__ = block.__array_interface__

    def __del__(self):
        self.released.append(self.block)  # deque appends and pops are atomic: no lock needed


class _KeptBlocks:
    """At most `kept` released blocks, the oldest dropped (freed) first."""

    def __init__(self, kept):
        self.released = collections.deque(maxlen=kept)

    def take(self, n_bytes):
        """A kept block of n_bytes, else a new one; the kept blocks of other sizes are freed."""
        while self.released:
            try:
                block = self.released.popleft()
            except IndexError:  # another thread took the last one
                break
            if block.nbytes == n_bytes:
                return block
        raw = np.empty(n_bytes + _ALIGNMENT - 1, np.uint8)
        start = -raw.ctypes.data % _ALIGNMENT
        return raw[start:start + n_bytes]


_results = _KeptBlocks(RESULTS_KEPT)
_work = _KeptBlocks(WORK_KEPT)


def empty_like(array):
    """np.empty_like(array) for a C-contiguous array (a result), on kept memory when it is large: its
    block is kept again when the last view of the result is gone."""
    if array.nbytes < MIN_BYTES:
        return np.empty_like(array)
    lease = _Lease(_results.take(array.nbytes), _results.released)
    return np.asarray(lease).view(array.dtype).reshape(array.shape)


def work_array(shape, dtype):
    """np.empty(shape, dtype) (shape a tuple) for an array one call uses, on kept memory when it is
    large; give_back(array) once the call is done with it. (An array not given back is freed.)"""
    dtype = np.dtype(dtype)
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes < WORK_MIN_BYTES:
        return np.empty(shape, dtype)
    return _work.take(n_bytes).view(dtype).reshape(shape)


def give_back(*arrays):
    """Keeps the memory of work arrays (None passes) for the next call's."""
    for array in arrays:
        if array is not None and WORK_MIN_BYTES <= array.nbytes <= WORK_MAX_BYTES:
            _work.released.append(array.reshape(-1).view(np.uint8))  # a deque append is atomic


def release_cached_memory():
    """Frees the memory kept from released results and work arrays (see softmax_ce_c._reused_memory)."""
    _results.released.clear()
    _work.released.clear()

"""Memory stays flat: many calls, small and large, successful and failing, do not grow the resident
set (Linux: /proc/self/status), and release_cached_memory gives what is kept back to the system.

How growth is measured: a warm-up of the same calls first (NumPy's and pymalloc's free lists, glibc's
arenas and its mmap threshold, the thread pool's stacks all settle there), then the RSS after the
loop is compared with the RSS before it, and the peak during the loop (VmHWM, reset through
/proc/self/clear_refs where the kernel allows it) with what one call needs. The slack is a few MiB:
pymalloc gets memory in 1 MiB arenas and glibc may keep a few freed chunks of the size the loop uses,
so a single unlucky allocation can move the RSS by a MiB or a few large arrays; a leak of even one
allocation per call adds far more over these loop lengths (each test says how much).

They run once, with the default instruction set (about 8 s): what allocates (the Python layer, the
kernel's work space, the thread pool) is the same source for every instruction set (the work space
is malloc'd and freed by the one template function compiled per set, at the same place for each);
the sets differ only in arithmetic, which allocates nothing.
"""
import gc
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import softmax_ce_c
from conftest import DEFAULT_ISA

MiB = 2**20
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")


@pytest.fixture(autouse=True)
def default_isa_only(isa):
    if isa != DEFAULT_ISA:
        pytest.skip("allocation does not depend on the instruction set: run once, with the default")


def status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise KeyError(field)


def reset_peak():
    """Resets VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure(run, calls, warm_up):
    """(RSS growth over `calls` calls of run, peak RSS above the start or None), after a warm-up."""
    for _ in range(warm_up):
        run()
    gc.collect()
    start = status_bytes("VmRSS")
    peak_known = reset_peak()
    for _ in range(calls):
        run()
    gc.collect()
    growth = status_bytes("VmRSS") - start
    return growth, (status_bytes("VmHWM") - start if peak_known else None)


def assert_flat(run, calls, warm_up, slack, peak_allowance):
    growth, peak = measure(run, calls, warm_up)
    assert growth <= slack, f"RSS grew by {growth / MiB:.1f} MiB over {calls} calls"
    if peak is not None:
        assert peak <= peak_allowance + slack, f"peak RSS {peak / MiB:.1f} MiB above the start"


def problem(n_rows, n_classes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_rows, n_classes)).astype(dtype), rng.integers(0, n_classes, n_rows)


def test_many_small_calls():
    """100,000 calls of 64 x 10: a leak of 32 bytes a call would add 3 MiB."""
    x, y = problem(64, 10)
    weight = np.linspace(0.5, 2.0, 10)

    def run():
        softmax_ce_c.softmax_cross_entropy(x, y, weight=weight, label_smoothing=0.1, z_loss=1e-4, num_threads=2)
        softmax_ce_c.cross_entropy(x, y, reduction="none")

    assert_flat(run, calls=50_000, warm_up=2_000, slack=2 * MiB, peak_allowance=0)


def test_many_small_row_function_calls():
    x = problem(64, 10)[0]

    def run():
        softmax_ce_c.softmax(x)
        softmax_ce_c.log_softmax(x, axis=0)
        softmax_ce_c.logsumexp(x)

    assert_flat(run, calls=20_000, warm_up=1_000, slack=2 * MiB, peak_allowance=0)


def test_many_large_calls():
    """1000 x 1000 float32 (4 MB a gradient): leaking the gradient would add 1.2 GB, the work
    space (16 KB a thread) 10 MiB over the in-place calls (which allocate no gradient)."""
    x, y = problem(1000, 1000)
    scratch = x.copy()
    gradient = x.nbytes

    def allocating():
        softmax_ce_c.softmax_cross_entropy(x, y, num_threads=2, label_smoothing=0.1)

    def in_place():
        np.copyto(scratch, x)
        softmax_ce_c.softmax_cross_entropy(scratch, y, num_threads=2, inplace=True)

    # two gradients may be alive at once: the result of the last call and of the current one
    assert_flat(allocating, calls=300, warm_up=20, slack=4 * gradient, peak_allowance=2 * gradient)
    assert_flat(in_place, calls=300, warm_up=20, slack=4 * MiB, peak_allowance=0)
    assert_flat(lambda: softmax_ce_c.softmax(x), calls=100, warm_up=10, slack=4 * gradient,
                peak_allowance=2 * gradient)


def test_failing_calls_do_not_leak():
    """Calls that fail in the kernel (a target out of range in the last row, found after the gradient
    array was allocated) or in the checks (after a layout copy of the logits was made)."""
    x, y = problem(1000, 1000)
    bad_target = y.copy()
    bad_target[-1] = 1000
    fortran = np.asfortranarray(x)
    small_x, small_y = problem(64, 10)
    small_bad = small_y.copy()
    small_bad[-1] = -5

    def expect_error(call, error):
        try:
            call()
        except error:
            return
        raise AssertionError("no error")

    def large():
        expect_error(lambda: softmax_ce_c.softmax_cross_entropy(x, bad_target, num_threads=2), IndexError)
        expect_error(lambda: softmax_ce_c.softmax_cross_entropy(fortran, y, label_smoothing=2.0), ValueError)

    def small():
        expect_error(lambda: softmax_ce_c.softmax_cross_entropy(small_x, small_bad), IndexError)
        expect_error(lambda: softmax_ce_c.cross_entropy(small_x, small_y, reduction="avg"), ValueError)
        expect_error(lambda: softmax_ce_c.softmax(small_x.astype(object)), TypeError)

    assert_flat(large, calls=200, warm_up=10, slack=4 * x.nbytes, peak_allowance=2 * x.nbytes)
    assert_flat(small, calls=20_000, warm_up=1_000, slack=2 * MiB, peak_allowance=0)


def test_rejected_dtypes_are_not_kept():
    """Calls with ever new dtypes that are rejected (records, strings) keep nothing of them: a cache of
    dtype names kept each one (about 600 bytes a record dtype)."""
    fields = itertools.count()

    def rejected():
        with pytest.raises(TypeError):
            softmax_ce_c.softmax(np.zeros(2, [(f"field_{next(fields)}", np.float32)]))
        with pytest.raises(TypeError):
            softmax_ce_c.logsumexp(np.zeros(2, f"S{next(fields) % 100_000 + 1}"))

    assert_flat(rejected, calls=20_000, warm_up=1_000, slack=2 * MiB, peak_allowance=0)


RELEASE_IN_A_FRESH_PROCESS = """
import gc, sys
import numpy as np
import softmax_ce_c
sys.path.insert(0, sys.argv[1])
from test_resources import status_bytes
softmax_ce_c.softmax(np.zeros((10_000, 1_000), np.float32))  # released at once, its memory kept
gc.collect()
kept = status_bytes("VmRSS")
softmax_ce_c.release_cached_memory()
print(kept - status_bytes("VmRSS"))
"""


def test_release_cached_memory_returns_it_to_the_system():
    """40 MB: glibc maps an array this large on its own and unmaps it when freed, unless a free part
    of its heap is that large, as the tests before can leave it: so in a fresh process."""
    tests = os.path.dirname(__file__)
    package_parent = os.path.dirname(os.path.dirname(softmax_ce_c.__file__))  # the one under test
    result = subprocess.run([sys.executable, "-c", RELEASE_IN_A_FRESH_PROCESS, tests], capture_output=True,
                            text=True, check=True, cwd=tests, env=dict(os.environ, PYTHONPATH=package_parent))
    assert int(result.stdout) >= 30 * MiB

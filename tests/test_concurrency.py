"""Concurrency beyond test_threads.py: many Python threads calling every function at once, with
different shapes, dtypes, options, out= / inplace=True and thread counts, get bitwise their serial
results (README: results do not depend on the thread count, and the kernel has no shared state but
the instruction set and the pool); and calls made while another large call keeps the pool busy, or
from a process forked meanwhile, finish: a deadlock fails by a timeout instead of hanging the run."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import softmax_ce_c
from conftest import DEFAULT_ISA
from fuzz_cases import build_inputs, draw_case, dtype_of

N_PYTHON_THREADS = 8
TIMEOUT = 120  # seconds; the scenarios take a few


def large_cases():
    """Calls big enough to be shared out to the pool (two chunks of 32K logits or more)."""
    rng = np.random.default_rng(7)
    cases = []
    for (n_rows, n_classes), dtype, options in [
        ((2000, 300), "float32", {}),
        ((300, 5000), "float64", {"label_smoothing": 0.1, "weight": rng.uniform(0.5, 2, 5000)}),
        ((64, 32000), "bfloat16" if _has_bfloat16() else "float16", {"z_loss": 1e-3, "softcap": 20.0}),
        ((8192, 33), "float16", {"ignore_index": 3}),
    ]:
        x = (3 * rng.standard_normal((n_rows, n_classes))).astype(dtype_of(dtype))
        cases.append((x, rng.integers(0, n_classes, n_rows), options))
    return cases


def _has_bfloat16():
    try:
        import ml_dtypes  # noqa: F401
        return True
    except ImportError:
        return False


def small_cases(count):
    cases = []
    for seed in range(count):
        case = draw_case(seed)
        if case["dtype"] == "bfloat16" and not _has_bfloat16():
            continue
        logits, target, options, grad_scale = build_inputs(case)
        native = np.array(logits, dtype=logits.dtype.newbyteorder("="), order="C")  # inplace needs these
        cases.append((native, target, dict(options, axis=case["axis"],
                                                                   reduction=case["reduction"],
                                                                   grad_scale=grad_scale)))
    return cases


def run(kind, x, target, options, num_threads):
    """One call of the given kind; returns its results as a tuple of arrays."""
    if kind == "row":
        axis = options.get("axis", -1)
        return tuple(f(x, axis=axis) for f in (softmax_ce_c.logsumexp, softmax_ce_c.log_softmax,
                                                 softmax_ce_c.softmax))
    with np.errstate(over="ignore"):  # +inf losses of huge logits warn in the package's cast
        if kind == "loss only":
            options = {k: v for k, v in options.items() if k != "grad_scale"}
            return (softmax_ce_c.cross_entropy(x, target, num_threads=num_threads, **options),)
        if kind == "out":
            out = np.empty(x.shape, x.dtype)
            loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, out=out, num_threads=num_threads, **options)
            return loss, out
        if kind == "inplace":
            scratch = x.copy()
            loss, grad = softmax_ce_c.softmax_cross_entropy(scratch, target, inplace=True, num_threads=num_threads,
                                                            **options)
            return loss, scratch
        return softmax_ce_c.softmax_cross_entropy(x, target, num_threads=num_threads, **options)


def same(a, b):
    """Bitwise the same results (NaN payloads and signs of zero included)."""
    def key(r):
        r = np.asarray(r)
        return r.dtype, r.shape, r.tobytes()
    return len(a) == len(b) and all(key(p) == key(q) for p, q in zip(a, b))


def test_many_python_threads_get_their_serial_results():
    kinds = ["allocate", "loss only", "out", "inplace", "row"]
    cases = [(x, t, o) for x, t, o in large_cases()] + small_cases(60)
    calls = [(i, kinds[i % len(kinds)], [None, 1, 2, 3][i % 4]) for i in range(len(cases))]
    serial = {i: run(kind, *cases[i], 1) for i, kind, _ in calls}
    failures = []

    def worker(offset):
        for _ in range(3):
            for i, kind, num_threads in calls[offset:] + calls[:offset]:  # each thread starts elsewhere
                try:
                    if not same(run(kind, *cases[i], num_threads), serial[i]):
                        failures.append((i, kind, num_threads))
                except Exception as error:  # a thread's exception would otherwise be lost
                    failures.append((i, kind, num_threads, repr(error)))

    threads = [threading.Thread(target=worker, args=(k * len(calls) // N_PYTHON_THREADS,), daemon=True)
               for k in range(N_PYTHON_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), f"threads still running after {TIMEOUT} s"
    assert not failures, f"{len(failures)} concurrent calls differ from the serial ones, e.g. {failures[:5]}"


# Run in a child process, so that a deadlock is a timeout there, not a hung test run. While one
# thread keeps the pool busy with large calls, other threads make calls of every size, and the main
# thread forks children that make pool calls of their own (a child must not inherit a held lock).
SCENARIO = textwrap.dedent("""
    import os, sys, threading, time
    import numpy as np
    import softmax_ce_c

    rng = np.random.default_rng(0)
    big = rng.standard_normal((2048, 16000)).astype(np.float32)
    big_target = rng.integers(0, 16000, 2048)
    medium = rng.standard_normal((512, 1000))
    medium_target = rng.integers(0, 1000, 512)
    small = rng.standard_normal((64, 10)).astype(np.float32)
    small_target = rng.integers(0, 10, 64)
    want_big = softmax_ce_c.softmax_cross_entropy(big, big_target, num_threads=1)
    want_medium = softmax_ce_c.softmax_cross_entropy(medium, medium_target, num_threads=1)
    want_small = softmax_ce_c.cross_entropy(small, small_target, num_threads=1)
    busy = threading.Event()
    done = threading.Event()
    errors = []

    def check(got, want, name):
        if not all(np.array_equal(g, w) for g, w in zip(np.atleast_1d(got), np.atleast_1d(want))):
            errors.append(name)

    def large_calls():
        while not done.is_set():
            loss, grad = softmax_ce_c.softmax_cross_entropy(big, big_target, num_threads=2)
            busy.set()
            check((loss, grad), want_big, "big")

    def other_calls(n_threads):
        busy.wait()
        for _ in range(40):
            loss, grad = softmax_ce_c.softmax_cross_entropy(medium, medium_target, num_threads=n_threads)
            check((loss, grad), want_medium, "medium")
            check(softmax_ce_c.cross_entropy(small, small_target, num_threads=n_threads), want_small, "small")
            softmax_ce_c.softmax(small)

    threads = [threading.Thread(target=large_calls)]
    threads += [threading.Thread(target=other_calls, args=(n,)) for n in (None, 1, 2, 3)]
    for thread in threads:
        thread.start()
    busy.wait()
    children = []
    for _ in range(3 if hasattr(os, "fork") else 0):
        pid = os.fork()
        if pid == 0:  # the child: its own pool, whatever the parent's threads were doing
            loss = softmax_ce_c.cross_entropy(medium, medium_target, num_threads=2)
            os._exit(0 if loss == want_medium[0] else 3)
        children.append(pid)
        time.sleep(0.05)
    for thread in threads[1:]:
        thread.join()
    done.set()
    threads[0].join()
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    if errors or any(statuses):
        print("errors", errors[:5], "child statuses", statuses)
        sys.exit(1)
    print("ok")
""")


def test_calls_while_the_pool_is_busy_finish(isa):
    if isa != DEFAULT_ISA:
        pytest.skip("the pool does not depend on the instruction set: run once")
    package_parent = os.path.dirname(os.path.dirname(softmax_ce_c.__file__))
    environment = dict(os.environ, PYTHONPATH=package_parent)
    environment.pop("SOFTMAX_CE_C_NUM_THREADS", None)
    try:
        # from tests/: the source tree must not shadow the package under test (as test_dispatch)
        result = subprocess.run([sys.executable, "-c", SCENARIO], env=environment, capture_output=True, text=True,
                                timeout=TIMEOUT, cwd=os.path.dirname(__file__))
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: the scenario did not finish in {TIMEOUT} s")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


# The kernel checks every class index, then reads them again; a target another thread changes in
# between (the GIL is released) must not slip past the check: the kernel copies the targets as it
# checks them (on two threads, while the worker wakes), and reads only the copy after. Without a copy
# on the shortcut for plain calls, this crashed the interpreter within a few calls.
TARGETS_CHANGED_MEANWHILE = textwrap.dedent("""
    import threading
    import numpy as np
    import softmax_ce_c
    n_rows, n_classes = 100_000, 64
    x = np.zeros((n_rows, n_classes), np.float32)
    y = np.zeros(n_rows, np.int64)
    done = threading.Event()
    def change_targets():
        while not done.is_set():
            y[n_rows // 2:] = 1 << 40
            y[n_rows // 2:] = 0
    changer = threading.Thread(target=change_targets)
    changer.start()
    for call in range(100):
        for function in (softmax_ce_c.cross_entropy, softmax_ce_c.softmax_cross_entropy):
            try:
                function(x, y, num_threads=1 + call % 2, reduction="sum")
            except IndexError:
                pass
    done.set()
    changer.join()
    print("ok")
""")


def test_targets_changed_by_another_thread_during_a_call_cannot_crash_it(isa):
    if isa != DEFAULT_ISA:
        pytest.skip("the target copy does not depend on the instruction set: run once")
    package_parent = os.path.dirname(os.path.dirname(softmax_ce_c.__file__))
    result = subprocess.run([sys.executable, "-c", TARGETS_CHANGED_MEANWHILE],
                            env=dict(os.environ, PYTHONPATH=package_parent), capture_output=True, text=True,
                            timeout=TIMEOUT, cwd=os.path.dirname(__file__))
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])

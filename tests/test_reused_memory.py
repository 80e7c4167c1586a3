"""Large results reuse the memory of released ones (softmax_ce_c._reused_memory): never memory that
is still in use, always with the values a fresh array gets (release_cached_memory returning it to
the system is a memory test: test_resources.py)."""
import threading

import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c import _reused_memory

N_CLASSES = 1000


@pytest.fixture(autouse=True)
def nothing_kept():
    softmax_ce_c.release_cached_memory()
    yield
    softmax_ce_c.release_cached_memory()


def address(array):
    return array.__array_interface__["data"][0]


def problem(dtype=np.float32, seed=0):
    """Logits 10% above the size where memory is kept, and class targets."""
    n_rows = int(1.1 * _reused_memory.MIN_BYTES) // (N_CLASSES * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_rows, N_CLASSES)).astype(dtype), rng.integers(0, N_CLASSES, n_rows)


def fresh_gradient(x, y, **options):
    out = np.full_like(x, np.nan)
    return softmax_ce_c.softmax_cross_entropy(x, y, out=out, **options)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_released_gradient_memory_is_reused_with_the_right_values(dtype):
    x, y = problem(np.dtype(dtype))
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, num_threads=2)
    first = address(grad)
    grad[...] = 7  # whatever the last user left there must not leak into the next result
    del grad
    x2, y2 = problem(np.dtype(dtype), seed=1)
    loss2, grad2 = softmax_ce_c.softmax_cross_entropy(x2, y2, label_smoothing=0.1, num_threads=2)
    assert address(grad2) == first
    expected_loss, expected = fresh_gradient(x2, y2, label_smoothing=0.1, num_threads=2)
    assert loss2 == expected_loss
    np.testing.assert_array_equal(grad2, expected)
    assert grad2.flags.c_contiguous and grad2.flags.writeable and grad2.dtype == x.dtype


def test_memory_in_use_is_never_handed_out():
    """Results alive (or any view of one) keep their memory: a loop that holds last step's gradient
    while asking for the next alternates between two blocks."""
    x, y = problem()
    _, held = softmax_ce_c.softmax_cross_entropy(x, y)
    _, other = softmax_ce_c.softmax_cross_entropy(x, y)
    view = other[3:5, ::2]
    del other
    addresses = {address(held), address(view) - 3 * x.strides[0]}
    assert len(addresses) == 2
    for step in range(6):
        _, grad = softmax_ce_c.softmax_cross_entropy(x, y)
        assert not np.shares_memory(grad, held) and not np.shares_memory(grad, view)
        held = grad  # the previous one is released only now
    del view
    np.testing.assert_array_equal(held, fresh_gradient(x, y)[1])


def test_row_functions_and_other_layouts_reuse_memory_too():
    x, y = problem()
    expected_softmax = softmax_ce_c.softmax(x)
    start = address(expected_softmax)
    expected_softmax = expected_softmax.copy()  # releases the first result
    expected_log_softmax = softmax_ce_c.log_softmax(x).copy()
    again = softmax_ce_c.softmax(x)
    assert address(again) == start
    np.testing.assert_array_equal(again, expected_softmax)
    del again
    log_p = softmax_ce_c.log_softmax(x)
    assert address(log_p) == start
    np.testing.assert_array_equal(log_p, expected_log_softmax)
    del log_p
    # the class axis first: the rows are a copy; the gradient is a kept block, seen transposed
    grad = softmax_ce_c.softmax_cross_entropy(np.ascontiguousarray(x.T), y, axis=0)[1]
    np.testing.assert_array_equal(grad, fresh_gradient(x, y)[1].T)


def test_a_different_size_frees_the_kept_blocks():
    x, y = problem()
    softmax_ce_c.softmax_cross_entropy(x, y)  # released at once
    assert len(_reused_memory._results.released) == 1
    smaller = x[:-10]  # still above the size
    grad = softmax_ce_c.softmax_cross_entropy(smaller, y[:-10])[1]
    assert len(_reused_memory._results.released) == 0
    np.testing.assert_array_equal(grad, fresh_gradient(smaller, y[:-10])[1])


def test_small_results_are_plain_numpy_arrays():
    x, y = problem()
    grad = softmax_ce_c.softmax_cross_entropy(x[:10], y[:10])[1]
    assert grad.base is None
    del grad
    assert len(_reused_memory._results.released) == 0


def test_threads_calling_at_once_get_their_own_memory():
    x, y = problem()
    expected = fresh_gradient(x, y, num_threads=1)[1]
    failures = []

    def worker():
        held = []
        for _ in range(20):
            grad = softmax_ce_c.softmax_cross_entropy(x, y, num_threads=1)[1]
            if not np.array_equal(grad, expected):
                failures.append("wrong values")
            grad[...] = -1  # a block shared with another thread would show this
            held = held[-1:] + [grad]
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def work_problem(n_classes, seed=0, rows_above=2.0):
    """Class targets of rows_above times the rows where work arrays (8 bytes a row) are kept."""
    n_rows = int(rows_above * _reused_memory.WORK_MIN_BYTES) // 8
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_rows, n_classes)).astype(np.float32), rng.integers(0, n_classes, n_rows)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}])
def test_work_arrays_are_kept_and_reused_with_the_right_results(options):
    """A call's private class indices and row losses (and z-losses) go back to the kept blocks after
    the call; the next call of that many rows runs on them, and its answers are a fresh call's."""
    x, y = work_problem(3)
    first = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", **options)
    kept = {address(block) for block in _reused_memory._work.released}
    assert len(kept) == (3 if "z_loss" in options else 2)
    x2, y2 = work_problem(3, seed=1)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x2, y2, reduction="none", **options)
    assert {address(block) for block in _reused_memory._work.released} == kept
    softmax_ce_c.release_cached_memory()  # fresh arrays now
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x2, y2, reduction="none", **options)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)
    del first


def test_small_and_huge_calls_keep_no_work_arrays():
    """Below WORK_MIN_BYTES a call takes plain arrays; above WORK_MAX_BYTES it frees its own."""
    for rows_above in (0.5, 1.1 * _reused_memory.WORK_MAX_BYTES / _reused_memory.WORK_MIN_BYTES):
        x, y = work_problem(1, rows_above=rows_above)
        softmax_ce_c.softmax_cross_entropy(x, y)
        softmax_ce_c.cross_entropy(x, y, label_smoothing=0.1)
        assert len(_reused_memory._work.released) == 0


def test_threads_calling_at_once_get_their_own_work_arrays():
    x, y = work_problem(3)
    expected = softmax_ce_c.cross_entropy(x, y, reduction="none", num_threads=1)
    failures = []

    options = dict(reduction="none", num_threads=1)
    general = dict(options, z_loss=1e-3)  # the general path: a third work array, the z-losses
    expected_general = softmax_ce_c.cross_entropy(x, y, **general)

    def worker(seed):
        y_own = np.random.default_rng(seed).integers(0, 3, len(y))
        want, want_general = softmax_ce_c.cross_entropy(x, y_own, **options), softmax_ce_c.cross_entropy(x, y_own, **general)
        for _ in range(20):
            for targets, answer, kind in ((y, expected, options), (y_own, want, options),
                                          (y, expected_general, general), (y_own, want_general, general)):
                if not np.array_equal(softmax_ce_c.cross_entropy(x, targets, **kind), answer):
                    failures.append("wrong values")
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

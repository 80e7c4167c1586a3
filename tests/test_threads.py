"""Threads: the rows are shared out to a persistent pool; results are bitwise the same for every
thread count, concurrent callers get their serial results, and a forked child works."""
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import softmax_ce_c
from helpers import make_index_target, make_logits, make_prob_target

SHAPES = [(4096, 100), (300, 1000), (7, 40000), (20000, 10), (20000, 3)]
OPTIONS = dict(label_smoothing=0.1, z_loss=1e-3, softcap=20.0)


def problem(shape, seed=0, values="special"):
    rng = np.random.default_rng(seed)
    return make_logits(rng, shape, np.float32, values), make_index_target(rng, shape[0], shape[1])


@pytest.mark.parametrize("options", [{}, OPTIONS], ids=["plain", "options"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_thread_count_gives_bitwise_the_same_answer(shape, options):
    x, y = problem(shape)
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", num_threads=1, **options)
    for n_threads in range(2, 9):
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", num_threads=n_threads, **options)
        assert np.array_equal(loss, want_loss, equal_nan=True) and np.array_equal(grad, want_grad, equal_nan=True)
        # over the logits: a thread writes its rows' gradient while the next reads its own rows' logits (that no
        # read reaches past its rows, where the few-classes loads could, is for the TSan suite to catch)
        in_place = x.copy()
        softmax_ce_c.softmax_cross_entropy(in_place, y, reduction="none", num_threads=n_threads, inplace=True,
                                           **options)
        assert np.array_equal(in_place, want_grad, equal_nan=True)
        mean = softmax_ce_c.cross_entropy(x, y, num_threads=n_threads, **options)
        assert np.array_equal(mean, softmax_ce_c.cross_entropy(x, y, num_threads=1, **options), equal_nan=True)


SPLIT_SHAPES = [(1, 70000), (3, 65537), (2, 32769)]  # fewer rows than threads: the classes are shared out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SPLIT_SHAPES)
def test_sharing_out_the_classes_of_a_row_gives_bitwise_the_same_answer(shape, dtype):
    rng = np.random.default_rng(1)
    x = make_logits(rng, shape, dtype, "special")
    index = make_index_target(rng, shape[0], shape[1])
    index[-1] = 7  # ignored below
    weight = rng.uniform(0.5, 2.0, shape[1])
    cases = [({}, index), (dict(OPTIONS, weight=weight, ignore_index=7), index),
             (dict(label_smoothing=0.2, softcap=5.0), make_prob_target(rng, shape, dtype))]
    for options, target in cases:
        want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none", num_threads=1,
                                                                  **options)
        for n_threads in range(2, 9):
            loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none", num_threads=n_threads,
                                                            **options)
            assert np.array_equal(loss, want_loss, equal_nan=True) and np.array_equal(grad, want_grad, equal_nan=True)
            in_place = x.copy()
            softmax_ce_c.softmax_cross_entropy(in_place, target, reduction="none", num_threads=n_threads,
                                               inplace=True, **options)
            assert np.array_equal(in_place, want_grad, equal_nan=True)
            mean = softmax_ce_c.cross_entropy(x, target, num_threads=n_threads, **options)
            assert np.array_equal(mean, softmax_ce_c.cross_entropy(x, target, num_threads=1, **options), equal_nan=True)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("shape", SPLIT_SHAPES + [(2, 32795)])  # the last: its last pair of blocks cut short
def test_label_smoothing_gives_the_same_answer_when_a_rows_classes_are_shared_out(shape, dtype_name):
    """Without a softcap the row path of float32 and bfloat16 takes label smoothing's sum
    sum_k w_k (max - x_k) in its exp pass, the split path in a pass of its own (smoothing_distance.h),
    the same sums in the same order: finite logits, so that the losses show them. The exp pass reads
    weights that are all floats exactly as floats, the split path as doubles; zero weights add nothing."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if dtype_name == "bfloat16" else np.dtype(dtype_name)
    rng = np.random.default_rng(3)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    index = make_index_target(rng, shape[0], shape[1])
    weight = rng.uniform(0.0, 2.0, shape[1])
    weight[5::7] = 0.0
    float_weight = weight.astype(np.float32)
    assert not np.array_equal(float_weight, weight)
    one_not_float = float_weight.astype(np.float64)
    one_not_float[1] = 0.1  # the others floats exactly: the call reads the doubles
    for options in (dict(label_smoothing=0.1), dict(label_smoothing=0.1, weight=weight),
                    dict(label_smoothing=0.1, weight=float_weight), dict(label_smoothing=0.1, weight=one_not_float)):
        want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, index, reduction="none", num_threads=1,
                                                                  **options)
        assert np.all(np.isfinite(want_loss))
        for n_threads in (3, 8):
            loss, grad = softmax_ce_c.softmax_cross_entropy(x, index, reduction="none", num_threads=n_threads,
                                                            **options)
            assert np.array_equal(loss, want_loss) and np.array_equal(grad, want_grad)


@pytest.mark.parametrize("function", [softmax_ce_c.softmax, softmax_ce_c.log_softmax, softmax_ce_c.logsumexp])
@pytest.mark.parametrize("shape", [(4096, 100), (20000, 10), (3, 40000)])
def test_row_functions_give_bitwise_the_same_answer_on_every_thread_count(function, shape):
    x, _ = problem(shape)
    want = function(x, num_threads=1)
    for n_threads in range(2, 9):
        assert np.array_equal(function(x, num_threads=n_threads), want, equal_nan=True)
    assert np.array_equal(function(x), want, equal_nan=True)


def test_concurrent_callers_get_their_serial_answers():
    cases = [(shape, seed, n_threads) for seed, shape in enumerate(SHAPES * 3) for n_threads in (1, 2, 3)]
    inputs = {(shape, seed): problem(shape, seed) for shape, seed, _ in cases}
    serial = {key: softmax_ce_c.softmax_cross_entropy(*inputs[key], reduction="none", num_threads=1)
              for key in inputs}

    def run(case):
        shape, seed, n_threads = case
        return softmax_ce_c.softmax_cross_entropy(*inputs[shape, seed], reduction="none", num_threads=n_threads)

    with ThreadPoolExecutor(max_workers=6) as executor:
        for case, (loss, grad) in zip(cases, executor.map(run, cases)):
            want_loss, want_grad = serial[case[:2]]
            assert np.array_equal(loss, want_loss, equal_nan=True) and np.array_equal(grad, want_grad, equal_nan=True)


def loss_in_child(shape):
    x, y = problem(shape, values="normal")
    return softmax_ce_c.cross_entropy(x, y, reduction="sum", num_threads=2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_computes_after_the_parent_used_the_pool():
    x, y = problem(SHAPES[0], values="normal")
    want = softmax_ce_c.cross_entropy(x, y, reduction="sum", num_threads=2)  # the pool is running now
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(loss_in_child, [SHAPES[0]] * 4, chunksize=1) == [want] * 4


@pytest.mark.parametrize("num_threads, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                                (True, TypeError), ("2", TypeError)])
def test_bad_thread_counts(num_threads, error):
    x, y = problem((4, 5))
    for function in (softmax_ce_c.softmax_cross_entropy, softmax_ce_c.cross_entropy):
        with pytest.raises(error, match="num_threads must be a positive integer"):
            function(x, y, num_threads=num_threads)
    for function in (softmax_ce_c.softmax, softmax_ce_c.log_softmax, softmax_ce_c.logsumexp):
        with pytest.raises(error, match="num_threads must be a positive integer"):
            function(x, num_threads=num_threads)


def test_thread_count_from_the_environment(monkeypatch):
    x, y = problem(SHAPES[1], values="normal")
    want = softmax_ce_c.softmax_cross_entropy(x, y, num_threads=1)
    monkeypatch.setenv("SOFTMAX_CE_C_NUM_THREADS", "3")
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y)
    assert loss == want[0] and np.array_equal(grad, want[1])
    monkeypatch.setenv("SOFTMAX_CE_C_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="SOFTMAX_CE_C_NUM_THREADS must be a positive integer"):
        softmax_ce_c.cross_entropy(x, y)


def test_thread_count_from_a_replaced_environment(monkeypatch):
    """os.environ replaced by a plain mapping (as unittest.mock.patch may do) is still the one read."""
    x, y = problem(SHAPES[1], values="normal")
    monkeypatch.setattr(os, "environ", {"SOFTMAX_CE_C_NUM_THREADS": "zero"})
    with pytest.raises(ValueError, match="SOFTMAX_CE_C_NUM_THREADS must be a positive integer"):
        softmax_ce_c.cross_entropy(x, y)

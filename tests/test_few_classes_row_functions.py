"""logsumexp, log_softmax and softmax of rows of few classes (48; float32 72, or 88 on AVX-512),
which the kernel takes 32 rows (float64: 16) at a time across vector lanes: partial last groups,
special values in some rows of a group, a row's result independent of the rows grouped with it,
every thread count, every dtype (conftest.py runs each test once per instruction set)."""
import numpy as np
import pytest

import softmax_ce_c
from fuzz_check import lse_error
from helpers import assert_within_ulps, exact, ulp_error

FUNCTIONS = ["logsumexp", "log_softmax", "softmax"]
FEW_CLASSES = [1, 2, 3, 4, 5, 8, 10, 16, 17, 31, 32, 33, 48, 49, 65, 72, 73, 88, 89]
DTYPES = ["float32", "float64", "float16", "bfloat16"]
N_ROWS = 85  # whole groups and a partial one: two of 32 and 21 rows, five of 16 (float64) and 5


def dtype_of(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


def bits(array):
    array = np.ascontiguousarray(array)
    return array.view(f"u{array.itemsize}")


def assert_bitwise_equal(got, want):
    assert got.shape == want.shape and np.array_equal(np.isnan(got.astype(np.float64)),
                                                      np.isnan(want.astype(np.float64)))
    finite = ~np.isnan(want.astype(np.float64))
    assert np.array_equal(bits(got)[finite], bits(want)[finite])


SPECIAL_ROWS = {  # rows of the first group of 32, the second of 16; its rows 16, 24..31 stay finite
    17: "nan",
    18: "all -inf",
    19: "+inf",
    20: "some -inf",
    21: "nan and -inf",
    22: "+inf and nan",
    23: "all nan",
}


def logits(n_classes, dtype, seed=0, special=True):
    x = 3.0 * np.random.default_rng([seed, n_classes]).standard_normal((N_ROWS, n_classes))
    if special:
        for row, kind in SPECIAL_ROWS.items():
            if kind == "nan":
                x[row, n_classes // 2] = np.nan
            elif kind == "all -inf":
                x[row] = -np.inf
            elif kind == "+inf":
                x[row, n_classes - 1] = np.inf
            elif kind == "some -inf":
                x[row, ::2] = -np.inf
            elif kind == "nan and -inf":
                x[row] = -np.inf
                x[row, n_classes - 1] = np.nan
            elif kind == "+inf and nan":
                x[row, 0] = np.nan
                x[row, n_classes - 1] = np.inf
            elif kind == "all nan":
                x[row] = np.nan
    return x.astype(dtype)


def exact_value(name, x):
    """The reference in longdouble (half and float32 values are exact in float64)."""
    return exact(name, x.astype(np.float64))


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("n_classes", FEW_CLASSES)
def test_matches_the_reference_with_special_rows_in_a_group(n_classes, dtype_name):
    dtype = dtype_of(dtype_name)
    x = logits(n_classes, dtype)
    for name in FUNCTIONS:
        result = getattr(softmax_ce_c, name)(x)
        assert result.dtype == dtype
        want = exact_value(name, x)
        if dtype_name == "float16":  # computed in double, rounded once: the exact value rounded
            rounded = want.astype(np.float64).astype(np.float16)
            assert_bitwise_equal(result, rounded)
        elif name == "logsumexp" and dtype_name in ("float32", "float64"):
            # max + log1p(rest) cancels near 0: README's absolute error there (fuzz_check.lse_error)
            row_max = np.max(np.where(np.isnan(x.astype(np.float64)), -np.inf, x.astype(np.float64)), axis=-1)
            with np.errstate(invalid="ignore"):
                near = np.abs(result.astype(want.dtype) - want) <= lse_error(row_max, dtype_name == "float32")
            assert np.all((ulp_error(result, want) <= 4) | (np.isfinite(want) & near))
        else:
            assert_within_ulps(result, want, 1 if dtype_name == "bfloat16" else 4)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("n_classes", FEW_CLASSES)
def test_the_edge_cases_of_the_table(n_classes, dtype_name):
    dtype = dtype_of(dtype_name)
    x = logits(n_classes, dtype)
    lse = softmax_ce_c.logsumexp(x).astype(np.float64)
    has_nan = np.isnan(x.astype(np.float64)).any(axis=1)
    has_inf = (x.astype(np.float64) == np.inf).any(axis=1)
    no_finite = ~np.isfinite(x.astype(np.float64)).any(axis=1)
    assert np.all(np.isnan(lse[has_nan]))
    assert np.all(lse[has_inf & ~has_nan] == np.inf)
    assert np.all(lse[no_finite & ~has_nan & ~has_inf] == -np.inf)
    assert np.all(np.isfinite(lse[~has_nan & ~has_inf & ~no_finite]))
    for name in ["log_softmax", "softmax"]:
        result = getattr(softmax_ce_c, name)(x).astype(np.float64)
        nan_rows = has_nan | has_inf | no_finite
        assert np.all(np.isnan(result[nan_rows]))
        assert not np.isnan(result[~nan_rows]).any()
    p = softmax_ce_c.softmax(x).astype(np.float64)
    masked = x.astype(np.float64) == -np.inf
    assert np.all(p[masked & ~nan_rows[:, None]] == 0)
    if n_classes == 1:  # one class: probability 1, log-probability 0, logsumexp the logit
        assert np.all(p[~nan_rows] == 1)
        assert np.all(softmax_ce_c.log_softmax(x).astype(np.float64)[~nan_rows] == 0)
        assert np.array_equal(lse, x[:, 0].astype(np.float64), equal_nan=True)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("n_classes", FEW_CLASSES)
def test_a_row_does_not_depend_on_the_rows_grouped_with_it(n_classes, dtype_name):
    dtype = dtype_of(dtype_name)
    x = logits(n_classes, dtype)
    finite_neighbours = logits(n_classes, dtype, special=False)
    finite_neighbours[16:32:2] = x[16:32:2]  # every other row of the special group kept
    order = np.random.default_rng(n_classes).permutation(N_ROWS)
    for name in FUNCTIONS:
        function = getattr(softmax_ce_c, name)
        batch = function(x)
        for row in range(N_ROWS):  # alone, in a group of one row
            assert_bitwise_equal(function(x[row:row + 1]), batch[row:row + 1])
        assert_bitwise_equal(function(x[order]), batch[order])  # other rows, at other lanes
        assert_bitwise_equal(function(finite_neighbours)[16:32:2], batch[16:32:2])


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("n_classes", [1, 3, 10, 32, 72, 88])
def test_every_thread_count_gives_bitwise_the_same_answer(n_classes, dtype_name):
    dtype = dtype_of(dtype_name)
    row_group = 16 if dtype_name == "float64" else 32  # ROW_GROUP, csrc/kernel_cross_entropy.h
    rows_per_chunk = 32768 // n_classes // row_group * row_group  # whole groups
    n_rows = 2 * rows_per_chunk + 21  # three chunks, the last a partial group
    x = (3.0 * np.random.default_rng(n_classes).standard_normal((n_rows, n_classes))).astype(dtype)
    x[rows_per_chunk - 1, 0] = np.nan  # specials at a chunk's end and the next one's start
    x[rows_per_chunk] = -np.inf
    x[rows_per_chunk + 1, -1] = np.inf
    for name in FUNCTIONS:
        function = getattr(softmax_ce_c, name)
        want = function(x, num_threads=1)
        for n_threads in [2, 3]:
            assert_bitwise_equal(function(x, num_threads=n_threads), want)

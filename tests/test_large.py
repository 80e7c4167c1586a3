"""More than 2^31 logits (64-bit indexing), opt-in: SOFTMAX_CE_C_LARGE_TESTS=1 (needs about 7 GB of
free memory; on the 2-core development machine it took 5.5 minutes, peak RSS 6.1 GB).

The inputs are built so that the exact answer is known in closed form (no float64 reference of 2^31
elements is needed): rows of zeros with one special logit each, whose losses and gradients follow
from K - 1 + e^v. Each test runs once (with the default instruction set) and loops over every
instruction set itself, so the big array is built once.

- a float16 batch of 2^31 + 4M logits (4.3 GB): every row's loss (loss only), then the gradient in
  place (no second array), checked element by element in chunks;
- one float32 row of 2^31 + 48 logits (8.6 GB of address space, read through zero pages): the
  row max beyond index 2^31, past the int32 guard of the vector row max; a missed max or a wrong
  argmax would change the loss from 3.9e-26 to 0 or log 2.
"""
import math
import os

import numpy as np
import pytest

import softmax_ce_c
from conftest import DEFAULT_ISA, available_isas
from helpers import LOSS_ULPS, assert_within_ulps
from softmax_ce_c._kernel import lib

pytestmark = pytest.mark.skipif(os.environ.get("SOFTMAX_CE_C_LARGE_TESTS") != "1",
                                reason="set SOFTMAX_CE_C_LARGE_TESTS=1 (needs ~7 GB)")

SPECIAL_VALUES = np.array([-3.0, -1.0, 0.5, 2.0, 4.0, 8.0])  # exact in float16


@pytest.fixture(autouse=True)
def once(isa):
    if isa != DEFAULT_ISA:
        pytest.skip("runs once and loops over the instruction sets itself")


def each_isa():
    """Selects every instruction set in turn (conftest's fixture restores the default)."""
    for name in available_isas():
        assert lib.sce_select_isa(name.encode()) == lib.SCE_OK
        yield name


def half_batch():
    """(logits, target, special column, special value): K = 1025, N rows with N K = 2^31 + 4M."""
    n_classes = 1025
    n_rows = 2**31 // n_classes + 4096
    assert n_rows * n_classes > 2**31 + 2**22
    x = np.zeros((n_rows, n_classes), np.float16)
    rows = np.arange(n_rows)
    column = (rows * 7919) % n_classes
    value = SPECIAL_VALUES[rows % len(SPECIAL_VALUES)]
    x[rows, column] = value
    target = np.where(rows % 2 == 0, column, (column + 1) % n_classes)  # on the special logit or off it
    return x, target, column, value


def test_half_batch_beyond_2_31_elements():
    x, target, column, value = half_batch()
    n_rows, n_classes = x.shape
    total = (n_classes - 1) + np.exp(value)  # the row's sum of exps, every other logit being 0
    want = np.log(total) - np.where(target == column, value, 0.0)
    for isa in each_isa():
        loss = softmax_ce_c.cross_entropy(x, target, reduction="none", num_threads=2)
        assert_within_ulps(loss, want, LOSS_ULPS)
        mean = softmax_ce_c.cross_entropy(x, target, num_threads=2)
        assert_within_ulps(mean, want.mean(), LOSS_ULPS)

    # the gradient, in place (reduction sum: p - onehot), each element the exact one rounded (1 ulp)
    softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", inplace=True, num_threads=2)
    chunk = 2**14
    for begin in range(0, n_rows, chunk):
        rows = slice(begin, begin + chunk)
        n = len(x[rows])
        want = np.repeat((1.0 / total[rows])[:, None], n_classes, axis=1)
        here = np.arange(n)
        want[here, column[rows]] = np.exp(value[rows]) / total[rows]
        want[here, target[rows]] -= 1.0
        assert_within_ulps(x[rows], want, 1)


def test_one_row_longer_than_2_31():
    n_classes = 2**31 + 48
    x = np.zeros((1, n_classes), np.float32)  # zero pages: 8.6 GB of address space, little memory
    top = 2**31 + 5
    x[0, top] = 80.0
    rest = (n_classes - 1) * math.exp(-80.0)
    for isa in each_isa():
        loss = softmax_ce_c.cross_entropy(x, np.array([top]), reduction="none")
        assert_within_ulps(loss, [math.log1p(rest)], LOSS_ULPS)
        assert_within_ulps(softmax_ce_c.logsumexp(x), [80.0 + math.log1p(rest)], LOSS_ULPS)

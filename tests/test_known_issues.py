"""Bugs the fuzz test (test_fuzz.py) found, each reduced to a minimal case and marked xfail(strict):
once the package is fixed the test passes, strict turns that into a failure, and the xfail mark (and
the matching allowance in fuzz_check.py) should be removed."""
import math

import numpy as np
import pytest

import softmax_ce_c
from helpers import FLOAT64_RTOL
from softmax_ce_c import reference


@pytest.mark.xfail(strict=True, reason="softcap slope 4(1+m)/(2+m)^2 with m = expm1(-2|u|) cancels in 1 + m "
                                       "near saturation: 0 instead of 1.2e-17 (fuzz_check.SLOPE_ABSOLUTE_ERROR)")
def test_softcap_slope_keeps_its_relative_accuracy_near_saturation():
    """README: the slope is 1/cosh^2, 'accurate where tanh is near +-1'. At x / softcap = 20 it is
    4 e^-40 (1 + e^-40)^-2 = 1.7e-17, and the gradient of the non-target class is p_1 times that."""
    x = np.array([[0.0, 20.0]])
    grad = softmax_ce_c.softmax_cross_entropy(x, np.array([0]), softcap=1.0, reduction="sum")[1]
    want = reference.softmax_cross_entropy(x.astype(np.longdouble), np.array([0]), softcap=1.0, reduction="sum")[1]
    assert want[0, 1] > 1e-17
    assert abs(grad[0, 1] - want[0, 1]) <= 8 * np.finfo(np.float64).eps * want[0, 1]


@pytest.mark.xfail(strict=True, reason="with a softcap, a row of NaN and -inf gives a finite loss (log 2 here) "
                                       "and a -0 gradient: the NaN is taken as the argmax and left out of rest")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_softcap_row_of_nan_and_minus_inf_is_nan(dtype):
    """README: 'NaN logit: that row's loss and gradient are NaN' (and without a softcap it is)."""
    x = np.array([[np.nan, -np.inf]], dtype)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, np.array([1]), softcap=1.0, reduction="none")
    assert np.isnan(loss[0]) and np.all(np.isnan(grad))


@pytest.mark.xfail(strict=True, reason="the mean's total weight is summed row after row in double (count_targets): "
                                       "off by 1.1e-13 relative here, beyond the float64 contract of 1e-14")
def test_weighted_mean_divides_by_the_exact_total_weight():
    """Every row loss is w_y log 2 (two equal logits), so the weighted mean is log 2 whatever the
    weights; a sequential sum 1 + 2^-53 + 2^-53 + ... stays 1 instead of 1 + 1000 * 2^-53."""
    x = np.zeros((1001, 2))
    y = np.array([0] + [1] * 1000)
    weight = np.array([1.0, 2.0**-53])
    loss = softmax_ce_c.cross_entropy(x, y, weight=weight)
    assert abs(loss - math.log(2)) <= FLOAT64_RTOL * math.log(2)

"""Regression tests: bugs the fuzz test (test_fuzz.py) found, each reduced to a minimal case."""
import math

import numpy as np
import pytest

import softmax_ce_c
from helpers import FLOAT64_RTOL
from softmax_ce_c import reference


def test_softcap_slope_keeps_its_relative_accuracy_near_saturation():
    """README: the slope is 1/cosh^2, 'accurate where tanh is near +-1'. At x / softcap = 20 it is
    4 e^-40 (1 + e^-40)^-2 = 1.7e-17, and the gradient of the non-target class is p_1 times that."""
    x = np.array([[0.0, 20.0]])
    grad = softmax_ce_c.softmax_cross_entropy(x, np.array([0]), softcap=1.0, reduction="sum")[1]
    want = reference.softmax_cross_entropy(x.astype(np.longdouble), np.array([0]), softcap=1.0, reduction="sum")[1]
    assert want[0, 1] > 1e-17
    assert abs(grad[0, 1] - want[0, 1]) <= 8 * np.finfo(np.float64).eps * want[0, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_softcap_row_of_nan_and_minus_inf_is_nan(dtype):
    """README: 'NaN logit: that row's loss and gradient are NaN' (and without a softcap it is)."""
    x = np.array([[np.nan, -np.inf]], dtype)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, np.array([1]), softcap=1.0, reduction="none")
    assert np.isnan(loss[0]) and np.all(np.isnan(grad))


def test_weighted_mean_divides_by_the_exact_total_weight():
    """Every row loss is w_y log 2 (two equal logits), so the weighted mean is log 2 whatever the
    weights; a sequential sum 1 + 2^-53 + 2^-53 + ... stays 1 instead of 1 + 1000 * 2^-53."""
    x = np.zeros((1001, 2))
    y = np.array([0] + [1] * 1000)
    weight = np.array([1.0, 2.0**-53])
    loss = softmax_ce_c.cross_entropy(x, y, weight=weight)
    assert abs(loss - math.log(2)) <= FLOAT64_RTOL * math.log(2)


# the z-loss's term, or (a plain call, whose shortcut spares np.errstate when it can) max - x_y
@pytest.mark.parametrize("logits, options", [([1e30, 0.0], {"z_loss": 1.0}), ([3e38, -3e38], {})],
                         ids=["z_loss", "plain"])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_a_float32_loss_beyond_the_range_is_inf_without_a_floating_point_error(reduction, logits, options):
    x = np.array([logits], np.float32)
    with np.errstate(all="raise"):
        loss = softmax_ce_c.cross_entropy(x, np.array([1]), reduction=reduction, **options)
    assert np.all(np.isposinf(loss))


def test_float32_softcap_slope_below_floats_normal_range_keeps_its_digits():
    """A float32 row's slopes wait between passes in a float work space: at x / softcap = 50 the
    slope, 4 e^-100 = 1.5e-43, is subnormal there (a few digits; fuzz seed 116935). A large upstream
    gradient makes the element it scales a normal float, which must keep float32's accuracy."""
    x = np.zeros((1, 33), np.float32)
    x[0, 0] = 50.0
    options = dict(softcap=1.0, reduction="sum", grad_scale=1e30)
    grad = softmax_ce_c.softmax_cross_entropy(x, np.array([1]), **options)[1]
    want = reference.softmax_cross_entropy(x.astype(np.longdouble), np.array([1]), **options)[1]
    assert want[0, 0] > np.finfo(np.float32).tiny
    assert abs(grad[0, 0] - want[0, 0]) <= 8 * np.finfo(np.float32).eps * want[0, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [33, 97])  # the row groups, and the row path (blocks of 16 and a tail)
@pytest.mark.parametrize("masked", [False, True], ids=["finite", "minus_inf"])
def test_smoothing_leaves_out_exactly_the_classes_of_zero_weight(dtype, n_classes, masked):
    """A zero weight in each position of whole blocks of 16 and a tail: GCC 12's AVX2 build once left
    out the term 8 lanes away instead (fuzz seeds 1095, 1392, 1809). Masked: that class's logit is
    -inf, whose term 0 (max - x) would be NaN."""
    for zero in range(n_classes):
        x = np.arange(n_classes, dtype=dtype)
        if masked:
            x[zero] = -np.inf
        weight = np.ones(n_classes)
        weight[zero] = 0.0
        options = dict(weight=weight, label_smoothing=1.0, reduction="sum")
        got = softmax_ce_c.cross_entropy(x, np.array(5), **options)
        want = reference.cross_entropy(x.astype(np.longdouble), np.array(5), **options)
        assert abs(got - want) <= 4 * np.finfo(dtype).eps * want, zero


@pytest.mark.parametrize("n_classes", [10, 100])  # the row groups (K <= 48 to 88), and the row path
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"label_smoothing": 0.1, "weight": "ramp"}],
                         ids=["plain", "smoothing", "weights"])
def test_a_gradient_factor_beyond_float_range_keeps_finite_elements_finite(n_classes, options):
    """grad_scale 1e39: the factor of e_k is beyond float32's range, e_k times it often is not. The
    float32 products once rounded the factor to float first (inf, and inf - inf = NaN)."""
    if options.get("weight") == "ramp":
        options = dict(options, weight=np.linspace(0.5, 2.0, n_classes))
    x = (np.random.default_rng(3).standard_normal((4, n_classes)) * 10).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="sum", grad_scale=1e39, **options)[1]
    with np.errstate(over="ignore"):
        want = reference.softmax_cross_entropy(x.astype(np.float64), y, reduction="sum", grad_scale=1e39,
                                               **options)[1]
        want32 = want.astype(np.float32)
    assert not np.any(np.isnan(grad))
    np.testing.assert_array_equal(np.isinf(grad), np.isinf(want32))
    finite = np.isfinite(want32)
    row_scale = np.max(np.abs(want), axis=1, keepdims=True) * np.ones_like(want)
    assert np.all(np.abs(grad[finite] - want[finite]) <= 8 * np.finfo(np.float32).eps * row_scale[finite])


@pytest.mark.parametrize("n_classes", [10, 100])  # the row groups (K <= 48 to 88), and the row path
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["probability, weight", "probability, grad_scale", "smoothing, weight"])
def test_a_target_coefficient_beyond_float_range_keeps_a_finite_gradient_finite(dtype, case, n_classes):
    """c_k times the target factor beyond float32's range while p_k T - c_k is not: the float
    products (scaled_minus) rounded it to float first, -inf (found by review; the probability loop
    was new, the smoothed index's had it for weights near 1e40)."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    big = float(np.finfo(np.float32).max)
    x = np.full((1, n_classes), -200.0)
    x[0, 3] = x[0, 7] = 0.0  # the argmax is 3; class 7 has e = 1
    if case.startswith("probability"):
        target = np.zeros((1, n_classes), np.float32)
        target[0, 7] = 0.75 * big
        options = {"weight": np.full(n_classes, 2.0)} if case.endswith("weight") else {"grad_scale": 2.0}
    else:
        target, weight = np.array([3]), np.ones(n_classes)
        weight[7] = 1.5 * big * n_classes
        options = {"weight": weight, "label_smoothing": 1.0}
    grad = softmax_ce_c.softmax_cross_entropy(x.astype(dtype), target, reduction="sum", **options)[1]
    want = reference.softmax_cross_entropy(x, target.astype(np.float64) if target.ndim == 2 else target,
                                           reduction="sum", **options)[1]
    assert np.isfinite(want[0, 7]) and abs(want[0, 7]) > 1e38
    assert np.isfinite(float(grad[0, 7]))
    assert abs(float(grad[0, 7]) - want[0, 7]) <= 2.0**-7 * abs(want[0, 7])  # bfloat16's half ulp

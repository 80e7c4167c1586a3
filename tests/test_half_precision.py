"""float16 and bfloat16 logits: read and written in their own dtype, computed in double inside (but
bfloat16's exps, in float); the gradient is the exact one rounded to within 1 ulp of its dtype
(float16: correctly rounded), the loss float32."""
import numpy as np
import pytest

import softmax_ce_c
from helpers import GRAD_EPS, LOSS_ULPS, assert_within_ulps, exact, make_prob_target, one_hot, ulp_error

HALF_DTYPES = ["float16", "bfloat16"]


def half_dtype(name):
    if name == "float16":
        return np.dtype(np.float16)
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def exact_in_float64(function_name, x, *args, **kwargs):
    """Half values are exact in float64, whose reference is far more precise than half needs."""
    return exact(function_name, x.astype(np.float64).astype(np.float32), *args, **kwargs)


def assert_half_cross_entropy_exact(x, target, **options):
    for reduction in ["mean", "sum", "none"]:
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction=reduction, **options)
        want_loss, want_grad = exact_in_float64("softmax_cross_entropy", x, target, reduction=reduction, **options)
        assert np.asarray(loss).dtype == np.float32 and grad.dtype == x.dtype and grad.shape == x.shape
        assert_within_ulps(loss, want_loss, LOSS_ULPS)
        assert_within_ulps(grad, want_grad, 1)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape", [(5, 7), (3, 1000), (2, 32000), (2, 3, 4)])
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_gradient_is_the_exact_one_rounded(name, shape, target_kind):
    dtype = half_dtype(name)
    rng = np.random.default_rng(20)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    if target_kind == "index":
        target = rng.integers(0, shape[-1], shape[:-1])
    else:
        target = make_prob_target(rng, shape, np.float32)
    assert_half_cross_entropy_exact(x, target)


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_target_entry_when_p_y_is_close_to_1(name):
    """p_y - 1 computed in half precision would be 0 or a few ulp of 1: here it is exact."""
    dtype = half_dtype(name)
    x = np.zeros((4, 100), np.float32)
    x[:, 0] = [8.0, 10.0, 12.0, 14.0]
    x = x.astype(dtype)
    assert_half_cross_entropy_exact(x, np.zeros(4, np.int64))
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, np.zeros(4, np.int64), reduction="sum")
    assert np.all(grad[:, 0].astype(np.float32) < 0)


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_with_options(name):
    dtype = half_dtype(name)
    rng = np.random.default_rng(21)
    x = (4.0 * rng.standard_normal((6, 50))).astype(dtype)
    y = rng.integers(0, 50, 6)
    y[2] = 7
    options = dict(weight=rng.uniform(0.5, 2.0, 50), ignore_index=7, label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
    assert_half_cross_entropy_exact(x, y, **options)


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_row_functions(name):
    dtype = half_dtype(name)
    x = (3.0 * np.random.default_rng(22).standard_normal((7, 33))).astype(dtype)
    for function_name in ["log_softmax", "softmax", "logsumexp"]:
        result = getattr(softmax_ce_c, function_name)(x)
        assert result.dtype == dtype
        assert_within_ulps(result, exact_in_float64(function_name, x), 1)


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_special_values(name):
    dtype = half_dtype(name)
    x = np.zeros((3, 4), np.float32)
    x[0, 1], x[1, 2], x[2, 1:] = np.nan, np.inf, -np.inf
    loss, grad = softmax_ce_c.softmax_cross_entropy(x.astype(dtype), np.array([0, 0, 1]), reduction="none")
    grad = grad.astype(np.float32)
    assert np.all(np.isnan(loss[:2])) and np.all(np.isnan(grad[:2])) and loss[2] == np.inf
    assert np.array_equal(grad[2], [1.0, -1.0, 0.0, 0.0])


def correctly_rounded(values, name):
    """float64 values rounded once, to nearest even, to the precision of the half dtype."""
    significant_bits, min_normal_exponent = (11, -14) if name == "float16" else (8, -126)
    _, exponent = np.frexp(values)  # |values| in [2^(exponent - 1), 2^exponent)
    quantum = np.ldexp(1.0, np.maximum(exponent, min_normal_exponent + 1) - significant_bits)
    return np.rint(values / quantum) * quantum


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_gradient_is_correctly_rounded(name, target_kind, reduction):
    """float16: bit for bit the exact gradient rounded once (a double rounding through float32 fails
    this). bfloat16, whose exps run in float: rounded once but for at most 1 in 10,000 elements
    (near a tie; 9 in 2^20 measured), within 1 ulp, or float32's bound where the gradient cancels."""
    dtype = half_dtype(name)
    rng = np.random.default_rng(23)
    # a million elements: a double rounding (through float32) shows on about 1 in 2^16 of them
    x = (4.0 * rng.standard_normal((512, 2048))).astype(dtype)
    target = rng.integers(0, 2048, 512) if target_kind == "index" else make_prob_target(rng, (512, 2048), np.float32)
    grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction=reduction)[1]
    exact_grad = exact_in_float64("softmax_cross_entropy", x, target, reduction=reduction)[1]
    want = correctly_rounded(np.asarray(exact_grad, np.float64), name)
    got = grad.astype(np.float64)
    differ = np.count_nonzero(got != want)
    if name == "float16":
        assert differ == 0, f"{differ} of {got.size} elements differ"
    else:  # within 1 ulp, or where the gradient cancels, float32's contract (its exps are float32's)
        assert differ <= got.size // 10_000, f"{differ} of {got.size} elements differ"
        t = one_hot(target, 2048) if target_kind == "index" else target.astype(np.float64)
        size = (exact_in_float64("softmax", x) + np.abs(t)) / (512 if reduction == "mean" else 1)
        error = np.abs(got - exact_grad)
        assert np.all((ulp_error(grad, exact_grad) <= 1) | (error <= GRAD_EPS * np.finfo(np.float32).eps * size))


@pytest.mark.parametrize("n_classes", [2, 64])  # the groups of K <= 32, and the row path
@pytest.mark.parametrize("value", [0.5**25, 1.5 * 0.5**25, 0.5**24, 3 * 0.5**26, 0.5**14 * (1 - 0.5**12), 1e-4, 1.0,
                                   65503.0, 65519.0, 65520.0, 65521.0, 1e6, np.nan])
def test_float16_rounding_edges(value, n_classes):
    """Gradients exact in double, rounded to float16 as NumPy rounds them: ties to even among
    subnormals, up into the smallest normal, and to inf at the top (65520 is a tie: inf); NaN."""
    x = np.zeros((2, n_classes), np.float16)  # p = 1/K on every class: the gradient is (p - t) grad_scale
    target = np.array([0, 1])
    grad_scale = n_classes * value  # value off the target, (1 - K) value on it: exact in double
    grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", grad_scale=grad_scale)[1]
    exact = np.full(x.shape, value)
    exact[[0, 1], target] = (1 - n_classes) * value
    with np.errstate(over="ignore"):  # to inf, as wanted
        want = exact.astype(np.float16)
    assert grad.view(np.uint16).tolist() == want.view(np.uint16).tolist()

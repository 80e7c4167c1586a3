"""float16 and bfloat16 logits: read and written in their own dtype, computed in double inside (but
bfloat16's exps, in float); the gradient is the exact one rounded to within 1 ulp of its dtype
(float16: correctly rounded), the loss float32."""
import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c._kernel import lib
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


@pytest.mark.parametrize("byte_order", ["=", ">"])
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_option_values_are_their_values(name, byte_order):
    """Weights, a per-row grad_scale and scalar options given in half precision (bfloat16's dtype
    kind is "V", once refused) are read as the same values in float64."""
    dtype = half_dtype(name).newbyteorder(byte_order)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    y = rng.integers(0, 40, 6)
    weight, grad_scale = rng.uniform(0.5, 2.0, 40).astype(dtype), rng.uniform(0.5, 2.0, 6).astype(dtype)
    scalar = half_dtype(name).type(0.25)
    options = dict(weight=weight, label_smoothing=scalar, z_loss=scalar, softcap=half_dtype(name).type(3.0))
    got = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", grad_scale=grad_scale, **options)
    as_floats = {key: np.float64(value) if np.ndim(value) == 0 else value.astype(np.float64)
                 for key, value in options.items()}
    want = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", grad_scale=grad_scale.astype(np.float64),
                                              **as_floats)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    got_scalar = softmax_ce_c.softmax_cross_entropy(x, y, grad_scale=scalar)[1]
    assert np.array_equal(got_scalar, softmax_ce_c.softmax_cross_entropy(x, y, grad_scale=0.25)[1])


@pytest.mark.parametrize("shape", [(7, 33), (5, 1000)])  # rows of few classes in groups, and the row path
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_row_functions(name, shape):
    dtype = half_dtype(name)
    x = (3.0 * np.random.default_rng(22).standard_normal(shape)).astype(dtype)
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


@pytest.mark.parametrize("n_classes", [2048, 16])  # the row path, and the row groups
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_gradient_is_correctly_rounded(name, target_kind, reduction, n_classes):
    """float16: bit for bit the exact gradient rounded once (a double rounding through float32 fails
    this). bfloat16, whose exps run in float: rounded once but for at most 1 in 10,000 elements
    (near a tie; 9 in 2^20 measured), within 1 ulp, or float32's bound where the gradient cancels."""
    dtype = half_dtype(name)
    rng = np.random.default_rng(23)
    # a million elements: a double rounding (through float32) shows on about 1 in 2^16 of them
    shape = (2**20 // n_classes, n_classes)
    x = (4.0 * rng.standard_normal(shape)).astype(dtype)
    if target_kind == "index":
        target = rng.integers(0, n_classes, shape[0])
    else:
        target = make_prob_target(rng, shape, np.float32)
    grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction=reduction)[1]
    exact_grad = exact_in_float64("softmax_cross_entropy", x, target, reduction=reduction)[1]
    want = correctly_rounded(np.asarray(exact_grad, np.float64), name)
    got = grad.astype(np.float64)
    differ = np.count_nonzero(got != want)
    if name == "float16":
        assert differ == 0, f"{differ} of {got.size} elements differ"
    else:  # within 1 ulp, or where the gradient cancels, float32's contract (its exps are float32's)
        assert differ <= got.size // 10_000, f"{differ} of {got.size} elements differ"
        t = one_hot(target, n_classes) if target_kind == "index" else target.astype(np.float64)
        size = (exact_in_float64("softmax", x) + np.abs(t)) / (shape[0] if reduction == "mean" else 1)
        error = np.abs(got - exact_grad)
        assert np.all((ulp_error(grad, exact_grad) <= 1) | (error <= GRAD_EPS * np.finfo(np.float32).eps * size))


@pytest.mark.parametrize("n_classes", [16, 1000])  # the row groups, and the row path
@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_log_softmax_is_correctly_rounded(name, n_classes):
    """log_softmax is computed in double and rounded once. float16: bit for bit the exact values
    rounded (a double rounding through float32 shows on about 1 in 2^16 of these million elements).
    bfloat16, whose exps run in float: but for a few elements near a tie (2 here), within 1 ulp."""
    dtype = half_dtype(name)
    x = (4.0 * np.random.default_rng(24).standard_normal((2**20 // n_classes, n_classes))).astype(dtype)
    result = softmax_ce_c.log_softmax(x)
    exact_values = exact_in_float64("log_softmax", x)
    differ = np.count_nonzero(result.astype(np.float64) != correctly_rounded(np.asarray(exact_values), name))
    assert differ <= (0 if name == "float16" else result.size // 100_000), f"{differ} of {result.size} differ"
    assert_within_ulps(result, exact_values, 1)


def gradient_of_uniform_rows(dtype, n_classes, value):
    """The summed gradient of two rows of zeros, targets 0 and 1, with grad_scale K value, and its
    exact values: p = 1/K on every class, so (p - t) K value is value off the target, (1 - K) value
    on it."""
    x = np.zeros((2, n_classes), dtype)
    target = np.array([0, 1])
    grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", grad_scale=n_classes * value)[1]
    exact = np.full(x.shape, value)
    exact[[0, 1], target] = (1 - n_classes) * value
    return grad, exact


@pytest.mark.parametrize("n_classes", [2, 64])  # the row groups (K <= 48 here), and the row path
@pytest.mark.parametrize("value", [0.5**25, 1.5 * 0.5**25, 0.5**24, 3 * 0.5**26, 0.5**14 * (1 - 0.5**12), 1e-4, 1.0,
                                   65503.0, 65519.0, 65520.0, 65521.0, 1e6, np.nan])
def test_float16_rounding_edges(value, n_classes):
    """Gradients exact in double, rounded to float16 as NumPy rounds them: ties to even among
    subnormals, up into the smallest normal, and to inf at the top (65520 is a tie: inf); NaN."""
    grad, exact = gradient_of_uniform_rows(np.float16, n_classes, value)
    with np.errstate(over="ignore"):  # to inf, as wanted
        want = exact.astype(np.float16)
    assert grad.view(np.uint16).tolist() == want.view(np.uint16).tolist()


@pytest.mark.parametrize("n_classes", [2, 64, 1000])  # the row groups (K <= 48 here), and the row path
@pytest.mark.parametrize("value", [0.5**130, 1.5 * 0.5**133, 2.5 * 0.5**133, 0.5**133 + 0.5**140,
                                   0.5**126 * (1 - 0.5**10), 0.5**126, 1e-30, 1.0, 3.0e38,
                                   float.fromhex("0x1.ffp127"), np.nan])
def test_bfloat16_rounding_edges(value, n_classes):
    """Gradients whose float32 values are known, rounded to bfloat16 as ml_dtypes rounds them:
    subnormals (which AVX512_BF16's conversion would flush to 0: csrc/bf16_round_avx512.h), ties to
    even among them, up into the smallest normal, a tie at the top to inf; NaN."""
    dtype = half_dtype("bfloat16")
    grad, exact = gradient_of_uniform_rows(dtype, n_classes, value)
    with np.errstate(over="ignore"):  # to inf, as wanted
        want = exact.astype(np.float32).astype(dtype)
    if np.isnan(value):
        assert np.all(np.isnan(grad.astype(np.float32)))
    else:
        assert grad.view(np.uint16).tolist() == want.view(np.uint16).tolist()


def test_bfloat16_avx512bf16_kernel_matches_avx512_bit_for_bit(isa):
    """The avx512bf16 level differs from avx512 only in how bfloat16 gradients are rounded (by
    AVX512_BF16, subnormals apart): the same bits, for the plain, smoothed and weighted loops, with
    gradients down among the subnormals."""
    if isa != "avx512bf16":
        pytest.skip("compares the avx512bf16 kernel with avx512's")
    dtype = half_dtype("bfloat16")
    rng = np.random.default_rng(24)
    n_subnormal = 0
    # rows, the classes shared out to two threads (fewer rows than threads), a gradient streamed
    for shape, n_threads in [((6, 1000), 1), ((1, 40000), 2), ((8192, 1024), 2)]:
        x = (8.0 * rng.standard_normal(shape, np.float32)).astype(dtype)
        target = rng.integers(0, shape[1], shape[0])
        weight = rng.random(shape[1]) + 0.5
        for scale in [1.0, 1e-33, -3e-36]:
            for options in [{}, {"label_smoothing": 0.1}, {"label_smoothing": 0.1, "weight": weight}]:
                bits = {}
                for level in ["avx512bf16", "avx512"]:
                    assert lib.sce_select_isa(level.encode()) == lib.SCE_OK
                    grad = softmax_ce_c.softmax_cross_entropy(x, target, grad_scale=scale, num_threads=n_threads,
                                                              **options)[1]
                    bits[level] = grad.view(np.uint16)
                assert np.array_equal(bits["avx512bf16"], bits["avx512"])
                exponent, significand = bits["avx512"] & 0x7F80, bits["avx512"] & 0x7F
                n_subnormal += np.count_nonzero((exponent == 0) & (significand != 0))
    assert n_subnormal > 100

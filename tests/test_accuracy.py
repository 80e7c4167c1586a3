"""The numerical contract at its hardest points, measured in ulps against the exact (higher precision)
reference: tiny losses, p_y close to 1, huge K, reductions over many rows, large offsets."""
import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c import reference
from helpers import (LOSS_ULPS, assert_grad_within_contract, assert_loss_accurate, assert_within_ulps, exact,
                     one_hot)

DTYPES = [np.float32, np.float64]
TARGET_ULPS = 8  # p_y - 1 when p_y is close to 1


def confident_logits(dtype, n_classes, gap, rng):
    """Rows whose target (class 0) sits `gap` above the others: loss ~ (K - 1) exp(-gap)."""
    x = rng.uniform(-1.0, 1.0, (3, n_classes))
    x[:, 0] = gap
    return x.astype(dtype), np.zeros(3, np.int64)


def gap_for(dtype, n_classes, loss):
    return float(np.log((n_classes - 1) / loss))


@pytest.mark.parametrize("n_classes", [2, 10, 1000, 262144])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_loss_and_target_gradient_are_exact_to_a_few_ulp(dtype, n_classes):
    """Loss ~1e-6 (float32) or ~1e-12 (float64): log(sum) would cancel; p_y - 1 likewise."""
    tiny = 1e-6 if dtype == np.float32 else 1e-12
    x, y = confident_logits(dtype, n_classes, gap_for(dtype, n_classes, tiny), np.random.default_rng(1))
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none")
    want_loss, want_grad = exact("softmax_cross_entropy", x, y, reduction="none")
    assert np.all(want_loss < 10 * tiny)
    assert_within_ulps(loss, want_loss, LOSS_ULPS)
    assert_within_ulps(grad[:, 0], want_grad[:, 0], TARGET_ULPS)
    assert_within_ulps(softmax_ce_c.log_softmax(x)[:, 0], exact("log_softmax", x)[:, 0], LOSS_ULPS)


@pytest.mark.parametrize("n_classes", [10, 32, 88, 999])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_on_both_sides_of_the_exps_switch(dtype, n_classes):
    """The AVX-512 and AVX2 exps take rows whose max is below 2^14 in magnitude one way and the others
    another (exp_difference.h), rows of 8 to 88 float32 classes on AVX-512 lane by lane within a group
    (few_classes_avx512.h): rows just either side, of both signs, among ordinary rows, are within the
    contract, and each comes out of its group as it does alone."""
    rng = np.random.default_rng(5)
    tops = np.array([16383.998, 16384.0, 16384.002, -16383.998, -16384.0, -16384.002, 1e8, -1e8])
    tops = np.stack([tops, rng.uniform(-3.0, 3.0, len(tops))], axis=1).reshape(-1)  # each beside an ordinary row
    x = (tops[:, None] - rng.uniform(0.0, 120.0, (len(tops), n_classes))).astype(dtype)
    x[:, 0] = tops
    y = rng.integers(0, n_classes, len(tops))
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none")
    want_loss, want_grad = exact("softmax_cross_entropy", x, y, reduction="none")
    assert_loss_accurate(loss, want_loss)
    assert_grad_within_contract(grad, want_grad, exact("softmax", x), one_hot(y, n_classes), 1)
    for n in range(len(tops)):
        row_loss, row_grad = softmax_ce_c.softmax_cross_entropy(x[n:n + 1], y[n:n + 1], reduction="none")
        assert row_loss[0] == loss[n] and np.array_equal(row_grad[0], grad[n])


@pytest.mark.parametrize("softcap", [1e-301, 1e-302, 1000.0, 1024.0, 1025.0, 1e7])
def test_softcaps_on_both_sides_of_the_vector_softcaps_bounds(softcap):
    """AVX-512 and AVX2 softcap float logits in their own loops for softcaps in [2^-1000, 2^10], where x' is within
    2^-40 relative (vector_softcap.h), and in the portable one outside. Large softcaps: rows
    whose max x / softcap is ln(2) / 4, where the Taylor polynomial of exp is furthest from exp, and
    a loss near 1e-6 in row 0 (exps 22 to 42 below the max; an x' off by 2^-40 relative at 1e7 moved
    them 20 ulp); tiny ones: every float32 logit saturates. Within the contract on both sides."""
    rng = np.random.default_rng(6)
    if softcap < 1:
        x = rng.standard_normal((3, 999)).astype(np.float32)
    else:
        top = softcap * np.log(2) / 4
        x = (top - rng.uniform(22.0, 42.0, (3, 999))).astype(np.float32)
        x[:, 0] = top
    y = np.array([0, 5, 998])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, softcap=softcap, reduction="none")
    want_loss, want_grad = exact("softmax_cross_entropy", x, y, softcap=softcap, reduction="none")
    assert_loss_accurate(loss, want_loss)
    u = x.astype(np.longdouble) / softcap
    with np.errstate(over="ignore"):  # cosh(u) = inf: the slope is 0
        slope = 1 / np.cosh(u) ** 2
    assert_grad_within_contract(grad, want_grad, exact("softmax", softcap * np.tanh(u)), one_hot(y, 999), slope)


@pytest.mark.parametrize("past_the_cap", [False, True])
@pytest.mark.parametrize("softcap", [30.0, 1024.0])
def test_softcap_near_the_cap_by_polynomial_or_exps(softcap, past_the_cap):
    """x' of a block of 16 logits all within the softcap (|x| <= softcap) comes from a polynomial for
    tanh(u) / u, u = x / softcap (float logits on AVX-512 and AVX2: vector_softcap.h; others:
    softcapped_near), of other blocks from exps. float32 here: float64's softcap contract (logits
    moved by 4 eps softcap) is the fuzz test's.
    Row 0 has its max at x = softcap, where the polynomial is furthest from tanh, and the others' x'
    22 to 42 below it (a loss near 1e-8, off by as many of its ulps as x' moved); rows 1 and 2 spread
    over [-softcap, softcap]. past_the_cap: row 0 from 1.25 softcap down, beyond the polynomial's
    interval, and one logit of each block of rows 1 and 2 just beyond -softcap, which sends the block
    to the exps. Within the contract either way."""
    rng = np.random.default_rng(8)
    n_classes = 999
    x = np.empty((3, n_classes))
    top = 1.25 if past_the_cap else 1.0
    below_top = softcap * np.tanh(top) - rng.uniform(22.0, 42.0, n_classes)  # x' of the others
    x[0] = softcap * np.arctanh(np.clip(below_top / softcap, -1, 1))
    x[0, 0] = softcap * top
    x[1:] = softcap * rng.uniform(-1.0, 1.0, (2, n_classes))
    if past_the_cap:
        x[1:, 5::16] = -softcap * 1.0001
    x = x.astype(np.float32)
    y = np.array([0, 5, 998])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, softcap=softcap, reduction="none")
    want_loss, want_grad = exact("softmax_cross_entropy", x, y, softcap=softcap, reduction="none")
    assert want_loss[0] < 1e-5
    assert_loss_accurate(loss, want_loss)
    slope = 1 / np.cosh(x.astype(np.longdouble) / softcap) ** 2
    assert_grad_within_contract(grad, want_grad, exact("softmax", softcap * np.tanh(x / np.float64(softcap))),
                                one_hot(y, n_classes), slope)


@pytest.mark.parametrize("grad_scale", [1.0, 2.0**-50, 2.0**100])
def test_softcapped_gradient_in_float_or_double_lanes(grad_scale):
    """float32's softcapped gradient off the class index takes float lanes element by element where
    e slope SLOPE_SCALE >= 2^-62 and |g| >= 2^-100, else the double loop (capped_index_values_in_float,
    AVX2). Rows of logits within a few softcaps, far beyond it (slopes below 2^-186, and 0) and in
    between; at grad_scale 2^-50 the smaller gradients fall under 2^-100, and at 2^100 a product below
    2^-62 taken in float (a subnormal a) would be off by far more than the bound (a mutant taking
    every element in float failed there). 999 classes: a tail of 7.
    Within the contract either way, and the same bits for one and two threads on a row whose classes
    the threads share."""
    rng = np.random.default_rng(11)
    softcap, n_classes = 2.0, 999
    x = softcap * rng.uniform(-3.0, 3.0, (4, n_classes))
    x[1] = rng.uniform(-400.0, 400.0, n_classes)
    x[2, ::3] = rng.uniform(-150.0, -120.0, n_classes)[::3]
    x[3] = softcap * rng.uniform(-40.0, 40.0, n_classes)
    x = x.astype(np.float32)
    y = np.array([0, 5, 998, 400])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, softcap=softcap, reduction="sum", grad_scale=grad_scale)
    want_loss, want_grad = exact("softmax_cross_entropy", x, y, softcap=softcap, reduction="sum",
                                 grad_scale=grad_scale)
    slope = 1 / np.cosh(x.astype(np.longdouble) / softcap) ** 2
    assert_grad_within_contract(grad, want_grad, exact("softmax", softcap * np.tanh(x / np.float64(softcap))),
                                one_hot(y, n_classes), slope * grad_scale)
    wide = np.tile(x, (1, 40))  # 39960 classes: more than a segment, shared by two threads
    one = softmax_ce_c.softmax_cross_entropy(wide[:1], y[:1], softcap=softcap, grad_scale=grad_scale, num_threads=1)
    two = softmax_ce_c.softmax_cross_entropy(wide[:1], y[:1], softcap=softcap, grad_scale=grad_scale, num_threads=2)
    assert one[1].tobytes() == two[1].tobytes() and one[0] == two[0]


@pytest.mark.parametrize("top, small, tiny", [(31.025385, 13.05138, -3.6220238), (80.87489, 64.24987, 47.613777)])
def test_tiny_loss_whose_float_sums_all_round_up(top, small, tiny):
    """Rows built (by a review) so that every float addition of the exps' lane sums rounds up and the
    loss sits at the bottom of its binade: with runs of four blocks summed in float they measured
    4.2-4.3 ulp."""
    x = np.full((1, 65), -np.inf, np.float32)
    x[0, 0], x[0, 1:16], x[0, 16:64] = top, small, tiny
    y = np.array([0])
    assert_within_ulps(softmax_ce_c.cross_entropy(x, y, reduction="none"),
                       exact("cross_entropy", x, y, reduction="none"), LOSS_ULPS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_entry_when_p_y_is_one_minus_2e_6(dtype):
    x = np.array([[np.log(1 / 2e-6 - 1), 0.0]], dtype)  # p_0 = 1 - 2e-6 up to rounding of x
    grad = softmax_ce_c.softmax_cross_entropy(x, np.array([0]), reduction="sum")[1]
    want = exact("softmax_cross_entropy", x, np.array([0]), reduction="sum")[1]
    assert abs(float(want[0, 0]) + 2e-6) < 1e-10
    assert_within_ulps(grad[:, 0], want[:, 0], TARGET_ULPS)
    probs = np.array([[1.0, 0.0]], dtype)  # the same row as a one-hot probability target
    grad_from_probs = softmax_ce_c.softmax_cross_entropy(x, probs, reduction="sum")[1]
    assert_within_ulps(grad_from_probs[:, 0], want[:, 0], TARGET_ULPS)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(4, 262144), (20000, 10), (3, 5, 1000)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_over_many_rows(dtype, shape, reduction):
    rng = np.random.default_rng(2)
    x = (4.0 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, shape[-1], shape[:-1])
    loss = softmax_ce_c.cross_entropy(x, y, reduction=reduction)
    assert_within_ulps(loss, exact("cross_entropy", x, y, reduction=reduction), LOSS_ULPS)


def test_offset_of_1e8_keeps_the_contract_in_float32():
    """Multiples of 8 stay exact at 1e8 in float32, so the shifted logits are exactly x + 1e8 and have
    the same exact answer; both are within the contract of it (the kernel's exps take another route
    for a row max beyond 2^14, so the two need not agree bit for bit)."""
    rng = np.random.default_rng(3)
    x = (8.0 * rng.integers(-4, 5, (50, 1000))).astype(np.float32)
    shifted = x + np.float32(1e8)
    assert np.array_equal(shifted.astype(np.float64) - 1e8, x)
    y = rng.integers(0, 1000, 50)
    target_prob = one_hot(y, 1000)
    softmax = exact("softmax", x)
    for reduction in ["mean", "none"]:
        want_loss, want_grad = exact("softmax_cross_entropy", x, y, reduction=reduction)
        scale = 1 / 50 if reduction == "mean" else 1
        for logits in (x, shifted):
            loss, grad = softmax_ce_c.softmax_cross_entropy(logits, y, reduction=reduction)
            assert_within_ulps(loss, want_loss, LOSS_ULPS)
            assert_grad_within_contract(grad, want_grad, softmax, target_prob, scale)
    for logits in (x, shifted):
        assert_within_ulps(softmax_ce_c.softmax(logits), softmax, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_probabilities_keep_their_relative_accuracy(dtype):
    """exp(x_k - max) must see the exact difference: rounding it first costs |x_k - max| * eps."""
    spread = 80.0 if dtype == np.float32 else 700.0
    x = np.random.default_rng(4).uniform(-spread, 0.0, (4, 999)).astype(dtype)
    x[:, 0] = 0.0
    p = softmax_ce_c.softmax(x)
    want = exact("softmax", x)
    normal = want >= np.finfo(dtype).tiny
    assert normal.sum() > 1000
    assert_within_ulps(p[normal], want[normal], 4)


@pytest.mark.parametrize("n_classes", [2, 3, 10, 48, 49, 72, 73, 88, 89, 1000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logsumexp_near_zero_keeps_its_relative_accuracy(dtype, n_classes):
    """logsumexp = max + log1p(rest) cancels where the answer is near 0, as for log-probabilities: the
    float exps of float32 and bfloat16 rows left such float32 answers thousands of ulps off, some of
    the wrong sign; those rows take their rest again from exps in double (logsumexp_cancels), in
    groups (K up to 48 for bfloat16, 72 or 88 for float32: both sides) and row by row. Within 4 ulp
    (bfloat16: 1) where the answer is at least 2^-24 (|max| + 1) from 0; closer, within half an ulp
    and 2 eps64 (|max| + 1), the double sums' own error. The rows: log-probabilities shifted by
    1e-8 to 1, and rows whose max is itself near 0, their other logits far below it."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(8)
    n_rows = 3 * (4096 // n_classes + 64)
    x = rng.standard_normal((n_rows, n_classes)) * 2
    answer = rng.choice([-1, 1], (n_rows, 1)) * 10.0 ** rng.uniform(-8, 0, (n_rows, 1))
    x = x - np.log(np.exp(x).sum(axis=-1, keepdims=True)) + answer  # log-probabilities, shifted
    tiny = 10.0 ** rng.uniform(-9, -5, (n_rows // 3, 1))
    # a max of -tiny, the rest summing to about tiny: an answer of about tiny times the noise
    x[1::3] = -tiny + np.log(tiny / max(n_classes - 1, 1)) + rng.normal(0.0, 0.1, (n_rows // 3, n_classes))
    x[1::3, 0] = -tiny[:, 0]
    # a max of +-tiny, the others 12 to 20 below it
    top = rng.choice([-1, 1], tiny.shape) * tiny
    x[2::3] = top - rng.uniform(12.0, 20.0, (n_rows // 3, n_classes))
    x[2::3, 0] = top[:, 0]
    x = x.astype(dtype)
    got = softmax_ce_c.logsumexp(x)
    exact_x = x.astype(np.float64).astype(np.longdouble)
    want = reference.logsumexp(exact_x)  # in longdouble: float64's sums would cancel too
    scale = np.abs(exact_x.max(axis=-1)) + 1
    far = np.abs(want) >= 2.0**-24 * scale
    assert far.sum() > n_rows // 4 and (~far).sum() > n_rows // 4
    assert_within_ulps(got[far], want[far], 1 if dtype.itemsize == 2 else 4)
    spacing = np.spacing(np.abs(want[~far]).astype(dtype)).astype(np.longdouble)
    error = np.abs(got[~far].astype(np.longdouble) - want[~far])
    assert np.all(error <= spacing / 2 + 2 * np.finfo(np.float64).eps * scale[~far])  # measured: 0.48 eps64


def coefficients(target, weight, label_smoothing):
    """c_k of each class-index row: w_k eps / K, plus (1 - eps) w_y at its index."""
    n_classes = weight.size
    on_target = one_hot(target, n_classes) * (1 - label_smoothing) * weight[target, None]
    return weight * label_smoothing / n_classes + on_target


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n_classes", [5, 100])  # the row groups, and the row path
def test_target_factor_below_floats_normal_range(n_classes, label_smoothing):
    """grad_scale 1e-44 is a subnormal float: rounded to float, the target factor kept few digits, and
    its products with weights of 1e30 came out 2% off. Such rows are computed in double."""
    x = np.random.default_rng(33).standard_normal((3, n_classes)).astype(np.float32)
    target, weight = np.array([0, 1, 2]), np.full(n_classes, 1e30)
    options = dict(weight=weight, label_smoothing=label_smoothing, reduction="sum", grad_scale=1e-44)
    grad = softmax_ce_c.softmax_cross_entropy(x, target, **options)[1]
    want = exact("softmax_cross_entropy", x, target, **options)[1]
    assert_grad_within_contract(grad, want, exact("softmax", x), coefficients(target, weight, label_smoothing), 1e-44)


@pytest.mark.parametrize("n_classes", [2, 100])  # the row groups, and the row path
@pytest.mark.parametrize("label_smoothing", [0.0, 1.0])
def test_target_term_just_below_float_max_stays_finite(label_smoothing, n_classes):
    """c_k times the target factor just below the largest float in double, each rounded to float
    first: their float product was inf (the row groups). Such rows are computed in double."""
    c = 1 + 2.0**-24 + 2.0**-40
    grad_scale = 2.0**128 - 2.0**105 - 2.0**89  # c grad_scale <= FLT_MAX, rounded up in float
    x = np.zeros((1, n_classes), np.float32)
    x[0, 2:] = -np.inf
    weight = np.zeros(n_classes)
    weight[1] = c * (n_classes if label_smoothing else 1)  # its c_1 is c
    target = np.array([0 if label_smoothing else 1])
    options = dict(weight=weight, label_smoothing=label_smoothing, reduction="sum", grad_scale=grad_scale)
    grad = softmax_ce_c.softmax_cross_entropy(x, target, **options)[1]
    want = exact("softmax_cross_entropy", x, target, **options)[1]
    assert np.all(np.isfinite(grad))
    assert_grad_within_contract(grad, want, exact("softmax", x), coefficients(target, weight, label_smoothing),
                                grad_scale)

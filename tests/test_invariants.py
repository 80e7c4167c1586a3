"""Properties every answer must have, whatever the exact values: one-hot targets equal class indices,
losses are >= 0, gradient rows sum to 0, K=1 and empty batches behave as PyTorch, NaN stays in its
row, inputs are never modified, results have the documented types, and a row's bits do not depend on
where it starts in a cache line."""
import itertools

import numpy as np
import pytest

import softmax_ce_c
from helpers import at_line_offset, make_index_target, make_logits, make_prob_target, one_hot

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_targets_equal_class_indices(dtype, reduction):
    rng = np.random.default_rng(10)
    x = make_logits(rng, (6, 4, 33), dtype)
    y = make_index_target(rng, (6, 4), 33)
    by_index = softmax_ce_c.softmax_cross_entropy(x, y, reduction=reduction)
    by_probs = softmax_ce_c.softmax_cross_entropy(x, one_hot(y, 33).astype(dtype), reduction=reduction)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(by_probs[0], by_index[0], rtol=4 * eps)
    np.testing.assert_allclose(by_probs[1], by_index[1], rtol=0, atol=4 * eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_is_non_negative_and_gradient_rows_sum_to_zero(dtype):
    rng = np.random.default_rng(11)
    x = make_logits(rng, (200, 50), dtype, "wide")
    for target in [make_index_target(rng, 200, 50), make_prob_target(rng, (200, 50), dtype)]:
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none")
        assert np.all(loss >= 0)
        assert np.all(np.abs(grad.astype(np.float64).sum(axis=1)) <= 50 * np.finfo(dtype).eps)


def test_shift_invariance():
    rng = np.random.default_rng(12)
    x = np.round(make_logits(rng, (30, 17), np.float64) * 64) / 64  # exact under shifts by integers
    y = make_index_target(rng, 30, 17)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none")
    for shift in [-1000.0, 37.0, 2.0**30]:
        shifted_loss, shifted_grad = softmax_ce_c.softmax_cross_entropy(x + shift, y, reduction="none")
        assert np.array_equal(loss, shifted_loss) and np.array_equal(grad, shifted_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_class_has_zero_loss_and_zero_gradient(dtype):
    x = np.array([[3.0], [-7.5], [0.0]], dtype)
    options = [{}, dict(softcap=5.0, label_smoothing=0.3, weight=np.array([2.0]))]
    for target, option in itertools.product([np.zeros(3, np.int64), np.ones((3, 1), dtype)], options):
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none", **option)
        assert np.array_equal(loss, np.zeros(3)) and np.array_equal(grad, np.zeros((3, 1)))
        assert not np.any(np.signbit(grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    x = np.zeros((0, 7), dtype)
    y = np.zeros(0, np.int64)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y)
    assert np.isnan(loss) and grad.shape == (0, 7) and grad.dtype == dtype
    assert softmax_ce_c.cross_entropy(x, y, reduction="sum") == 0
    assert softmax_ce_c.cross_entropy(x, y, reduction="none").shape == (0,)
    assert softmax_ce_c.logsumexp(x).shape == (0,) and softmax_ce_c.softmax(x).shape == (0, 7)


@pytest.mark.parametrize("targets", ["smoothed", "lone index"])
@pytest.mark.parametrize("n_classes", [1, 2, 3, 4, 6, 8, 10, 16, 17, 32, 33, 48, 49, 65, 72, 73, 88, 89])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_gets_the_same_answer_whatever_rows_come_with_it(dtype, n_classes, targets):
    """Rows of up to 48 classes (float32 72, or 88 on AVX-512) are computed 32 (float64: 16) at a
    time, one per vector lane: a row
    alone, in a partial group or in a full one must come out bitwise the same. Smoothed class
    indices take the general group steps; a lone class index (no smoothing: weights, an ignored
    class, an upstream gradient per row) the ones of its own (on AVX-512, float32's intrinsics)."""
    rng = np.random.default_rng(13)
    x = make_logits(rng, (37, n_classes), dtype, "special")
    y = make_index_target(rng, 37, n_classes)
    upstream = rng.uniform(0.5, 2.0, 37)
    if targets == "smoothed":
        options = dict(label_smoothing=0.1)
    else:  # the class of row 20 ignored wherever it is a target
        options = dict(weight=rng.uniform(0.5, 2.0, n_classes), ignore_index=int(y[20]))
    options.update(reduction="none", z_loss=1e-3)
    for softcap in (None, 5.0):
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, softcap=softcap, grad_scale=upstream, **options)
        for n in [0, 1, 15, 16, 17, 20, 31, 32, 33, 36]:
            rows = slice(n, n + 1)
            row_loss, row_grad = softmax_ce_c.softmax_cross_entropy(x[rows], y[rows], softcap=softcap,
                                                                    grad_scale=upstream[rows], **options)
            assert np.array_equal(row_loss, loss[rows], equal_nan=True)
            assert np.array_equal(row_grad, grad[rows], equal_nan=True)
        tail_loss = softmax_ce_c.cross_entropy(x[5:], y[5:], softcap=softcap, **options)
        assert np.array_equal(tail_loss, loss[5:], equal_nan=True)


@pytest.mark.parametrize("n_classes", [3, 8, 10, 12, 20, 32])
@pytest.mark.parametrize("n_rows", [13, 29, 45])
def test_a_partial_group_writes_its_rows_and_nothing_after(n_rows, n_classes):
    """A group goes back to its rows 16 rows and at most 8 classes at a time, a masked store per row
    (float32 on AVX-512): in a last group of 13 or 29 rows (16-row blocks of 13 rows, of 16 and 13)
    each row comes out as it does alone, and the memory after the gradient keeps what it held."""
    rng = np.random.default_rng(14)
    x = make_logits(rng, (n_rows, n_classes), np.float32, "special")
    y = make_index_target(rng, n_rows, n_classes)
    buffer = np.full((n_rows + 2) * n_classes, 7.0, np.float32)
    out = buffer[: n_rows * n_classes].reshape(n_rows, n_classes)
    softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", out=out)
    assert np.all(buffer[n_rows * n_classes:] == 7.0)
    probabilities = softmax_ce_c.softmax(x)
    for n in range(n_rows):
        _, row_grad = softmax_ce_c.softmax_cross_entropy(x[n:n + 1], y[n:n + 1], reduction="none")
        assert np.array_equal(row_grad, out[n:n + 1], equal_nan=True)
        assert np.array_equal(softmax_ce_c.softmax(x[n:n + 1]), probabilities[n:n + 1], equal_nan=True)


def test_special_values_stay_in_their_row():
    x = np.zeros((5, 4), np.float32)
    x[0, 1] = np.nan  # NaN row
    x[1, 2] = np.inf  # +inf logit: NaN row
    x[2] = -np.inf  # no finite logit: NaN row
    x[3, 1:] = -np.inf  # masked classes; the target (1) is one of them: +inf loss
    y = np.array([0, 0, 0, 1, 2])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none")
    assert np.all(np.isnan(loss[:3])) and np.all(np.isnan(grad[:3]))
    assert loss[3] == np.inf and np.array_equal(grad[3], [1.0, -1.0, 0.0, 0.0])
    assert np.isclose(loss[4], np.log(4)) and np.all(np.isfinite(grad[4]))
    assert np.isnan(softmax_ce_c.cross_entropy(x, y))
    assert np.array_equal(softmax_ce_c.logsumexp(x[1:3]), [np.inf, -np.inf])


def test_zero_probability_on_a_masked_class_adds_nothing():
    x = np.array([[0.0, -np.inf, 1.0]])
    t = np.array([[0.5, 0.0, 0.5]])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, t, reduction="sum")
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and grad[0, 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_never_modified(dtype):
    rng = np.random.default_rng(13)
    x = make_logits(rng, (9, 3, 11), dtype, "special")
    index = make_index_target(rng, (9, 11), 3)
    probs = make_prob_target(rng, (9, 3, 11), dtype, axis=1)
    before = [a.copy() for a in (x, index, probs)]
    for target in [index, probs]:
        for reduction in REDUCTIONS:
            softmax_ce_c.softmax_cross_entropy(x, target, axis=1, reduction=reduction)
            softmax_ce_c.cross_entropy(x, target, axis=1, reduction=reduction)
    for name in ["logsumexp", "log_softmax", "softmax"]:
        getattr(softmax_ce_c, name)(x, axis=1)
    for original, now in zip(before, (x, index, probs)):
        assert original.tobytes() == now.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_result_types(dtype):
    x = np.zeros((2, 3, 4), dtype)
    y = np.zeros((2, 3), np.int64)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y)
    assert type(loss) is np.dtype(dtype).type and grad.shape == x.shape and grad.dtype == dtype
    assert softmax_ce_c.cross_entropy(x, y, reduction="none").shape == (2, 3)
    one_row_loss = softmax_ce_c.cross_entropy(x[0, 0], np.int64(1), reduction="none")
    assert type(one_row_loss) is np.dtype(dtype).type
    assert type(softmax_ce_c.logsumexp(x[0, 0])) is np.dtype(dtype).type


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduced_losses_are_rounded_as_numpys_cast(dtype):
    """The reduced loss is made a NumPy scalar by a product with one (cheaper than dtype(x)): the
    same bits as dtype(x) for every Python float, subnormal, overflowing and special ones too."""
    from softmax_ce_c._api import _LOSS_SCALAR

    rng = np.random.default_rng(16)
    values = (rng.standard_normal(20000) * 10.0 ** rng.integers(-330, 307, 20000)).tolist()
    values += [0.0, -0.0, np.nan, np.inf, -np.inf, 2.0**-150, 1.5 * 2.0**-149, 3.4028235e38, 3.5e38, 1e308]
    scalar_type = np.dtype(dtype).type
    with np.errstate(over="ignore", under="ignore"):
        for value in values:
            got, want = _LOSS_SCALAR[scalar_type](value), scalar_type(value)
            assert type(got) is scalar_type and got.tobytes() == want.tobytes(), value


def test_integer_target_dtypes_agree():
    rng = np.random.default_rng(14)
    x = make_logits(rng, (20, 7), np.float32)
    y = make_index_target(rng, 20, 7)
    want = softmax_ce_c.softmax_cross_entropy(x, y)
    for dtype in [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64]:
        got = softmax_ce_c.softmax_cross_entropy(x, y.astype(dtype))
        assert got[0] == want[0] and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shortcut_for_plain_calls_agrees_with_the_general_path(dtype, reduction):
    """C-contiguous logits with int64 targets and no option skip the general checks; an int32
    target, strided logits or an explicit default option takes the general path: same answer."""
    rng = np.random.default_rng(15)
    x = make_logits(rng, (3, 50, 7), dtype, "special")
    y = make_index_target(rng, (3, 50), 7)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction=reduction)
    strided = np.zeros((3, 50, 14), dtype)[:, :, ::2]
    strided[...] = x
    strided_y = np.zeros((3, 100), np.int64)[:, ::2]
    strided_y[...] = y
    for other_x, other_y, options in [(x, y.astype(np.int32), {}), (strided, y, {}), (x, strided_y, {}),
                                      (x, y, {"label_smoothing": np.float64(0.0)}), (x, y, {"axis": 2})]:
        other_loss, other_grad = softmax_ce_c.softmax_cross_entropy(other_x, other_y, reduction=reduction, **options)
        assert np.array_equal(other_loss, loss, equal_nan=True) and np.array_equal(other_grad, grad, equal_nan=True)
        assert np.array_equal(softmax_ce_c.cross_entropy(other_x, other_y, reduction=reduction, **options), loss,
                              equal_nan=True)
    out, in_place = np.empty_like(x), x.copy()
    assert np.array_equal(softmax_ce_c.softmax_cross_entropy(x, y, reduction=reduction, out=out)[0], loss,
                          equal_nan=True)
    softmax_ce_c.softmax_cross_entropy(in_place, y, reduction=reduction, inplace=True)
    assert np.array_equal(out, grad, equal_nan=True) and np.array_equal(in_place, grad, equal_nan=True)


def assert_same_results(got, want):
    assert type(got) is type(want) and np.shape(got) == np.shape(want)
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("shape", [(7,), (0, 7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shortcut_for_plain_calls_agrees_with_the_general_path_on_one_row_or_none(dtype, shape):
    """One row (a 0-d target) and an empty batch, by the shortcut (int64 targets) and the general
    path (int32): the same answers, of the same shapes and types."""
    rng = np.random.default_rng(16)
    x = make_logits(rng, shape, dtype)
    y = make_index_target(rng, shape[:-1], 7)
    for reduction in REDUCTIONS:
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction=reduction)
        general_loss, general_grad = softmax_ce_c.softmax_cross_entropy(x, y.astype(np.int32), reduction=reduction)
        assert_same_results(loss, general_loss)
        assert_same_results(grad, general_grad)
        assert_same_results(softmax_ce_c.cross_entropy(x, y, reduction=reduction), general_loss)


@pytest.mark.parametrize("shape", [(3, 50, 7), (7,), (0, 7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shortcut_for_plain_row_functions_agrees_with_the_general_path(dtype, shape):
    """C-contiguous rows are read as they are; a strided copy takes the general path (checks, and a
    copy to rows): the same answers, of the same shapes and types."""
    x = make_logits(np.random.default_rng(17), shape, dtype, "special")
    strided = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    strided[...] = x
    for function in (softmax_ce_c.logsumexp, softmax_ce_c.log_softmax, softmax_ce_c.softmax):
        assert_same_results(function(x), function(strided))


@pytest.mark.parametrize("n_classes", [40, 200])  # 200: the max's loop of four vectors runs too
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16", "bfloat16"])
def test_rows_give_the_same_bits_wherever_they_start_in_a_cache_line(dtype_name, n_classes):
    """The row max takes its first vector where the row starts and the rest from the first aligned
    vector on: the max anywhere among the first classes, ties (the first index wins), a zero max of
    both signs (the first zero's sign) and NaN must give the bits of the same rows placed elsewhere
    in a cache line."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if dtype_name == "bfloat16" else np.dtype(dtype_name)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((24, n_classes))
    for row in range(20):
        x[row, row] = 5.0  # the max in each of the first 20 classes
    x[20, [2, 17]] = 5.0  # a tie
    x[21] = -np.inf
    x[21, 3], x[21, 9] = -0.0, 0.0  # a zero max: -0 first
    x[22, 7] = np.nan
    x = x.astype(dtype)
    target = make_index_target(rng, 24, n_classes)
    bits_of = lambda array: f"u{array.itemsize}"  # noqa: E731 (NaN and signed zeros compare by their bits)
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(at_line_offset(x, 0), target, reduction="none")
    want_lse = softmax_ce_c.logsumexp(at_line_offset(x, 0))
    for offset in range(1, 16):
        logits = at_line_offset(x, offset)
        loss, grad = softmax_ce_c.softmax_cross_entropy(logits, target, reduction="none")
        assert np.array_equal(loss.view(bits_of(loss)), want_loss.view(bits_of(loss)))
        assert np.array_equal(grad.view(bits_of(grad)), want_grad.view(bits_of(grad)))
        assert np.array_equal(softmax_ce_c.logsumexp(logits).view(bits_of(want_lse)), want_lse.view(bits_of(want_lse)))

"""Every public function against the reference, over shapes, dtypes, target kinds, values and layouts,
held to the accuracy contract (helpers.py)."""
import zlib

import numpy as np
import pytest

import softmax_ce_c
from helpers import (
    assert_grad_within_contract,
    assert_loss_accurate,
    assert_within_ulps,
    exact,
    make_index_target,
    make_logits,
    make_prob_target,
    misaligned,
    one_hot,
)

SHAPES = [  # (logits shape, class axis)
    ((0, 5), -1),
    ((1, 1), -1),
    ((3, 1), -1),
    ((4, 2), -1),
    ((7, 13), -1),
    ((5, 1000), -1),
    ((2, 32000), -1),
    ((1, 262144), -1),
    ((9,), -1),
    ((2, 3, 5), -1),
    ((3, 6, 4), 1),
    ((2, 5, 3, 2), 1),
    ((4, 3), 0),
]
DTYPES = [np.float32, np.float64]
VALUES = ["normal", "wide", "offset", "special"]
REDUCTIONS = ["mean", "sum", "none"]


def rng_for(*params):
    """A generator seeded by the test's parameters: every case is reproducible on its own."""
    return np.random.default_rng(zlib.crc32(repr(params).encode()))


def make_target(rng, kind, shape, axis, dtype):
    if kind == "index":
        return make_index_target(rng, np.delete(shape, axis % len(shape)), shape[axis])
    return make_prob_target(rng, shape, dtype, axis, normalised=(kind == "prob"))



def grad_scale(reduction, shape, axis):
    n_rows = int(np.prod(shape)) // shape[axis]
    return 1.0 / n_rows if reduction == "mean" and n_rows else 1.0


def check_cross_entropy(x, target, axis):
    target_prob = one_hot(target, x.shape[axis], axis) if target.dtype.kind in "iu" else target
    softmax = exact("softmax", x, axis)
    for reduction in REDUCTIONS:
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, axis=axis, reduction=reduction)
        want_loss, want_grad = exact("softmax_cross_entropy", x, target, axis=axis, reduction=reduction)
        assert np.asarray(loss).dtype == x.dtype and grad.dtype == x.dtype
        assert grad.shape == x.shape and np.shape(loss) == np.shape(want_loss)
        assert_loss_accurate(loss, want_loss)
        scale = grad_scale(reduction, x.shape, axis)
        assert_grad_within_contract(grad, want_grad, softmax, target_prob, scale, axis)
        loss_only = softmax_ce_c.cross_entropy(x, target, axis=axis, reduction=reduction)
        assert np.array_equal(loss_only, loss, equal_nan=True)


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("target_kind", ["index", "prob", "unnormalised"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", SHAPES)
def test_cross_entropy_matches_reference(shape, axis, dtype, target_kind, values):
    rng = rng_for(shape, axis, dtype, target_kind, values)
    x = make_logits(rng, shape, dtype, values)
    check_cross_entropy(x, make_target(rng, target_kind, shape, axis, dtype), axis)


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", SHAPES)
def test_row_functions_match_reference(shape, axis, dtype, values):
    x = make_logits(rng_for(shape, axis, dtype, values), shape, dtype, values)
    for name in ["log_softmax", "softmax"]:
        result = getattr(softmax_ce_c, name)(x, axis)
        assert result.dtype == x.dtype and result.shape == x.shape
        assert_within_ulps(result, exact(name, x, axis), 4)
    lse = softmax_ce_c.logsumexp(x, axis)
    assert np.shape(lse) == np.shape(exact("logsumexp", x, axis))
    assert_within_ulps(lse, exact("logsumexp", x, axis), 4)


def layouts(base):
    """Views of base in the layouts users hand over, each with the class axis last."""
    return {
        "fortran": np.asfortranarray(base),
        "strided": base[::2, ::3],
        "negative strides": base[::-1, ::-2],
        "misaligned": misaligned(base),
        "read-only": np.lib.stride_tricks.as_strided(base, writeable=False),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["fortran", "strided", "negative strides", "misaligned", "read-only"])
def test_any_layout_gives_the_contiguous_answer(layout, dtype):
    rng = rng_for(layout, dtype)
    x = layouts(make_logits(rng, (12, 30), dtype))[layout]
    n_rows, n_classes = x.shape
    index = np.repeat(make_index_target(rng, n_rows, n_classes), 2)[::2]  # a strided target too
    prob = layouts(make_prob_target(rng, (12, 30), dtype))[layout]
    contiguous = np.ascontiguousarray
    for target in [index, prob]:
        got = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none")
        want = softmax_ce_c.softmax_cross_entropy(contiguous(x), contiguous(target), reduction="none")
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    for name in ["logsumexp", "log_softmax", "softmax"]:
        function = getattr(softmax_ce_c, name)
        assert np.array_equal(function(x), function(contiguous(x)))


def test_class_axis_not_last_equals_moving_it_last():
    rng = rng_for("axis")
    x = make_logits(rng, (3, 7, 4, 5), np.float32)
    y = make_index_target(rng, (3, 4, 5), 7)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, axis=1, reduction="none")
    moved_loss, moved_grad = softmax_ce_c.softmax_cross_entropy(np.moveaxis(x, 1, -1), y, reduction="none")
    assert np.array_equal(loss, moved_loss)
    assert np.array_equal(grad, np.moveaxis(moved_grad, -1, 1))
    mean_grad = softmax_ce_c.softmax_cross_entropy(x, y, axis=-3)[1]
    np.testing.assert_allclose(mean_grad, grad / y.size, rtol=3e-7, atol=0)

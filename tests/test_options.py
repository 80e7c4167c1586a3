"""Every option of softmax_cross_entropy and cross_entropy against the reference (which
test_reference_options.py holds to PyTorch), alone and together, in every dtype; out= and inplace."""
import zlib

import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c import reference
from helpers import assert_loss_accurate, exact, make_index_target, make_logits, make_prob_target

SHAPES = [((0, 5), -1), ((1, 1), -1), ((7, 13), -1), ((3, 1000), -1), ((2, 3, 5), -1), ((3, 6, 4), 1)]
OPTION_SETS = {
    "weight": dict(weight="random"),
    "ignore_index": dict(ignore_index="present"),
    "weight+ignore": dict(weight="random", ignore_index="present"),
    "smoothing 0.1": dict(label_smoothing=0.1),
    "smoothing 1": dict(label_smoothing=1.0),
    "weight+smoothing": dict(weight="random", label_smoothing=0.3),
    "z_loss": dict(z_loss=1e-2),
    "softcap": dict(softcap=3.0),
    "everything": dict(weight="random", ignore_index="present", label_smoothing=0.2, z_loss=1e-3, softcap=4.0),
}


def rng_for(*params):
    return np.random.default_rng(zlib.crc32(repr(params).encode()))


def concrete_options(options, rng, n_classes, index_target):
    """Random weights; an ignore_index that occurs in the (index) target."""
    options = dict(options)
    if options.get("weight") == "random":
        options["weight"] = rng.uniform(0.2, 3.0, n_classes)
    if options.get("ignore_index") == "present":
        if index_target is None:
            del options["ignore_index"]  # only for class indices
        else:
            options["ignore_index"] = int(index_target.flat[0]) if index_target.size else 0
    return options


def assert_grad_close(grad, want, dtype, axis):
    """Within 16 eps of the row's largest gradient element: semantics and accuracy of the options
    (the per-element contract is held in test_api_vs_reference without options)."""
    want = np.asarray(want, dtype=np.float64)
    scale = np.max(np.abs(np.nan_to_num(want, nan=0.0, posinf=0.0, neginf=0.0)), axis=axis, keepdims=True)
    tolerance = 16 * np.finfo(dtype).eps * scale + np.finfo(dtype).smallest_subnormal
    got = grad.astype(np.float64)
    ok = (np.abs(got - want) <= tolerance) | (np.isnan(got) & np.isnan(want)) | (got == want)
    assert np.all(ok), f"max error {np.nanmax(np.abs(got - want))}"


@pytest.mark.parametrize("option_set", OPTION_SETS)
@pytest.mark.parametrize("target_kind", ["index", "prob", "unnormalised"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", SHAPES)
def test_options_match_reference(shape, axis, dtype, target_kind, option_set):
    rng = rng_for(shape, axis, dtype, target_kind, option_set)
    x = make_logits(rng, shape, dtype, "special" if "softcap" in option_set else "normal")
    row_shape = tuple(np.delete(shape, axis % len(shape)))
    if target_kind == "index":
        target = make_index_target(rng, row_shape, shape[axis])
    else:
        target = make_prob_target(rng, shape, dtype, axis, normalised=(target_kind == "prob"))
    options = concrete_options(OPTION_SETS[option_set], rng, shape[axis], target if target_kind == "index" else None)
    for reduction, grad_scale in [("mean", 1.0), ("sum", -2.5), ("none", 1.0), ("none", rng.uniform(-2, 2, row_shape))]:
        loss, grad = softmax_ce_c.softmax_cross_entropy(
            x, target, axis=axis, reduction=reduction, grad_scale=grad_scale, **options
        )
        want_loss, want_grad = exact(
            "softmax_cross_entropy", x, target, axis=axis, reduction=reduction, grad_scale=grad_scale, **options
        )
        assert_loss_accurate(loss, want_loss)
        assert_grad_close(grad, want_grad, dtype, axis)
        loss_only = softmax_ce_c.cross_entropy(x, target, axis=axis, reduction=reduction, **options)
        assert np.array_equal(loss_only, loss, equal_nan=True)


def test_all_rows_ignored():
    x = make_logits(rng_for("ignored"), (4, 6), np.float32)
    y = np.full(4, 3)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, ignore_index=3, z_loss=0.1)
    assert np.isnan(loss) and np.array_equal(grad, np.zeros_like(x))
    assert softmax_ce_c.cross_entropy(x, y, ignore_index=3, reduction="sum") == 0
    assert np.array_equal(softmax_ce_c.cross_entropy(x, y, ignore_index=3, reduction="none"), np.zeros(4))


def test_ignored_rows_are_skipped_even_with_out_of_range_ignore_index():
    x = make_logits(rng_for("ignore -1"), (3, 4), np.float64)
    y = np.array([1, -1, 2])
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, ignore_index=-1, reduction="none")
    assert loss[1] == 0 and not np.any(grad[1])
    assert loss[0] > 0 and np.any(grad[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_out_and_inplace_give_the_allocating_answer(dtype, reduction):
    rng = rng_for("out", dtype, reduction)
    x = make_logits(rng, (9, 40), dtype)
    y = make_index_target(rng, 9, 40)
    options = dict(reduction=reduction, label_smoothing=0.1, z_loss=1e-3, softcap=10.0)
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, y, **options)

    out = np.full_like(x, np.nan)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, out=out, **options)
    assert grad is out and np.array_equal(out, want_grad) and np.array_equal(loss, want_loss)

    logits = x.copy()
    loss, grad = softmax_ce_c.softmax_cross_entropy(logits, y, inplace=True, **options)
    assert grad is logits and np.array_equal(logits, want_grad) and np.array_equal(loss, want_loss)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_out_and_inplace_with_the_class_axis_not_last(target_kind):
    rng = rng_for("axis out", target_kind)
    x = make_logits(rng, (3, 7, 5), np.float32)
    target = make_index_target(rng, (3, 5), 7) if target_kind == "index" else make_prob_target(rng, (3, 7, 5), np.float32, 1)
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, target, axis=1, weight=np.arange(1.0, 8.0))
    out = np.empty_like(x)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, axis=1, weight=np.arange(1.0, 8.0), out=out)
    assert grad is out and np.array_equal(out, want_grad) and loss == want_loss
    logits = x.copy()
    loss, grad = softmax_ce_c.softmax_cross_entropy(logits, target, axis=1, weight=np.arange(1.0, 8.0), inplace=True)
    assert grad is logits and np.array_equal(logits, want_grad) and loss == want_loss


def test_inplace_half_precision():
    x = make_logits(rng_for("inplace half"), (5, 30), np.float16)
    y = np.arange(5)
    want_loss, want_grad = softmax_ce_c.softmax_cross_entropy(x, y)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, inplace=True)
    assert grad is x and np.array_equal(x, want_grad) and loss == want_loss


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_target_dtype_with_ignore_index(dtype):
    rng = rng_for("int dtypes", dtype)
    x = make_logits(rng, (30, 9), np.float32)
    y = make_index_target(rng, 30, 9)
    want = softmax_ce_c.softmax_cross_entropy(x, y, ignore_index=4, label_smoothing=0.1)
    got = softmax_ce_c.softmax_cross_entropy(x, y.astype(dtype), ignore_index=4, label_smoothing=0.1)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("prob_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("logit_dtype", [np.float32, np.float64])
def test_probability_targets_of_any_float_dtype(logit_dtype, prob_dtype):
    rng = rng_for("prob dtypes", logit_dtype, prob_dtype)
    x = make_logits(rng, (6, 11), logit_dtype)
    t = make_prob_target(rng, (6, 11), prob_dtype)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, t)
    want_loss, want_grad = exact("softmax_cross_entropy", x, t.astype(np.float64))
    rtol = 8 * np.finfo(np.float32 if np.float32 in (logit_dtype, prob_dtype) else np.float64).eps
    np.testing.assert_allclose(loss, want_loss, rtol=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=rtol)


@pytest.mark.parametrize("n_rows", [8, 20000])  # one chunk; many, on two threads, the indices' copy in kept memory
@pytest.mark.parametrize("n_classes", [2, 40])  # the row groups and the row path
@pytest.mark.parametrize("weighted", [False, True])  # a plain call and the general path
def test_inputs_that_view_out_are_read_safely(n_rows, n_classes, weighted):
    """A class-index target and a weight that live in out= (once this crashed: the kernel read the
    target again after writing gradient rows over it); they are read from private copies."""
    x = make_logits(rng_for("alias out", n_rows, n_classes), (n_rows, n_classes), np.float64)
    out = np.zeros((n_rows, n_classes))
    target = out.reshape(-1).view(np.int64)[:n_rows]
    target[:] = np.arange(n_rows) % n_classes
    weight = out.reshape(-1)[n_rows:n_rows + n_classes] if weighted else None
    if weighted:
        weight[:] = np.linspace(0.5, 2.0, n_classes)
    want = softmax_ce_c.softmax_cross_entropy(x, target.copy(), weight=None if weight is None else weight.copy(),
                                              reduction="none", num_threads=2)
    got = softmax_ce_c.softmax_cross_entropy(x, target, weight=weight, reduction="none", out=out, num_threads=2)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_grad_scale_that_views_the_logits_with_inplace():
    x = make_logits(rng_for("alias inplace"), (8, 2), np.float64)
    logits = x.copy()
    grad_scale = logits.reshape(-1)[:8]  # overwritten by the gradient as the kernel goes
    want = softmax_ce_c.softmax_cross_entropy(x, np.ones(8, np.int64), grad_scale=grad_scale.copy(), reduction="none")
    got = softmax_ce_c.softmax_cross_entropy(logits, np.ones(8, np.int64), grad_scale=grad_scale, reduction="none",
                                             inplace=True)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("n_classes", [10, 100])  # the row groups (K <= 48 to 88) and the row path
@pytest.mark.parametrize("bad_weight", [np.inf, np.nan])
def test_a_non_finite_weight_of_a_class_no_target_reaches_changes_nothing(bad_weight, n_classes):
    """Its coefficient is 0 (no target, no smoothing), so it adds nothing, as in the reference."""
    x = np.random.default_rng(3).standard_normal((5, n_classes)).astype(np.float32)
    y = np.array([0, 2, 3, 0, 4])
    weight = np.ones(n_classes)
    weight[1] = bad_weight
    for reduction in ("none", "sum", "mean"):
        loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, weight=weight, reduction=reduction)
        want_loss, want_grad = reference.softmax_cross_entropy(x.astype(np.float64), y, weight=weight,
                                                               reduction=reduction)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_classes", [10, 100])  # the row groups (K <= 48 to 88) and the row path
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_negative_zero_grad_scale_with_smoothing_gives_the_weighted_loops_zeros(dtype, n_classes):
    """grad_scale -0 makes the smoothing's spread -0: each gradient element e p - (-0) is +0, as the
    general loop (with weights of 1) computes it, not e p's -0."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((5, n_classes)).astype(dtype)
    target = rng.integers(0, n_classes, 5)
    options = dict(label_smoothing=0.1, grad_scale=-0.0)
    grad = softmax_ce_c.softmax_cross_entropy(x, target, **options)[1]
    weighted = softmax_ce_c.softmax_cross_entropy(x, target, weight=np.ones(n_classes), **options)[1]
    assert np.all(grad == 0) and np.array_equal(np.signbit(grad), np.signbit(weighted))

"""The NumPy reference (softmax_ce_c.reference) judged against
(a) the seed derivation's formulas, written naively here;
(b) PyTorch float64 autograd, when torch is installed (only those tests skip without it);
(c) invariants of the loss and its gradient.
"""
import numpy as np
import pytest

from softmax_ce_c import reference as ref

INF, NAN = np.inf, np.nan
REDUCTIONS = ("mean", "sum", "none")
TARGET_KINDS = ("index", "prob", "unnormalised prob")


def random_logits(shape, seed=0, scale=3.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def random_target(kind, logits, axis, seed=1):
    """Class indices (logits' shape without `axis`), or probabilities along `axis` summing to 1, or
    non-negative weights that do not (PyTorch accepts both)."""
    rng = np.random.default_rng(seed)
    if kind == "index":
        row_shape = np.delete(logits.shape, axis)
        return rng.integers(0, logits.shape[axis], size=tuple(row_shape))
    weights = rng.uniform(0.0, 1.0, size=logits.shape)
    if kind == "prob":
        return weights / weights.sum(axis=axis, keepdims=True)
    return 3.0 * weights


def assert_matches(actual, expected, rtol=1e-12, atol=1e-14):
    """Same shape, same values; NaN and +-inf must sit in the same places."""
    assert np.shape(actual) == np.shape(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# (a) the seed derivation: L = -1/N sum Y log softmax(X), dL/dX = (softmax(X) - Y) / N


def seed_loss_and_grad(X, labels):
    N, K = X.shape
    Y = np.eye(K)[labels]
    S = np.exp(X) / np.sum(np.exp(X), axis=1, keepdims=True)
    return -np.sum(Y * np.log(S)) / N, (S - Y) / N


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (4, 3), (7, 10), (32, 5)])
@pytest.mark.parametrize("one_hot_as_probabilities", [False, True], ids=["index", "one-hot"])
def test_reference_matches_seed_formulas(shape, one_hot_as_probabilities):
    X = random_logits(shape)
    labels = random_target("index", X, axis=1)
    target = np.eye(shape[1])[labels] if one_hot_as_probabilities else labels
    loss, grad = ref.softmax_cross_entropy(X, target)
    expected_loss, expected_grad = seed_loss_and_grad(X, labels)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


# (b) PyTorch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_cross_entropy(torch, logits, target, axis, reduction):
    """F.cross_entropy in float64 (classes moved to dim 1, torch's layout) and the autograd gradient
    of the loss (of loss.sum() for "none"), moved back to the logits' layout."""
    logits, target = np.asarray(logits, np.float64), np.asarray(target)
    torch_axis = min(1, logits.ndim - 1)
    x = torch.tensor(np.moveaxis(logits, axis, torch_axis), dtype=torch.float64, requires_grad=True)
    if target.dtype.kind == "f":
        t = torch.tensor(np.moveaxis(target, axis, torch_axis), dtype=torch.float64)
    else:
        t = torch.tensor(target, dtype=torch.int64)
    loss = torch.nn.functional.cross_entropy(x, t, reduction=reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), np.moveaxis(x.grad.numpy(), torch_axis, axis)


def assert_reference_matches_torch(torch, logits, target, axis, reduction):
    logits, target = np.asarray(logits, np.float64), np.asarray(target)
    loss, grad = ref.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction)
    expected_loss, expected_grad = torch_cross_entropy(torch, logits, target, axis, reduction)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


LAYOUTS = {
    "2-D": ((6, 5), -1),
    "2-D axis=0": ((4, 5), 0),
    "leading dims": ((2, 3, 4), -1),
    "(N, C, d1, d2) axis=1": ((2, 4, 3, 2), 1),
    "1-D": ((5,), -1),
    "empty batch": ((0, 4), -1),
    "K=1": ((3, 1), -1),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_cross_entropy_matches_torch(torch, shape, axis, kind, reduction):
    logits = random_logits(shape)
    assert_reference_matches_torch(torch, logits, random_target(kind, logits, axis), axis, reduction)


# rows with non-finite logits; PyTorch and the reference agree on all of these
SPECIAL_CASES = {
    "masked classes": ([[-INF, 0.5, 1.0, -INF], [0.0, -INF, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]], [1, 3, 0]),
    "index target on a masked class": ([[-INF, 0.5, 1.0], [0.0, 1.0, 2.0]], [0, 2]),
    "prob target on a masked class": ([[-INF, 0.5, 1.0], [0.0, 1.0, 2.0]], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]),
    "all classes masked": ([[-INF, -INF, -INF], [0.0, 1.0, 2.0]], [1, 2]),
    "+inf logit": ([[INF, 0.5, 1.0], [0.0, 1.0, 2.0]], [1, 2]),
    "+inf logit, prob target": ([[0.5, INF, 1.0], [0.0, 1.0, 2.0]], [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]),
    "+inf and -inf in a row": ([[INF, -INF, 1.0], [0.0, 1.0, 2.0]], [1, 0]),
    "NaN in one row": ([[0.0, 1.0, 2.0], [0.0, NAN, 1.0], [3.0, 1.0, 2.0]], [0, 0, 1]),
    "NaN in one row, prob target": ([[0.0, 1.0, 2.0], [NAN, 0.0, 1.0]], [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]),
    # an all-zero probability row must not hide a NaN row: "a +inf logit makes its row NaN"
    "+inf logit, all-zero prob target": ([[INF, 0.5, 1.0], [0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]]),
    "all classes masked, all-zero prob target": (
        [[-INF, -INF, -INF], [0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    ),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logits, target", SPECIAL_CASES.values(), ids=SPECIAL_CASES.keys())
def test_non_finite_logits_match_torch(torch, logits, target, reduction):
    assert_reference_matches_torch(torch, logits, target, -1, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_probability_on_masked_class_differs_from_torch(torch, reduction):
    # Documented difference: PyTorch computes 0 * log(0) = NaN for a zero target probability on a
    # -inf logit; we define that term as 0, so the loss is the loss without the masked class.
    logits = np.array([[-INF, 0.5, 1.0, 2.0], [0.0, 1.0, -INF, 2.0]])
    target = np.array([[0.0, 0.2, 0.3, 0.5], [0.1, 0.6, 0.0, 0.3]])
    loss, grad = ref.softmax_cross_entropy(logits, target, reduction=reduction)

    torch_loss, torch_grad = torch_cross_entropy(torch, logits, target, -1, reduction)
    assert np.all(np.isnan(torch_loss))  # the difference itself
    assert_matches(grad, torch_grad)  # torch's gradient is finite and agrees

    # ours equals torch's loss on the rows with the masked class removed
    without_masked = [torch_cross_entropy(torch, np.delete(x, k)[None], np.delete(t, k)[None], -1, "none")[0]
                      for x, t, k in zip(logits, target, (0, 2))]
    row_loss = np.concatenate(without_masked)
    expected = {"mean": row_loss.mean(), "sum": row_loss.sum(), "none": row_loss}[reduction]
    assert_matches(loss, expected)


ROW_ARRAYS = {
    "2-D": (random_logits((4, 6)), -1),
    "2-D axis=0": (random_logits((4, 6)), 0),
    "3-D axis=1": (random_logits((2, 3, 4)), 1),
    "1-D": (random_logits((5,)), 0),
    "empty batch": (np.zeros((0, 3)), -1),
    "large logits": (random_logits((3, 5), scale=300.0), -1),
    "non-finite rows": (
        np.array([[INF, 1.0, 2.0], [-INF, -INF, -INF], [NAN, 1.0, 2.0], [INF, -INF, 0.0], [INF, INF, 0.0],
                  [-INF, 0.0, 1.0], [INF, NAN, 0.0], [-INF, NAN, 0.0], [-INF, -INF, 5.0]]),
        -1,
    ),
}


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
@pytest.mark.parametrize("x, axis", ROW_ARRAYS.values(), ids=ROW_ARRAYS.keys())
def test_row_functions_match_torch(torch, name, x, axis):
    torch_function = {
        "logsumexp": torch.logsumexp,
        "log_softmax": torch.nn.functional.log_softmax,
        "softmax": torch.nn.functional.softmax,
    }[name]
    expected = torch_function(torch.tensor(x, dtype=torch.float64), axis).numpy()
    assert_matches(getattr(ref, name)(x, axis=axis), expected)


# (c) invariants


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_row_losses_are_non_negative(kind, scale):
    logits = random_logits((50, 7), scale=scale)
    loss, _ = ref.softmax_cross_entropy(logits, random_target(kind, logits, -1), reduction="none")
    assert loss.shape == (50,)
    assert np.all(loss >= 0)


@pytest.mark.parametrize("kind", TARGET_KINDS)  # p * sum(t) - t sums to 0 whatever sum(t) is
@pytest.mark.parametrize("shape, axis", [((20, 6), -1), ((2, 4, 3, 2), 1)])
def test_gradient_rows_sum_to_zero(shape, axis, kind):
    logits = random_logits(shape)
    _, grad = ref.softmax_cross_entropy(logits, random_target(kind, logits, axis), axis=axis, reduction="none")
    np.testing.assert_allclose(grad.sum(axis=axis), 0.0, atol=1e-14)
    assert np.abs(grad).max() > 0.01  # not trivially zero


@pytest.mark.parametrize(
    "kind, zero_target_on_nan_rows",
    [(kind, False) for kind in TARGET_KINDS] + [("prob", True), ("unnormalised prob", True)],
)
def test_non_finite_logits_stay_in_their_row(kind, zero_target_on_nan_rows):
    logits = random_logits((5, 4))
    target = random_target(kind, logits, -1)
    logits[1, 2], logits[3, 0] = NAN, INF
    nan_rows = np.array([False, True, False, True, False])
    if zero_target_on_nan_rows:  # a zero row adds no terms, but the row is still NaN
        target[nan_rows] = 0.0
    loss, grad = ref.softmax_cross_entropy(logits, target, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss), nan_rows)
    assert np.all(np.isnan(grad[nan_rows]))
    assert np.all(np.isfinite(grad[~nan_rows]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_shift_invariance(kind, reduction):
    logits = random_logits((2, 5, 3))  # classes on axis 1
    target = random_target(kind, logits, 1)
    shift = np.random.default_rng(7).normal(scale=50.0, size=(2, 1, 3))  # one constant per row
    loss, grad = ref.softmax_cross_entropy(logits, target, axis=1, reduction=reduction)
    shifted_loss, shifted_grad = ref.softmax_cross_entropy(logits + shift, target, axis=1, reduction=reduction)
    assert_matches(shifted_loss, loss, atol=1e-12)
    assert_matches(shifted_grad, grad, atol=1e-12)


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_reductions_are_consistent(kind):
    logits = random_logits((3, 4, 5))
    target = random_target(kind, logits, -1)
    losses, grads = zip(*(ref.softmax_cross_entropy(logits, target, reduction=r) for r in REDUCTIONS))
    (mean, sum_, none), (grad_mean, grad_sum, grad_none) = losses, grads
    assert none.shape == (3, 4)
    assert_matches(sum_, none.sum())
    assert_matches(mean, sum_ / 12)
    assert_matches(grad_sum, grad_none)
    assert_matches(grad_mean, grad_sum / 12)

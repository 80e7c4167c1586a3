"""Central finite differences in float64 against the returned gradients, for both the NumPy reference
and the C kernel behind the public API."""
import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c import reference

STEP = 1e-6
TOL = 1e-7  # both relative and absolute

IMPLEMENTATIONS = {"reference": reference, "softmax_ce_c": softmax_ce_c}
LAYOUTS = {"(3, 5)": ((3, 5), -1), "(2, 3, 4) axis=1": ((2, 3, 4), 1), "1-D": ((5,), 0)}


def central_difference(f, x):
    """d f / d x by central differences; f maps an array like x to a scalar."""
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += STEP
        down[i] -= STEP
        grad[i] = (f(up) - f(down)) / (up[i] - down[i])  # the step actually taken
    return grad


def make_target(kind, shape, axis, rng):
    if kind == "index":
        return rng.integers(0, shape[axis], size=tuple(np.delete(shape, axis)))
    weights = rng.uniform(0.1, 1.0, size=shape)
    return weights / weights.sum(axis=axis, keepdims=True) if kind == "prob" else 2.5 * weights


@pytest.mark.parametrize("kind", ["index", "prob", "unnormalised prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape, axis", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("module", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_cross_entropy_gradient_matches_finite_differences(module, shape, axis, reduction, kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=shape)
    target = make_target(kind, shape, axis, rng)

    def total_loss(x):  # for "none", the sum of the row losses
        return np.sum(module.softmax_cross_entropy(x, target, axis=axis, reduction=reduction)[0])

    _, grad = module.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction)
    assert grad.shape == logits.shape
    np.testing.assert_allclose(grad, central_difference(total_loss, logits), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("shape, axis", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("module", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_logsumexp_gradient_is_softmax(module, shape, axis):
    x = np.random.default_rng(1).normal(scale=2.0, size=shape)
    fd = central_difference(lambda y: np.sum(module.logsumexp(y, axis=axis)), x)
    np.testing.assert_allclose(module.softmax(x, axis=axis), fd, rtol=TOL, atol=TOL)


OPTIONS = {
    "weight": dict(weight=np.array([0.5, 2.0, 1.0, 3.0, 0.25])),
    "ignore_index": dict(ignore_index=2),
    "label_smoothing": dict(label_smoothing=0.3),
    "z_loss": dict(z_loss=0.05),
    "softcap": dict(softcap=2.5),
    "all together": dict(weight=np.array([0.5, 2.0, 1.0, 3.0, 0.25]), ignore_index=2, label_smoothing=0.3,
                         z_loss=0.05, softcap=2.5),
}


@pytest.mark.parametrize("kind", ["index", "unnormalised prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("module", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_every_option_gradient_matches_finite_differences(module, options, reduction, kind):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(4, 5))
    target = make_target(kind, (4, 5), -1, rng)
    if kind == "index":
        target[1] = 2  # a row that ignore_index=2 drops
    else:
        options = {k: v for k, v in options.items() if k != "ignore_index"}  # class indices only
    grad_scale = rng.uniform(0.5, 2.0, 4) if reduction == "none" else -1.5

    def total_loss(x):  # the gradient is that of sum(grad_scale * loss)
        loss = module.softmax_cross_entropy(x, target, reduction=reduction, **options)[0]
        return np.sum(grad_scale * loss)

    _, grad = module.softmax_cross_entropy(logits, target, reduction=reduction, grad_scale=grad_scale, **options)
    np.testing.assert_allclose(grad, central_difference(total_loss, logits), rtol=TOL, atol=TOL)

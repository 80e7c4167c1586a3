"""The options (weight, ignore_index, label_smoothing, z_loss, softcap, grad_scale) of the NumPy
reference, and of the C kernel wherever PyTorch is the oracle, judged against
(a) PyTorch float64 autograd (F.cross_entropy, composed with softcap and z-loss), over a seeded grid
    and on edge cases; only these tests skip without torch;
(b) central finite differences, each option alone and all together;
(c) small hand computations and invariants.
"""
import itertools

import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c import reference as ref
from test_gradients import TOL, central_difference
from test_reference import assert_matches

INF, NAN = np.inf, np.nan
REDUCTIONS = ("mean", "sum", "none")
TARGET_KINDS = ("index", "index, ignore", "prob", "unnormalised prob")
SMOOTHINGS = (0.0, 0.1, 0.5, 1.0)

LAYOUTS = {
    "N=0": ((0, 5), -1),
    "K=1": ((4, 1), -1),
    "(N,K)": ((7, 5), -1),
    "1-D": ((6,), -1),
    "leading dims": ((2, 3, 4), -1),
    "(N,C,d) axis=1": ((3, 4, 5), 1),
    "(N,C,d1,d2) axis=1": ((2, 4, 3, 2), 1),
}


def row_shape(shape, axis):
    return tuple(np.delete(shape, axis))


def make_case(layout, target_kind, weighted, scale_kind, seed):
    """(logits, target, axis, options, grad_scale) for one grid point. "index, ignore" ignores a class
    that occurs in the target (every row for 1-D and K=1), and is the only kind given an ignore_index."""
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=shape)
    options = {}
    if target_kind.startswith("index"):
        target = rng.integers(0, shape[axis], size=row_shape(shape, axis))
        if target_kind == "index, ignore":
            options["ignore_index"] = int(rng.choice(target.ravel())) if target.size else 0
    else:
        p = rng.uniform(size=shape)
        target = p / p.sum(axis=axis, keepdims=True) if target_kind == "prob" else 3.0 * p
    if weighted:
        options["weight"] = rng.uniform(0.2, 2.0, size=shape[axis])
    grad_scale = {
        "1": 1.0,
        "scalar": rng.uniform(-2.0, 2.0),
        "per row": rng.normal(size=row_shape(shape, axis)),
    }[scale_kind]
    return logits, target, axis, options, grad_scale


def scale_kinds(reduction):
    return ("1", "scalar", "per row") if reduction == "none" else ("1", "scalar")


# (a) PyTorch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_loss_and_grad(torch, logits, target, axis, reduction, grad_scale=1.0, *, weight=None,
                        ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None):
    """The option semantics composed from PyTorch float64 autograd: F.cross_entropy on
    x' = softcap * tanh(x / softcap), plus z_loss * logsumexp(x')^2 on every row that is not ignored
    (its mean over those rows). Classes move to dim 1 (torch's layout) and the gradient, of
    sum(loss * grad_scale), moves back."""
    torch_axis = min(1, logits.ndim - 1)
    x = torch.tensor(np.moveaxis(logits, axis, torch_axis), dtype=torch.float64, requires_grad=True)
    if target.dtype.kind == "f":
        t = torch.tensor(np.moveaxis(target, axis, torch_axis), dtype=torch.float64)
        counted = torch.ones(t.shape[:torch_axis] + t.shape[torch_axis + 1:], dtype=torch.bool)
    else:
        t = torch.tensor(target, dtype=torch.int64)
        counted = t != ignore_index
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    capped = x if softcap is None else softcap * torch.tanh(x / softcap)
    loss = torch.nn.functional.cross_entropy(capped, t, weight=w, ignore_index=ignore_index,
                                             reduction=reduction, label_smoothing=label_smoothing)
    if z_loss:
        z = torch.where(counted, z_loss * torch.logsumexp(capped, torch_axis) ** 2, 0.0)
        loss = loss + {"mean": z.sum() / counted.sum(), "sum": z.sum(), "none": z}[reduction]
    (loss * torch.tensor(grad_scale, dtype=torch.float64)).sum().backward()
    return loss.detach().numpy(), np.moveaxis(x.grad.numpy(), torch_axis, axis)


def assert_reference_matches_torch(torch, logits, target, axis, reduction, grad_scale=1.0, **options):
    """The reference, and the C kernel behind the public API, against PyTorch (all float64)."""
    expected_loss, expected_grad = torch_loss_and_grad(torch, logits, target, axis, reduction,
                                                       grad_scale, **options)
    for module in (ref, softmax_ce_c):
        loss, grad = module.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction,
                                                  grad_scale=grad_scale, **options)
        assert_matches(loss, expected_loss)
        assert_matches(grad, expected_grad, atol=1e-13)
        assert_matches(module.cross_entropy(logits, target, axis=axis, reduction=reduction, **options), loss)


def option_grid():
    """Every layout x reduction x target kind x label_smoothing x weight (672 cases); grad_scale
    drawn from a seeded RNG (a per-row array only for "none")."""
    rng = np.random.default_rng(2024)
    product = itertools.product(LAYOUTS, REDUCTIONS, TARGET_KINDS, SMOOTHINGS, (False, True))
    for seed, (layout, reduction, kind, smoothing, weighted) in enumerate(product):
        scale_kind = str(rng.choice(scale_kinds(reduction)))
        name = (f"{layout}-{reduction}-{kind}-ls={smoothing}"
                f"-{'weight' if weighted else 'no weight'}-gs={scale_kind}")
        yield pytest.param(layout, reduction, kind, smoothing, weighted, scale_kind, seed, id=name)


@pytest.mark.parametrize("layout, reduction, target_kind, label_smoothing, weighted, scale_kind, seed",
                         list(option_grid()))
def test_options_match_torch(torch, layout, reduction, target_kind, label_smoothing, weighted, scale_kind,
                             seed):
    logits, target, axis, options, grad_scale = make_case(layout, target_kind, weighted, scale_kind, seed)
    assert_reference_matches_torch(torch, logits, target, axis, reduction, grad_scale,
                                   label_smoothing=label_smoothing, **options)


Z_LOSS_AND_SOFTCAP = {"z_loss": (0.1, None), "softcap": (0.0, 2.5), "z_loss + softcap": (0.05, 4.0)}


def z_loss_softcap_grid():
    """Every layout x reduction x target kind x (z_loss, softcap) (252 cases); weight, label_smoothing
    and grad_scale drawn from a seeded RNG."""
    rng = np.random.default_rng(2025)
    product = itertools.product(LAYOUTS, REDUCTIONS, TARGET_KINDS, Z_LOSS_AND_SOFTCAP)
    for seed, (layout, reduction, kind, z_name) in enumerate(product, start=1000):
        weighted, smoothing = bool(rng.integers(2)), float(rng.choice(SMOOTHINGS))
        scale_kind = str(rng.choice(scale_kinds(reduction)))
        name = (f"{layout}-{reduction}-{kind}-{z_name}-ls={smoothing}"
                f"-{'weight' if weighted else 'no weight'}-gs={scale_kind}")
        yield pytest.param(layout, reduction, kind, z_name, smoothing, weighted, scale_kind, seed, id=name)


@pytest.mark.parametrize("layout, reduction, target_kind, z_name, label_smoothing, weighted, scale_kind, seed",
                         list(z_loss_softcap_grid()))
def test_z_loss_and_softcap_match_torch(torch, layout, reduction, target_kind, z_name, label_smoothing,
                                        weighted, scale_kind, seed):
    logits, target, axis, options, grad_scale = make_case(layout, target_kind, weighted, scale_kind, seed)
    z_loss, softcap = Z_LOSS_AND_SOFTCAP[z_name]
    assert_reference_matches_torch(torch, logits, target, axis, reduction, grad_scale, z_loss=z_loss,
                                   softcap=softcap, label_smoothing=label_smoothing, **options)


# edge cases against PyTorch

WEIGHT3 = np.array([0.5, 2.0, 1.5])
WEIGHT4 = np.array([0.5, 2.0, 3.0, 1.5])


@pytest.mark.parametrize("z_loss", [0.0, 0.1])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weight", [None, WEIGHT3], ids=["no weight", "weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_rows_ignored(torch, reduction, weight, label_smoothing, z_loss):
    # PyTorch agrees: NaN mean (0 / 0), and its gradient is all zeros too
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.5, -1.0], [3.0, -2.0, 0.0]])
    target = np.array([1, 1, 1])
    options = dict(ignore_index=1, weight=weight, label_smoothing=label_smoothing, z_loss=z_loss)
    loss, grad = ref.softmax_cross_entropy(logits, target, reduction=reduction, **options)
    expected_loss = {"mean": NAN, "sum": 0.0, "none": np.zeros(3)}[reduction]
    assert_matches(loss, expected_loss)
    np.testing.assert_array_equal(grad, np.zeros_like(logits))
    assert_reference_matches_torch(torch, logits, target, -1, reduction, **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignore_index_with_weights(torch, reduction):
    logits = np.random.default_rng(3).normal(scale=2.0, size=(5, 4))
    target = np.array([0, 2, 3, 2, 1])
    weight = np.array([0.5, 2.0, 3.0, 1.5])
    loss, _ = ref.softmax_cross_entropy(logits, target, reduction=reduction, weight=weight, ignore_index=2)

    kept = target != 2
    row_loss = -weight[target] * np.take_along_axis(ref.log_softmax(logits), target[:, None], -1)[:, 0]
    row_loss[~kept] = 0.0
    # the mean divides by the weights of the rows kept (0.5 + 3.0 + 2.0), not by the number of rows
    expected = {"mean": row_loss.sum() / weight[target[kept]].sum(), "sum": row_loss.sum(), "none": row_loss}
    assert_matches(loss, expected[reduction])
    assert_reference_matches_torch(torch, logits, target, -1, reduction, weight=weight, ignore_index=2)


LABEL_SMOOTHING_ONE_TARGETS = {
    "index": np.array([0, 1, 2, 3, 0]),
    "other index": np.array([3, 3, 1, 0, 2]),
    "prob": np.random.default_rng(5).dirichlet(np.ones(4), size=5),
    "uniform": np.full((5, 4), 0.25),
}


@pytest.mark.parametrize("target", LABEL_SMOOTHING_ONE_TARGETS.values(), ids=LABEL_SMOOTHING_ONE_TARGETS.keys())
@pytest.mark.parametrize("weight", [None, WEIGHT4], ids=["no weight", "weight"])
def test_label_smoothing_one_ignores_the_target(torch, weight, target):
    logits = np.random.default_rng(4).normal(scale=2.0, size=(5, 4))
    w = np.ones(4) if weight is None else weight
    expected = np.sum(w * -ref.log_softmax(logits), axis=-1) / 4  # (1/K) sum_k w_k (lse - x_k)
    loss = ref.cross_entropy(logits, target, reduction="none", weight=weight, label_smoothing=1.0)
    assert_matches(loss, expected)
    for reduction in REDUCTIONS:  # (an index mean still divides by the weights of the targets)
        assert_reference_matches_torch(torch, logits, target, -1, reduction, weight=weight, label_smoothing=1.0)


MASKED_LOGITS = np.array([[-INF, 0.5, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], [0.0, -INF, -INF, 3.0]])
MASKED_TARGETS = {
    "index": np.array([2, 1, 0]),
    "prob": np.array([[0.0, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.0, 0.5]]),
}


@pytest.mark.parametrize("weight", [None, WEIGHT4], ids=["no weight", "weight"])
@pytest.mark.parametrize("target", MASKED_TARGETS.values(), ids=MASKED_TARGETS.keys())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_smoothing_with_masked_logits_is_infinite(torch, reduction, target, weight):
    # the smoothing puts eps / K on every class, -inf logits included: +inf loss, finite gradient
    loss, grad = ref.softmax_cross_entropy(MASKED_LOGITS, target, reduction=reduction, weight=weight,
                                           label_smoothing=0.1)
    row_loss = ref.cross_entropy(MASKED_LOGITS, target, reduction="none", weight=weight, label_smoothing=0.1)
    np.testing.assert_array_equal(row_loss, [INF, row_loss[1], INF])
    assert np.isfinite(row_loss[1]) and np.all(np.isfinite(grad))
    assert_reference_matches_torch(torch, MASKED_LOGITS, target, -1, reduction, weight=weight,
                                   label_smoothing=0.1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_an_infinite_probability_off_the_max_is_as_torch(torch, reduction):
    """+inf loss, and at the max the plain p T - c (+inf; its exact form for p near 1 was inf - inf);
    on the max itself (README's edge cases) the C kernel's loss is NaN, not PyTorch's, so not here."""
    logits, target = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]), np.array([[INF, 0.5, 0.3], [0.2, 0.3, 0.5]])
    assert_reference_matches_torch(torch, logits, target, -1, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_full_smoothing_with_target_on_masked_logit_is_inf_unlike_torch(torch, reduction):
    # A documented difference: PyTorch computes (1 - eps) * nll + eps * smoothing term, and at eps = 1
    # with the target on a -inf logit that is 0 * inf = NaN. The target's coefficient is 0 there, so
    # (as for a zero probability) it adds nothing; the smoothing term alone is +inf. Gradients agree.
    logits, target = np.array([[-INF, 1.0, 2.0], [0.0, 1.0, 2.0]]), np.array([0, 1])
    row_loss, grad = ref.softmax_cross_entropy(logits, target, reduction="none", label_smoothing=1.0)
    assert row_loss[0] == INF and np.isfinite(row_loss[1])
    torch_loss, torch_grad = torch_loss_and_grad(torch, logits, target, -1, reduction, label_smoothing=1.0)
    assert np.isnan(np.asarray(torch_loss).flat[0])
    assert_matches(ref.softmax_cross_entropy(logits, target, reduction=reduction, label_smoothing=1.0)[1], torch_grad)


@pytest.mark.parametrize("target", MASKED_TARGETS.values(), ids=MASKED_TARGETS.keys())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_logits_without_smoothing_stay_finite(torch, reduction, target):
    # with label_smoothing 0 there is no smoothing term at all (not 0 * inf = NaN on a -inf logit), and
    # a zero probability on a -inf logit adds nothing (the documented difference in test_reference.py:
    # PyTorch's loss is NaN there, its gradient agrees)
    options = dict(weight=WEIGHT4, z_loss=0.1, **({"ignore_index": 1} if target.dtype.kind == "i" else {}))
    loss, grad = ref.softmax_cross_entropy(MASKED_LOGITS, target, reduction=reduction, **options)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    if target.dtype.kind == "i":
        assert_reference_matches_torch(torch, MASKED_LOGITS, target, -1, reduction, **options)
    else:
        assert_matches(grad, torch_loss_and_grad(torch, MASKED_LOGITS, target, -1, reduction, **options)[1])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_zero_total_weight_mean_is_nan_as_in_torch(torch, label_smoothing):
    # rows that count but whose classes weigh 0: the mean is 0 / 0 and, as in PyTorch, so is the
    # gradient of every counted row; the ignored row (target 1) keeps a zero gradient
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.5, -1.0], [3.0, -2.0, 0.0]])
    target = np.array([0, 0, 1])
    options = dict(weight=np.array([0.0, 2.0, 3.0]), ignore_index=1, label_smoothing=label_smoothing)
    loss, grad = ref.softmax_cross_entropy(logits, target, **options)
    assert np.isnan(loss)
    assert np.all(np.isnan(grad[:2])) and np.all(grad[2] == 0)
    assert_reference_matches_torch(torch, logits, target, -1, "mean", **options)


NON_FINITE_ROWS = {"NaN": [NAN, 1.0, 2.0], "+inf": [INF, 1.0, 2.0], "-inf": [-INF, 1.0, 2.0],
                   "all -inf": [-INF, -INF, -INF]}


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "z_loss": 0.1, "weight": WEIGHT3}],
                         ids=["plain", "all options"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("bad_row", NON_FINITE_ROWS.values(), ids=NON_FINITE_ROWS.keys())
def test_ignored_rows_with_non_finite_logits(torch, bad_row, reduction, options):
    # An ignored row is left out entirely: loss 0 and gradient 0 whatever its logits. Documented
    # difference: PyTorch's log_softmax backward gives such a row 0 - softmax * 0 = NaN gradient when
    # its softmax is NaN (a NaN or +inf logit, or all -inf); its loss is the same as ours.
    logits = np.array([bad_row, [0.0, 1.0, 2.0], [1.0, 0.5, -1.0]])
    target = np.array([0, 1, 2])
    loss, grad = ref.softmax_cross_entropy(logits, target, reduction=reduction, ignore_index=0, **options)
    assert np.all(grad[0] == 0) and np.all(np.isfinite(grad))
    assert np.all(np.isfinite(loss))

    torch_loss, torch_grad = torch_loss_and_grad(torch, logits, target, -1, reduction, ignore_index=0, **options)
    assert_matches(loss, torch_loss)
    assert_matches(grad[1:], torch_grad[1:])
    softmax_is_nan = np.isnan(ref.softmax(logits[0])).any()
    np.testing.assert_array_equal(np.isnan(torch_grad[0]), softmax_is_nan)  # the difference itself


@pytest.mark.parametrize("z_loss", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softcap_makes_infinite_logits_finite(torch, reduction, z_loss):
    # x' = softcap * tanh(x / softcap) maps +-inf to +-softcap, with derivative 0 there
    logits = np.array([[INF, 0.5, 1.0], [-INF, -INF, 0.0], [-INF, INF, 1.0], [0.0, 1.0, 2.0]])
    target = np.array([0, 0, 1, 2])
    loss, grad = ref.softmax_cross_entropy(logits, target, reduction=reduction, softcap=3.0, z_loss=z_loss)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[np.isinf(logits)], 0.0)
    capped = 3.0 * np.tanh(logits / 3.0)
    assert_matches(ref.cross_entropy(logits, target, reduction=reduction, softcap=3.0, z_loss=z_loss),
                   ref.cross_entropy(capped, target, reduction=reduction, z_loss=z_loss))
    assert_reference_matches_torch(torch, logits, target, -1, reduction, softcap=3.0, z_loss=z_loss)


# (b) finite differences

FD_SHAPE, FD_AXIS = (3, 5, 2), 1  # 6 rows of 5 classes on axis 1
FD_OPTION_NAMES = ("weight", "ignore_index", "label_smoothing", "z_loss", "softcap", "grad_scale", "all")


def finite_difference_case(kind, reduction, option_name):
    """(logits, target, options): one option, or all of them; ignore_index only for index targets, a
    per-row grad_scale for "none"."""
    rng = np.random.default_rng(10)
    logits = rng.normal(scale=2.0, size=FD_SHAPE)
    if kind == "index":
        target = rng.integers(0, FD_SHAPE[FD_AXIS], size=row_shape(FD_SHAPE, FD_AXIS))
    else:
        p = rng.uniform(0.1, 1.0, size=FD_SHAPE)
        target = p / p.sum(axis=FD_AXIS, keepdims=True) if kind == "prob" else 2.5 * p
    every_option = {
        "weight": rng.uniform(0.2, 2.0, size=FD_SHAPE[FD_AXIS]),
        "label_smoothing": 0.3,
        "z_loss": 0.05,
        "softcap": 2.5,
        "grad_scale": rng.normal(size=row_shape(FD_SHAPE, FD_AXIS)) if reduction == "none" else -0.7,
    }
    if kind == "index":
        every_option["ignore_index"] = int(target.flat[0])  # a class that occurs
    options = every_option if option_name == "all" else {option_name: every_option[option_name]}
    return logits, target, options


FD_CASES = [  # ignore_index applies to class-index targets only
    pytest.param(kind, reduction, name, id=f"{kind}-{reduction}-{name}")
    for kind, reduction, name in itertools.product(("index", "prob", "unnormalised prob"), REDUCTIONS,
                                                   FD_OPTION_NAMES)
    if kind == "index" or name != "ignore_index"
]


@pytest.mark.parametrize("kind, reduction, option_name", FD_CASES)
def test_gradient_matches_finite_differences(kind, reduction, option_name):
    logits, target, options = finite_difference_case(kind, reduction, option_name)
    grad_scale = options.pop("grad_scale", 1.0)
    _, grad = ref.softmax_cross_entropy(logits, target, axis=FD_AXIS, reduction=reduction,
                                        grad_scale=grad_scale, **options)

    def scaled_loss(x):  # grad is the gradient of sum(loss * grad_scale)
        loss = ref.cross_entropy(x, target, axis=FD_AXIS, reduction=reduction, **options)
        return np.sum(loss * grad_scale)

    assert np.abs(grad).max() > 0.01  # not trivially zero
    np.testing.assert_allclose(grad, central_difference(scaled_loss, logits), rtol=TOL, atol=TOL)


# (c) small hand computations and invariants


@pytest.mark.parametrize("weight", [None, WEIGHT4], ids=["no weight", "weight"])
def test_z_loss_mean_divides_by_the_rows_not_ignored(weight):
    logits = np.random.default_rng(6).normal(scale=2.0, size=(5, 4))
    target = np.array([0, 2, 3, 2, 1])
    options = dict(weight=weight, ignore_index=2)
    kept = target != 2
    z = 0.3 * ref.logsumexp(logits) ** 2
    ce = ref.cross_entropy(logits, target, reduction="mean", **options)  # over the total weight
    assert_matches(ref.cross_entropy(logits, target, reduction="mean", z_loss=0.3, **options),
                   ce + z[kept].sum() / 3)
    assert_matches(ref.cross_entropy(logits, target, reduction="none", z_loss=0.3, **options),
                   ref.cross_entropy(logits, target, reduction="none", **options) + np.where(kept, z, 0.0))


@pytest.mark.parametrize("softcap", [None, 60.0])
def test_target_entry_of_a_confident_row_is_exact(softcap):
    # p_y - 1 for y the argmax of [40, 0, 0] is -2e^-40 / (1 + 2e^-40) ~ -8.5e-18: exp(log p_y) - 1
    # would round it to 0 or -1.1e-16; it must come out to full relative precision, weighted and scaled
    logits = np.array([[40.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    capped = logits if softcap is None else softcap * np.tanh(logits / softcap)
    _, grad = ref.softmax_cross_entropy(logits, np.array([0, 2]), reduction="sum", weight=WEIGHT3,
                                        grad_scale=3.0, softcap=softcap)
    others = np.exp(capped[0, 1:] - capped[0, 0]).sum()
    d_capped = 1.0 if softcap is None else 1 / np.cosh(logits[0, 0] / softcap) ** 2
    np.testing.assert_allclose(grad[0, 0], 3.0 * WEIGHT3[0] * -others / (1 + others) * d_capped, rtol=1e-14)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_scale_scales_the_gradient_only(kind, reduction):
    logits, target, axis, options, _ = make_case("(N,C,d) axis=1", kind, True, "1", seed=7)
    options.update(label_smoothing=0.1, z_loss=0.05, softcap=4.0)
    loss, grad = ref.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction, **options)
    scales = [(-1.5, -1.5)]  # (grad_scale, the factor on the gradient)
    if reduction == "none":
        per_row = np.random.default_rng(8).normal(size=row_shape(logits.shape, axis))
        scales.append((per_row, np.expand_dims(per_row, axis)))
    for scale, factor in scales:
        scaled_loss, scaled_grad = ref.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction,
                                                             grad_scale=scale, **options)
        assert_matches(scaled_loss, loss)
        assert_matches(scaled_grad, grad * factor)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_default_options_change_nothing(kind, reduction):
    logits, target, axis, _, _ = make_case("leading dims", kind, False, "1", seed=9)
    defaults = dict(weight=np.ones(logits.shape[axis]), label_smoothing=0.0, z_loss=0.0, softcap=None,
                    grad_scale=1.0)
    if kind == "index":
        defaults["ignore_index"] = -100
    plain = ref.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction)
    explicit = ref.softmax_cross_entropy(logits, target, axis=axis, reduction=reduction, **defaults)
    for actual, expected in zip(explicit, plain):
        assert_matches(actual, expected, rtol=0, atol=0)

"""Rows whose exps or gradient products reach the subnormals: logits spread wider than about 60, and
masked classes (-inf, -1e4, the dtype's most negative value). They take their own loops (careful_exps and
tiny_products in csrc/kernel_subnormal_rows.h, decided per row from its min), which must keep the contract,
and give each row what it gives alone, among rows of either kind."""
import numpy as np
import pytest

import softmax_ce_c
from helpers import LOSS_ULPS, assert_grad_within_contract, assert_loss_accurate, assert_within_ulps, exact, one_hot

KINDS = ["spread 64", "spread 120", "spread 250", "-inf masks", "-1e4 masks", "lowest masks"]  # lowest: the dtype's


def lowest(dtype):
    """The most negative finite value of dtype (bfloat16's from ml_dtypes, which NumPy's finfo lacks)"""
    if dtype in (np.float16, np.float32, np.float64):
        return float(np.finfo(dtype).min)
    return float(pytest.importorskip("ml_dtypes").finfo(dtype).min)


def rows_of_kind(kind, shape, dtype, rng):
    """Logits of one kind, every other row an ordinary one (normal, scale 3), the targets' classes
    (column 0) never masked."""
    x = 3.0 * rng.standard_normal(shape)
    if kind.startswith("spread"):
        spread = float(kind.split()[1])
        x[::2] = rng.uniform(-spread / 2, spread / 2, x[::2].shape)
    else:
        mask = {"-inf masks": -np.inf, "-1e4 masks": -1e4, "lowest masks": lowest(dtype)}[kind]
        masked = rng.random(x[::2].shape) < 0.2
        masked[..., 0] = False
        x[::2][masked] = mask
    return x.astype(dtype)


def check_cross_entropy(x, target, **options):
    """target: class indices, or probabilities (float)"""
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none", **options)
    reference_options = {key: value for key, value in options.items() if key != "num_threads"}
    want_loss, want_grad = exact("softmax_cross_entropy", x, target, reduction="none", **reference_options)
    assert_loss_accurate(loss, want_loss)
    n_classes = x.shape[-1]
    smoothing = options.get("label_smoothing", 0.0)
    probabilities = target if target.dtype.kind == "f" else one_hot(target, n_classes)
    target = (1 - smoothing) * probabilities + smoothing / n_classes
    scale = abs(options.get("grad_scale", 1.0))
    # an exp that is subnormal is right to its last unit only (README, Accuracy), times what scales it
    subnormal_exp = np.finfo(np.float32 if x.dtype != np.float64 else np.float64).smallest_subnormal * scale
    assert_grad_within_contract(grad, want_grad, exact("softmax", x), target, scale, extra=subnormal_exp)
    return loss, grad


@pytest.mark.parametrize("n_classes", [10, 64, 100, 1000])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_and_softmax_keep_the_contract(dtype, kind, n_classes):
    rng = np.random.default_rng(n_classes)
    x = rows_of_kind(kind, (40, n_classes), dtype, rng)
    y = np.zeros(40, np.int64)
    y[1::2] = rng.integers(0, n_classes, 20)
    loss, grad = check_cross_entropy(x, y)
    if kind != "lowest masks":  # smoothing takes eps / K of every distance to the max, 1e308 there
        check_cross_entropy(x, y, label_smoothing=0.1)
    assert_within_ulps(softmax_ce_c.cross_entropy(x, y, reduction="none"), loss, 0)
    on_finite = np.where(x > -1e3, rng.random(x.shape), 0.0)  # probabilities, none on a masked class
    check_cross_entropy(x, (on_finite / on_finite.sum(axis=1, keepdims=True)).astype(dtype))
    softmax, want = softmax_ce_c.softmax(x), exact("softmax", x)
    info = np.finfo(dtype)
    assert np.all(np.abs(softmax - want) <= 4 * info.eps * want + 2 * info.smallest_subnormal)
    assert_within_ulps(softmax_ce_c.log_softmax(x), exact("log_softmax", x), LOSS_ULPS)
    assert_within_ulps(softmax_ce_c.logsumexp(x), exact("logsumexp", x), LOSS_ULPS)
    for n in (0, 1, 2, 17, 38, 39):  # each row as it is alone (rows 32 on: the few-classes path's second group)
        row_loss, row_grad = softmax_ce_c.softmax_cross_entropy(x[n:n + 1], y[n:n + 1], reduction="none")
        assert row_loss[0] == loss[n] and np.array_equal(row_grad[0], grad[n])


@pytest.mark.parametrize("n_classes", [17, 100, 1003])
@pytest.mark.parametrize("dtype, depth", [(np.float32, 87.0), (np.float32, 110.0), (np.float64, 770.0)])
def test_rows_stepping_down_through_the_subnormal_exps(dtype, depth, n_classes):
    """Logits from each row's max down to depth below it: for float64 past where its exps round to 0,
    through the subnormals; for float32 to 87 below (rows that are not careful, down to their smallest
    normal exps) or past its underflow. Maxima on both sides of the vector exps' limit (2^14). A mutant
    of the AVX2 float64 exps that took the last 10 below the underflow as 0 passed every other test."""
    rng = np.random.default_rng(n_classes)
    steps = np.linspace(0.0, depth, n_classes)
    tops = (0.0, 123.4, -5000.0, 2.0**14 - 1.5, 2.0**14 + 7.0)
    x = np.stack([top - rng.permutation(steps) for top in tops] * 8)
    y = rng.integers(0, n_classes, len(x))
    check_cross_entropy(x.astype(dtype), y)
    check_cross_entropy(x.astype(dtype), y, grad_scale=1e300 if dtype == np.float64 else 1e30)


@pytest.mark.parametrize("kind", ["spread 120", "-inf masks", "-1e4 masks"])
def test_streamed_gradients_keep_the_contract(kind):
    """A float32 gradient of 16 MiB or more is streamed, each row's lines written during the next
    row's exps: rows of both kinds in turn."""
    rng = np.random.default_rng(7)
    x = rows_of_kind(kind, (4096, 1100), np.float32, rng)
    y = np.zeros(4096, np.int64)
    y[1::2] = rng.integers(0, 1100, 2048)
    loss, grad = check_cross_entropy(x, y, grad_scale=4096.0)
    same_loss, same_grad = softmax_ce_c.softmax_cross_entropy(x[:64], y[:64], reduction="none", grad_scale=4096.0)
    assert np.array_equal(same_loss, loss[:64]) and np.array_equal(same_grad, grad[:64])


@pytest.mark.parametrize("kind", ["spread 250", "-inf masks", "-1e4 masks"])
def test_rows_shared_over_threads_by_classes_keep_the_contract(kind):
    """A row alone on two threads, longer than a segment: its class axis is shared out, and its min
    combined over its segments; the same bits as on one thread, where it is not."""
    rng = np.random.default_rng(8)
    x = rows_of_kind(kind, (1, 70000), np.float32, rng)
    for row, y in [(x, np.array([0])), (x[:, ::-1].copy(), np.array([69999]))]:
        loss, grad = check_cross_entropy(row, y, num_threads=2)
        one_loss, one_grad = softmax_ce_c.softmax_cross_entropy(row, y, reduction="none", num_threads=1)
        assert np.array_equal(one_loss, loss) and np.array_equal(one_grad, grad)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-3}, {"probabilities": True}],
                         ids=["plain", "smoothing", "z_loss", "probabilities"])
@pytest.mark.parametrize("tail", ["150 below", "95 below", "-1e4", "lowest"])
@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_a_row_split_over_threads_takes_the_loops_of_one_thread(name, tail, options):
    """A row of 70000 classes whose last 30000 lie far below the rest (150 or 95 below) or are masked
    (-1e4, the dtype's lowest): on two threads its class axis is shared out by segments, each taking
    its min from its own max, then again from the row's. The flags that min sets choose loops whose
    last bits and signs of zero differ (smoothing, probabilities, z-loss: thousands of elements
    differed when the segments kept their own mins); they, and so the bits, must be one thread's."""
    dtype = np.float32 if name == "float32" else pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(10)
    x = 3.0 * rng.standard_normal((1, 70000))
    x[:, 40000:] = {"150 below": x[:, 40000:] - 150, "95 below": x[:, 40000:] - 95, "-1e4": -1e4,
                    "lowest": lowest(dtype)}[tail]
    x = x.astype(dtype)
    options = dict(options)
    if options.pop("probabilities", False):
        on_finite = np.where(x > -1e3, rng.random(x.shape), 0.0)
        y = (on_finite / on_finite.sum()).astype(np.float32)
    else:
        y = np.array([5])
    if name == "float32" and tail != "lowest":  # smoothing takes eps / K of 1e38 distances there
        check_cross_entropy(x, y, num_threads=2, **options)
    two = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", num_threads=2, **options)
    one = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none", num_threads=1, **options)
    assert np.array_equal(one[0], two[0])
    assert np.array_equal(one[1].view(np.uint16 if name == "bfloat16" else np.uint32),
                          two[1].view(np.uint16 if name == "bfloat16" else np.uint32))  # signs of zero too


@pytest.mark.parametrize("n_classes", [10, 300])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_precision_rows_are_the_exact_ones_rounded(name, kind, n_classes):
    dtype = np.float16 if name == "float16" else pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(9)
    x = rows_of_kind(kind, (40, n_classes), dtype, rng)
    y = np.zeros(40, np.int64)
    loss, grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="none")
    want_loss, want_grad = exact("softmax_cross_entropy", x.astype(np.float32), y, reduction="none")
    assert_within_ulps(loss, want_loss, LOSS_ULPS)
    assert_within_ulps(grad, want_grad, 1)
    assert_within_ulps(softmax_ce_c.softmax(x), exact("softmax", x.astype(np.float32)), 1)


@pytest.mark.parametrize("softcap", [None, 1000.0])
@pytest.mark.parametrize("n_classes", [2, 10, 1000])
def test_subnormal_exps_are_rounded_once(n_classes, softcap):
    """exp(d) for d from -103.9 to -95 is a float32 subnormal, which the careful exps (2^k applied in
    double) round once: within half a unit of the smallest subnormal. Rows [0, d] (classes past the
    second masked with -1e4) sum to 1 in double, so that their loss (target 0) is that exp itself, and
    without a softcap so are their softmax and their gradient (reduction sum) at d. A softcap of 1000
    moves d a little: x' = 1000 tanh(d / 1000)."""
    d = np.linspace(-103.9, -95.0, 4001).astype(np.float32)
    x = np.full((d.size, n_classes), -1e4, np.float32)
    x[:, 0], x[:, 1] = 0.0, d
    want = np.exp(d.astype(np.float64) if softcap is None else softcap * np.tanh(d.astype(np.float64) / softcap))
    target = np.zeros(d.size, np.int64)
    loss = softmax_ce_c.softmax_cross_entropy(x, target, reduction="none", softcap=softcap)[0]
    got = [loss]
    if softcap is None:
        got += [softmax_ce_c.softmax(x)[:, 1], softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum")[1][:, 1]]
    unit = float(np.finfo(np.float32).smallest_subnormal)
    for values in got:
        assert np.max(np.abs(values.astype(np.float64) - want)) <= 0.5001 * unit


def test_a_grad_scale_beyond_float_range_rounds_the_exact_gradient():
    """Factors beyond float's range take the double loops before a row's kind is looked at (where
    converting them to float would be undefined, which the sanitizer run catches): each element the
    exact one rounded, inf included. (Spread rows would not do: their exps below float's range are 0,
    an error of a subnormal unit times 1e300; see README, Accuracy.)"""
    rng = np.random.default_rng(10)
    x = rows_of_kind("-inf masks", (8, 1000), np.float32, rng)
    y = np.zeros(8, np.int64)
    with np.errstate(over="ignore"):
        grad = softmax_ce_c.softmax_cross_entropy(x, y, reduction="sum", grad_scale=1e300)[1]
        want = exact("softmax_cross_entropy", x, y, reduction="sum", grad_scale=1e300)[1].astype(np.float32)
    assert np.isinf(grad).any() and np.array_equal(np.isinf(grad), np.isinf(want))
    finite = np.isfinite(want)
    assert_within_ulps(grad[finite], want[finite], 1)

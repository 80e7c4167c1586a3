"""Shared test helpers: the exact oracle, error measures in ulps, inputs of every kind and layout."""
import numpy as np

from softmax_ce_c import reference

# the error contract (see README): a float32 loss within LOSS_ULPS ulp of the exact value, a float64 one
# within FLOAT64_RTOL; each gradient element within GRAD_EPS * eps * (p_j T + |t_j|) * scale of it
# (T the row's target total, 1 unless probability targets are unnormalised)
LOSS_ULPS = 4
FLOAT64_RTOL = 1e-14
GRAD_EPS = 8


def oracle_dtype(dtype):
    """float32 results are judged against float64, float64 results against longdouble."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def exact(function_name, x, *args, **kwargs):
    """The reference computed in the oracle precision for x's dtype."""
    function = getattr(reference, function_name)
    return function(np.asarray(x).astype(oracle_dtype(x.dtype)), *args, **kwargs)


def ulp_error(result, exact_value):
    """|result - exact| in units of the last place of result's dtype at the exact value; 0 where
    both are the same infinity or both NaN, inf where only one is."""
    result = np.asarray(result)
    dtype = result.dtype
    want = np.asarray(exact_value, dtype=np.longdouble)
    got = result.astype(np.longdouble)
    with np.errstate(invalid="ignore", over="ignore"):
        spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.longdouble)
        error = np.abs(got - want) / spacing
    same_special = (np.isnan(got) & np.isnan(want)) | (np.isinf(want) & (got == want))
    mismatch = np.isnan(got) != np.isnan(want)
    return np.where(same_special, 0.0, np.where(mismatch, np.inf, error))


def assert_within_ulps(result, exact_value, ulps):
    error = ulp_error(result, exact_value)
    if error.size == 0:
        return
    worst = np.unravel_index(np.argmax(error), error.shape) if error.ndim else ()
    assert np.all(error <= ulps), (
        f"{float(error[worst])} ulp at {worst}: got {np.asarray(result)[worst]!r}, "
        f"exact {np.asarray(exact_value)[worst]!r}"
    )


def one_hot(target, n_classes, axis=-1):
    hot = np.zeros(target.shape + (n_classes,))
    np.put_along_axis(hot, target[..., None], 1.0, axis=-1)
    return np.moveaxis(hot, -1, axis)


def assert_loss_accurate(loss, exact_loss):
    """float32: LOSS_ULPS ulp; float64: FLOAT64_RTOL relative, or LOSS_ULPS ulp for losses near 0."""
    ulps = ulp_error(loss, exact_loss)
    if np.asarray(loss).dtype == np.float32 or ulps.size == 0:
        return assert_within_ulps(loss, exact_loss, LOSS_ULPS)
    want = np.asarray(exact_loss, dtype=np.longdouble)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.abs(np.asarray(loss, dtype=np.longdouble) - want) / np.abs(want)
    ok = (ulps <= LOSS_ULPS) | (relative <= FLOAT64_RTOL)
    assert np.all(ok), f"float64 loss off by {np.max(np.where(ok, 0, relative))} relative"


def assert_grad_within_contract(grad, exact_grad, softmax, target_prob, scale, axis=-1, extra=0.0):
    """Each element within GRAD_EPS * eps * (p_j T + |t_j|) * scale of the exact gradient (plus two of
    the dtype's smallest subnormals, the resolution any rounded result has near 0, and extra)."""
    grad = np.asarray(grad)
    info = np.finfo(grad.dtype)
    total = np.abs(target_prob).sum(axis=axis, keepdims=True)
    bound = GRAD_EPS * info.eps * (softmax * total + np.abs(target_prob)) * scale
    bound = bound + 2 * info.smallest_subnormal + extra
    error = np.abs(grad.astype(np.longdouble) - exact_grad)
    both_nan = np.isnan(grad) & np.isnan(exact_grad)
    ok = both_nan | (error <= bound)
    if not np.all(ok):
        where = np.unravel_index(np.argmin(ok), ok.shape)
        raise AssertionError(
            f"gradient at {where}: got {grad[where]!r}, exact {exact_grad[where]!r}, "
            f"error {error[where]!r} > bound {bound[where]!r}"
        )


def make_logits(rng, shape, dtype, values="normal"):
    """Logits of one kind of values: normal, wide (spread of hundreds), offset (1e8 + normal),
    special (normal with -inf classes, a +inf row and a NaN row)."""
    if values == "wide":
        x = rng.uniform(-300.0, 300.0, shape)
    elif values == "offset":
        x = 1e8 + 16.0 * rng.standard_normal(shape)
    else:
        x = 3.0 * rng.standard_normal(shape)
    x = x.astype(dtype)
    if values == "special" and x.size:
        rows = x.reshape(-1, x.shape[-1])  # a view: x is C-contiguous
        rows[np.arange(len(rows)), rng.integers(0, rows.shape[1], len(rows))] = -np.inf
        rows[0, rng.integers(0, rows.shape[1])] = np.inf
        rows[-1, rng.integers(0, rows.shape[1])] = np.nan
    return x


def make_index_target(rng, row_shape, n_classes):
    return rng.integers(0, n_classes, row_shape)


def make_prob_target(rng, shape, dtype, axis=-1, normalised=True):
    t = rng.uniform(0.0, 1.0, shape) ** 4  # skewed, with many near-zero entries
    if normalised:
        t /= t.sum(axis=axis, keepdims=True)
    return t.astype(dtype)


def at_line_offset(array, offset):
    """A C-contiguous copy of array whose data starts offset elements past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 64 + offset * array.itemsize, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + offset * array.itemsize
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def misaligned(array):
    """A copy of array whose data pointer is not aligned to its itemsize."""
    buffer = np.empty(array.nbytes + 1, np.uint8)
    copy = buffer[1:].view(array.dtype).reshape(array.shape)
    copy[...] = array
    assert not copy.flags.aligned
    return copy

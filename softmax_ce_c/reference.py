"""Plain NumPy reference: the executable specification of every public function.

Written to be obviously correct, not fast. It computes in float64 (longdouble input stays longdouble,
which is how the tests judge float64 results) and returns that dtype. It checks nothing: give it what
the public API accepts.

Two choices keep it exact where a naive formula cancels (and so able to judge the kernel there):
the row sum is 1 + rest with one max left out, so log(sum) = log1p(rest) however small rest is; and
softmax_y - 1 is expm1(log softmax_y).
"""
import numpy as np


def _compute_dtype_array(x):
    x = np.asarray(x)
    return x.astype(np.result_type(x.dtype, np.float64))


def _max_and_log_sum(x):
    """Row max m (NaN if the row holds one) and log(sum(exp(x - m))), for x with classes last."""
    m = np.max(x, axis=-1, keepdims=True)
    terms = np.exp(x - m)
    first_max = np.argmax(x, axis=-1)[..., None]
    np.put_along_axis(terms, first_max, 0.0, axis=-1)
    return m, np.log1p(terms.sum(axis=-1, keepdims=True))


def _log_softmax_last(x):
    """log softmax along the last axis; NaN rows where the max is not finite (+inf, all -inf, NaN)."""
    m, log_sum = _max_and_log_sum(x)
    return np.where(np.isfinite(m), (x - m) - log_sum, np.nan)


def logsumexp(x, axis=-1):
    x = np.moveaxis(_compute_dtype_array(x), axis, -1)
    with np.errstate(invalid="ignore"):
        m, log_sum = _max_and_log_sum(x)
        # an infinite max is the answer (+inf, or -inf for an all -inf row), NaN stays NaN
        return np.where(np.isfinite(m), m + log_sum, m)[..., 0]


def log_softmax(x, axis=-1):
    x = np.moveaxis(_compute_dtype_array(x), axis, -1)
    with np.errstate(invalid="ignore"):
        return np.moveaxis(_log_softmax_last(x), -1, axis)


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis))


def softmax_cross_entropy(logits, target, *, axis=-1, reduction="mean"):
    """(loss, gradient of the loss w.r.t. logits); see softmax_ce_c.softmax_cross_entropy."""
    x = np.moveaxis(_compute_dtype_array(logits), axis, -1)
    target = np.asarray(target)
    with np.errstate(invalid="ignore"):
        logp = _log_softmax_last(x)
        if target.dtype.kind in "iu":
            y = target.astype(np.int64)[..., None]
            logp_y = np.take_along_axis(logp, y, axis=-1)
            row_loss = -logp_y[..., 0]
            grad = np.exp(logp)
            np.put_along_axis(grad, y, np.expm1(logp_y), axis=-1)
        else:
            t = np.moveaxis(_compute_dtype_array(target), axis, -1)
            # a zero probability on a masked class (log softmax -inf) adds nothing, not 0 * -inf
            row_loss = -np.sum(np.where((t == 0) & np.isneginf(logp), 0.0, t * logp), axis=-1)
            grad = np.exp(logp) * t.sum(axis=-1, keepdims=True) - t
    n_rows = row_loss.size
    if reduction == "mean":
        loss = row_loss.sum() / n_rows if n_rows else row_loss.dtype.type(np.nan)
        grad = grad / max(n_rows, 1)
    elif reduction == "sum":
        loss = row_loss.sum()
    elif reduction == "none":
        loss = row_loss
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return loss, np.moveaxis(grad, -1, axis)


def cross_entropy(logits, target, *, axis=-1, reduction="mean"):
    return softmax_cross_entropy(logits, target, axis=axis, reduction=reduction)[0]

"""Plain NumPy reference: the executable specification of every public function.

Written to be obviously correct, not fast. It computes in float64 (longdouble input stays longdouble,
which is how the tests judge float64 results) and returns that dtype. It checks nothing: give it what
the public API accepts.

Two choices keep it exact where a naive formula cancels (and so able to judge the kernel there):
the row sum is 1 + rest with one max left out, so log(sum) = log1p(rest) however small rest is; and
softmax_y - 1 is expm1(log softmax_y).

The options of softmax_cross_entropy follow PyTorch's F.cross_entropy (weight, ignore_index,
label_smoothing), applied to the softcapped logits x' = softcap * tanh(x / softcap), plus a z-loss
z_loss * logsumexp(x')^2 per row; grad_scale multiplies the gradient (the upstream gradient).
Where they differ from PyTorch: rows ignored get a zero gradient even when their logits make
softmax NaN (PyTorch's gradient is NaN there), and a zero coefficient on a -inf logit (a zero
probability target, or the target of a class-index row at label_smoothing=1 or weight 0) adds 0
where PyTorch computes 0 * inf = NaN.
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


def _softcap(x, softcap):
    """(x', d x' / d x): softcap * tanh(x / softcap) and 1 / cosh(x / softcap)^2 (1 - tanh^2 without
    the cancellation); (x, None) without a softcap."""
    if softcap is None:
        return x, None
    with np.errstate(over="ignore"):  # cosh overflows to inf where the derivative is 0 anyway
        return softcap * np.tanh(x / softcap), 1.0 / np.cosh(x / softcap) ** 2


def _index_target_terms(neg_logp, target, weight, ignore_index, label_smoothing):
    """Per row: (ce loss, its gradient w.r.t. x', ignored mask, the weight of the row's class).

    Loss (1 - eps) w_y (lse - x'_y) + (eps / K) sum_k w_k (lse - x'_k), written as PyTorch does;
    gradient (1 - eps) w_y (p - onehot(y)) + (eps / K) (p sum(w) - w), which is p T - c for
    c_k = (1 - eps) w_y [k == y] + (eps / K) w_k, with p_y - 1 taken as expm1(log p_y)."""
    n_classes = neg_logp.shape[-1]
    eps = label_smoothing
    ignored = target == ignore_index
    y = np.where(ignored, 0, target).astype(np.int64)[..., None]  # any class for ignored rows
    w_y = weight[y[..., 0]]
    neg_logp_y = np.take_along_axis(neg_logp, y, axis=-1)
    p = np.exp(-neg_logp)
    p_minus_onehot = p.copy()
    np.put_along_axis(p_minus_onehot, y, np.expm1(-neg_logp_y), axis=-1)
    ce = _times_coefficient((1 - eps) * w_y, neg_logp_y[..., 0])
    d_ce = (1 - eps) * w_y[..., None] * p_minus_onehot
    if eps:  # PyTorch adds the smoothing term only for eps > 0; 0 * (+inf on a -inf logit) is NaN
        ce = ce + eps / n_classes * np.sum(_times_coefficient(weight, neg_logp), axis=-1)
        d_ce = d_ce + eps / n_classes * (p * weight.sum() - weight)
    return ce, d_ce, ignored, w_y


def _probability_target_terms(neg_logp, target, weight, label_smoothing):
    """Per row: (ce loss sum_k c_k (lse - x'_k), its gradient p T - c), for c = w * t',
    t' = (1 - eps) t + eps / K, T = sum_k c_k."""
    n_classes = neg_logp.shape[-1]
    eps = label_smoothing
    c = weight * ((1 - eps) * target + eps / n_classes)
    ce = np.sum(_times_coefficient(c, neg_logp), axis=-1)
    total = c.sum(axis=-1, keepdims=True)
    d_ce = np.exp(-neg_logp) * total - c
    # at the argmax, p T - c = (T - c) + T (p - 1) with p - 1 = expm1(log p): exact when p is near 1
    a = np.argmin(neg_logp, axis=-1)[..., None]
    c_a = np.take_along_axis(c, a, axis=-1)
    exact_at_argmax = (total - c_a) + total * np.expm1(-np.take_along_axis(neg_logp, a, axis=-1))
    # (an infinite total would make that inf - inf: the plain form is PyTorch's +-inf there)
    exact_at_argmax = np.where(np.isinf(total), np.take_along_axis(d_ce, a, axis=-1), exact_at_argmax)
    np.put_along_axis(d_ce, a, exact_at_argmax, axis=-1)
    return ce, d_ce


def _times_coefficient(c, neg_logp):
    """c * (lse - x'), where a zero coefficient on a masked class (lse - x' = +inf) adds nothing
    instead of 0 * inf = NaN (PyTorch gives NaN); a NaN row stays NaN."""
    return np.where((c == 0) & np.isposinf(neg_logp), 0.0, c * neg_logp)


def _mean(total, count):
    """total / count; NaN for a mean over nothing (count 0) whatever the total, as PyTorch's loss and
    gradient are (rows left out get a zero gradient afterwards)."""
    return total / count if count != 0 else total * np.nan


def softmax_cross_entropy(logits, target, *, axis=-1, reduction="mean", weight=None, ignore_index=-100,
                          label_smoothing=0.0, z_loss=0.0, softcap=None, grad_scale=1.0):
    """(loss, gradient of loss * grad_scale w.r.t. logits); see softmax_ce_c.softmax_cross_entropy.

    PyTorch's F.cross_entropy(weight=, ignore_index=, label_smoothing=) on the softcapped logits
    x' = softcap * tanh(x / softcap), plus z_loss * logsumexp(x')^2 per row that is not ignored.
    "mean" divides the cross-entropy by the total weight of the rows not ignored (by the number of
    rows for probability targets) and the z-loss by the number of rows not ignored. Ignored rows
    have loss 0 and gradient 0. For "none" the gradient is that of sum(loss * grad_scale), where
    grad_scale may hold one value per row."""
    x = np.moveaxis(_compute_dtype_array(logits), axis, -1)
    target = np.asarray(target)
    n_classes = x.shape[-1]
    weight = np.ones(n_classes, x.dtype) if weight is None else np.asarray(weight).astype(x.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        x, dx_dlogits = _softcap(x, softcap)
        neg_logp = -_log_softmax_last(x)  # lse - x'_k = (max - x'_k) + log1p(rest); NaN rows
        if target.dtype.kind in "iu":
            ce, d_ce, ignored, w_y = _index_target_terms(neg_logp, target, weight, ignore_index,
                                                         label_smoothing)
            total_weight = w_y[~ignored].sum()
        else:
            t = np.moveaxis(_compute_dtype_array(target), axis, -1)
            ce, d_ce = _probability_target_terms(neg_logp, t, weight, label_smoothing)
            ignored = np.zeros(ce.shape, bool)
            total_weight = x.dtype.type(ce.size)
        n_counted = x.dtype.type(np.count_nonzero(~ignored))

        z = np.zeros_like(ce)
        d_z = np.zeros_like(d_ce)
        if z_loss:  # skipped at 0: lse^2 may overflow, and 0 * inf is NaN
            m, log_sum = _max_and_log_sum(x)
            lse = m + log_sum  # only rows with a finite max matter; the others are NaN already
            z = z_loss * lse[..., 0] ** 2
            d_z = 2 * z_loss * lse * np.exp(-neg_logp)

        if reduction == "mean":
            loss = _mean(ce[~ignored].sum(), total_weight) + _mean(z[~ignored].sum(), n_counted)
            grad = _mean(d_ce, total_weight) + _mean(d_z, n_counted)
        elif reduction == "sum":
            loss = ce[~ignored].sum() + z[~ignored].sum()
            grad = d_ce + d_z
        elif reduction == "none":
            loss = np.where(ignored, 0.0, ce + z).astype(x.dtype)
            grad = d_ce + d_z
        else:
            raise ValueError(f"unknown reduction {reduction!r}")

        grad = grad * np.asarray(grad_scale)[..., None]  # a scalar, or one value per row for "none"
        if dx_dlogits is not None:
            grad = grad * dx_dlogits
        grad = np.where(ignored[..., None], 0.0, grad).astype(x.dtype)  # also where x' was NaN
    return loss, np.moveaxis(grad, -1, axis)


def cross_entropy(logits, target, *, axis=-1, reduction="mean", weight=None, ignore_index=-100,
                  label_smoothing=0.0, z_loss=0.0, softcap=None):
    return softmax_cross_entropy(logits, target, axis=axis, reduction=reduction, weight=weight,
                                 ignore_index=ignore_index, label_smoothing=label_smoothing,
                                 z_loss=z_loss, softcap=softcap)[0]

"""The public functions: validate (_validate), run the C kernel on the rows, reduce, restore the layout."""
import numpy as np

from . import _validate
from ._kernel import ffi, lib


class _Kernels:
    """The C functions for one logit dtype."""

    def __init__(self, c_type, suffix):
        self.c_array = c_type + "[]"
        self.cross_entropy = getattr(lib, "sce_cross_entropy_" + suffix)
        self.logsumexp = getattr(lib, "sce_logsumexp_" + suffix)
        self.log_softmax = getattr(lib, "sce_log_softmax_" + suffix)
        self.softmax = getattr(lib, "sce_softmax_" + suffix)

    def pointer(self, array):
        return ffi.from_buffer(self.c_array, array)


_KERNELS = {
    np.dtype(np.float32): _Kernels("float", "f32"),
    np.dtype(np.float64): _Kernels("double", "f64"),
}

_STATUS_MESSAGES = {
    lib.SCE_ERR_SHAPE: "the kernel was given a negative row count or no classes",
    lib.SCE_ERR_ARGUMENT: "the kernel was given no target",
}


def _params(data, grad_scale=1.0):
    n_rows, n_classes = data.shape
    return ffi.new("sce_params *", {"n_rows": n_rows, "n_classes": n_classes, "grad_scale": grad_scale})


def _check(status, rows=None, error=None):
    if status == lib.SCE_OK:
        return
    if status == lib.SCE_ERR_TARGET_RANGE:
        raise IndexError(_validate.out_of_range_message(rows, error.row, error.value))
    raise ValueError(_STATUS_MESSAGES.get(status, f"the kernel failed with status {status}"))


def _scalar_or_array(array):
    """NumPy's convention: a 0-d result is returned as a NumPy scalar."""
    return array[()] if array.ndim == 0 else array


def _reduce(row_loss, reduction, dtype, row_shape):
    """row_loss is float64, so the sum loses nothing before the one rounding to the logits' dtype."""
    if reduction == "none":
        return _scalar_or_array(row_loss.astype(dtype).reshape(row_shape))
    total = row_loss.sum()
    if reduction == "sum":
        return dtype.type(total)
    return dtype.type(total / row_loss.size if row_loss.size else np.nan)


def _cross_entropy(logits, target, axis, reduction, with_grad):
    problem = _validate.cross_entropy_problem(logits, target, axis, reduction)
    rows = problem.logits
    kernels = _KERNELS[rows.data.dtype]
    n_rows = rows.data.shape[0]
    row_loss = np.empty(n_rows, np.float64)
    grad = np.empty_like(rows.data) if with_grad else None
    grad_scale = 1.0 / n_rows if reduction == "mean" and n_rows else 1.0
    error = ffi.new("sce_error *")
    status = kernels.cross_entropy(
        kernels.pointer(grad) if with_grad else ffi.NULL,
        ffi.from_buffer("double[]", row_loss),
        error,
        _params(rows.data, grad_scale),
        kernels.pointer(rows.data),
        ffi.NULL if problem.target_index is None else ffi.from_buffer("int64_t[]", problem.target_index),
        ffi.NULL if problem.target_prob is None else kernels.pointer(problem.target_prob),
    )
    _check(status, rows, error)
    loss = _reduce(row_loss, reduction, rows.data.dtype, rows.row_shape)
    return (loss, rows.restore(grad)) if with_grad else loss


def softmax_cross_entropy(logits, target, *, axis=-1, reduction="mean"):
    """Softmax cross-entropy loss and its gradient with respect to the logits, in one fused pass.

    logits: float32 or float64 array, classes along `axis`, any other dims are rows.
    target: integer class indices (the logits' shape without `axis`), or float class probabilities
        (the logits' shape; one-hot rows or any non-negative weights, PyTorch's convention).
    reduction: "mean" over rows, "sum", or "none" (one loss per row).
    Returns (loss, grad): loss in the logits' dtype (a scalar, or an array for "none"); grad the
    gradient of the returned loss (for "none", of the sum of the row losses), shaped like the logits.
    """
    return _cross_entropy(logits, target, axis, reduction, with_grad=True)


def cross_entropy(logits, target, *, axis=-1, reduction="mean"):
    """The loss of softmax_cross_entropy alone; the kernel computes and writes no gradient."""
    return _cross_entropy(logits, target, axis, reduction, with_grad=False)


def logsumexp(x, axis=-1):
    """log(sum(exp(x))) along `axis`, in x's dtype; +inf / -inf rows give +inf / -inf as in PyTorch."""
    rows = _validate.rows_of(x, axis)
    kernels = _KERNELS[rows.data.dtype]
    lse = np.empty(rows.data.shape[0], rows.data.dtype)
    _check(kernels.logsumexp(kernels.pointer(lse), _params(rows.data), kernels.pointer(rows.data)))
    return _scalar_or_array(lse.reshape(rows.row_shape))


def _row_transform(x, axis, kernel_name):
    rows = _validate.rows_of(x, axis)
    kernels = _KERNELS[rows.data.dtype]
    out = np.empty_like(rows.data)
    kernel = getattr(kernels, kernel_name)
    _check(kernel(kernels.pointer(out), _params(rows.data), kernels.pointer(rows.data)))
    return rows.restore(out)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, accurate near 0; a row with +inf or no finite value is NaN."""
    return _row_transform(x, axis, "log_softmax")


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`; a row with +inf or no finite value is NaN."""
    return _row_transform(x, axis, "softmax")

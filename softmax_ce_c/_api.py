"""The public functions: validate (_validate), run the C kernel on the rows, reduce, restore the layout."""
import os
import warnings

import numpy as np

from . import _reused_memory, _validate
from ._kernel import ffi, lib

# Bound once: a small call spends about 0.1 us on each lookup of ffi's attributes or C types by name
_from_buffer, _NULL = ffi.from_buffer, ffi.NULL
_FLOATS, _DOUBLES, _INT64S = ffi.typeof("float[]"), ffi.typeof("double[]"), ffi.typeof("int64_t[]")
_RESULT = ffi.typeof("sce_result *")


class _Kernels:
    """The C functions for one logit dtype, and how its arrays are handed to them."""

    def __init__(self, c_type, suffix, loss_dtype):
        self.c_array = ffi.typeof(c_type + "[]")
        # half precision goes as its bits: NumPy cannot export bfloat16 through the buffer protocol
        self.as_bits = c_type == "uint16_t"
        self.loss_type = np.dtype(loss_dtype).type
        self.cross_entropy = getattr(lib, "sce_cross_entropy_" + suffix)
        # float32 and float64, the dtypes of a plain call, have one
        self.plain_cross_entropy = getattr(lib, "sce_cross_entropy_plain_" + suffix, None)
        self.logsumexp = getattr(lib, "sce_logsumexp_plain_" + suffix)
        self.log_softmax = getattr(lib, "sce_log_softmax_plain_" + suffix)
        self.softmax = getattr(lib, "sce_softmax_plain_" + suffix)

    def pointer(self, array):
        return _from_buffer(self.c_array, array.view(np.uint16) if self.as_bits else array)


_KERNELS = {
    "float32": _Kernels("float", "f32", np.float32),
    "float64": _Kernels("double", "f64", np.float64),
    "float16": _Kernels("uint16_t", "f16", np.float32),
    "bfloat16": _Kernels("uint16_t", "bf16", np.float32),
}
_PLAIN_KERNELS = {dtype: _KERNELS[dtype.name] for dtype in _validate.PLAIN_LOGIT_DTYPES}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NAN = float("nan")


def _loss_scalar_of(loss_type):
    """A function taking a Python float to loss_type's NumPy scalar as loss_type(x) does: with NumPy 2
    a product with loss_type(1), exact (NEP 50 casts x to the scalar's dtype), in 0.2 us against
    np.float32's 0.55; NumPy 1 would make that product float64. Only for an exact Python float: a
    NumPy float64 would widen the product (its __mul__ returns NotImplemented)."""
    one = loss_type(1)
    return one.__mul__ if type(one * 0.5) is loss_type else loss_type


_LOSS_SCALAR = {np.float32: _loss_scalar_of(np.float32), np.float64: _loss_scalar_of(np.float64)}
_REDUCTION_CODES = {"mean": lib.SCE_MEAN, "sum": lib.SCE_SUM, "none": lib.SCE_NONE}
_OK = lib.SCE_OK
_STATUS_MESSAGES = {
    lib.SCE_ERR_SHAPE: "the kernel was given a negative row count or no classes",
    lib.SCE_ERR_ARGUMENT: "the kernel was given a missing buffer or an option out of range",
}


def _buffer(c_array, array):
    return _NULL if array is None else _from_buffer(c_array, array)


def _check(status, result=None, row_shape=None, n_classes=None):
    if status == _OK:
        return
    if status == lib.SCE_ERR_TARGET_RANGE:
        raise IndexError(_validate.out_of_range_message(row_shape, n_classes, result.bad_row, result.bad_value))
    if status == lib.SCE_ERR_MEMORY:
        raise MemoryError("the kernel could not allocate its work space")
    raise ValueError(_STATUS_MESSAGES.get(status, f"the kernel failed with status {status}"))


def _scalar_or_array(array):
    """NumPy's convention: a 0-d result is returned as a NumPy scalar."""
    return array[()] if array.ndim == 0 else array


def _reduce(row_loss, row_z_loss, result, reduction, loss_type, nonnegative=False):
    """Row losses (of the row shape), and the kernel's sums of them, are float64: nothing is lost
    before the one rounding to loss_type (np.float32 or np.float64). A mean divides the
    cross-entropy and the z-loss by their own denominators (PyTorch's total weight, and the rows not
    ignored). nonnegative: no row loss can be negative and there is no z-loss (a plain call: each row
    loss is max - x_y + log1p(rest))."""
    if reduction == "none":
        total = row_loss if row_z_loss is None else row_loss + row_z_loss
        if nonnegative and result.loss_sum <= _FLOAT32_MAX:
            # the sum bounds every row loss: the cast cannot overflow, and np.errstate (0.9 us) is spared
            return _scalar_or_array(total.astype(loss_type))
        with np.errstate(over="ignore"):  # a loss beyond float32's range is inf, not an error
            return _scalar_or_array(total.astype(loss_type))
    ce, z = result.loss_sum, result.z_loss_sum
    if reduction == "mean":
        ce = _mean(ce, result.ce_denominator)
        if row_z_loss is not None:
            z = _mean(z, result.z_denominator)
    total = ce + z  # a Python float
    if abs(total) <= _FLOAT32_MAX or total != total:  # np.errstate costs more than the rest of _reduce
        return _LOSS_SCALAR[loss_type](total)
    with np.errstate(over="ignore"):
        return _LOSS_SCALAR[loss_type](total)


def _mean(total, count):
    """NaN for a mean over nothing, whatever the total (as PyTorch)."""
    return total / count if count != 0 else _NAN


def _index_copy_space(target_index):
    """Where the kernel copies the class indices to: kept memory in a large call, else None (the
    kernel allocates it; small calls skip the kept memory's bookkeeping, 8% of a 64x10 call)."""
    if target_index is None or target_index.nbytes < _reused_memory.WORK_MIN_BYTES:
        return None
    return _reused_memory.work_array(target_index.shape, np.int64)


def _cross_entropy(problem, n_threads, grad_rows=None, grad_scale=1.0, row_grad_scale=None):
    """Runs the kernel: the loss, and the gradient into grad_rows (N, K) unless it is None."""
    rows, options = problem.logits, problem.options
    kernels = _KERNELS[_validate.dtype_name(rows.data.dtype)]
    n_rows, n_classes = rows.data.shape
    row_loss = _reused_memory.work_array(rows.row_shape, np.float64)
    row_z_loss = _reused_memory.work_array(rows.row_shape, np.float64) if options.z_loss else None
    target_copy = _index_copy_space(problem.target_index)
    # the cdata buffers below must stay referenced until the call returns
    row_loss_buffer, row_z_loss_buffer = _buffer(_DOUBLES, row_loss), _buffer(_DOUBLES, row_z_loss)
    weight, row_grad_scale_buffer = _buffer(_DOUBLES, options.weight), _buffer(_DOUBLES, row_grad_scale)
    target_copy_buffer = _buffer(_INT64S, target_copy)
    result = ffi.new(_RESULT, {"row_loss": row_loss_buffer, "row_z_loss": row_z_loss_buffer})
    params = ffi.new(
        "sce_params *",
        {
            "n_rows": n_rows,
            "n_classes": n_classes,
            "reduction": _REDUCTION_CODES[problem.reduction],
            "ignore_index": options.ignore_index,
            "label_smoothing": options.label_smoothing,
            "z_loss": options.z_loss,
            "softcap": options.softcap or 0.0,
            "grad_scale": grad_scale,
            "weight": weight,
            "row_grad_scale": row_grad_scale_buffer,
            "target_copy": target_copy_buffer,
            "n_threads": n_threads,
        },
    )
    with_grad = grad_rows is not None
    prob_array = _DOUBLES if rows.data.dtype == np.float64 else _FLOATS
    status = kernels.cross_entropy(
        kernels.pointer(grad_rows) if with_grad else _NULL,
        result,
        params,
        kernels.pointer(rows.data),
        _buffer(_INT64S, problem.target_index),
        _buffer(prob_array, problem.target_prob),
    )
    _check(status, result, rows.row_shape, rows.n_classes)
    loss = _reduce(row_loss, row_z_loss, result, problem.reduction, kernels.loss_type)
    _reused_memory.give_back(row_loss, row_z_loss, target_copy)
    return loss


def _plain_cross_entropy(logits, target, reduction, n_threads, grad=None, grad_scale=1.0):
    """Runs the kernel on a plain call (_validate.plain_call): the loss, and the gradient into grad
    unless it is None."""
    kernels = _PLAIN_KERNELS[logits.dtype]
    target_copy = _index_copy_space(target)
    large = target_copy is not None
    # a small call's sums need no row losses from here: the kernel mallocs them, as the copy
    row_loss = _reused_memory.work_array(target.shape, np.float64) if large or reduction == "none" else None
    result = ffi.new(_RESULT)
    n_classes, c_array = logits.shape[-1], kernels.c_array
    status = kernels.plain_cross_entropy(  # float32/float64 arrays: no need for kernels.pointer
        _buffer(c_array, grad), result, _buffer(_DOUBLES, row_loss), _from_buffer(c_array, logits),
        _from_buffer(_INT64S, target), _buffer(_INT64S, target_copy), target.size, n_classes,
        _REDUCTION_CODES[reduction], _validate.DEFAULT_IGNORE_INDEX, float(grad_scale), n_threads,
    )
    if status != _OK:
        _check(status, result, target.shape, n_classes)
    loss = _reduce(row_loss, None, result, reduction, kernels.loss_type, nonnegative=True)
    if large:
        _reused_memory.give_back(target_copy, row_loss)
    return loss


def _gradient_rows(problem, destination, inplace):
    """The (N, K) buffer the kernel writes the gradient into: the rows themselves for inplace (the
    caller's memory, or the row-major copy the class axis needed), out when its layout is the rows'
    layout, else a new array."""
    rows = problem.logits
    if inplace:
        return rows.data
    if destination is not None and rows.axis == problem.array.ndim - 1:
        return destination.reshape(rows.data.shape)
    return _reused_memory.empty_like(rows.data)


def softmax_cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    reduction="mean",
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    grad_scale=1.0,
    out=None,
    inplace=False,
    num_threads=None,
):
    """Softmax cross-entropy loss and its gradient with respect to the logits, in one fused pass.

    logits: float32, float64, float16 or bfloat16 array; classes along `axis`, other dims are rows.
    target: integer class indices (the logits' shape without `axis`), or float class probabilities
        (the logits' shape; one-hot rows or any non-negative weights, PyTorch's convention).
    reduction: "mean" over rows, "sum", or "none" (one loss per row).
    weight, ignore_index, label_smoothing: as PyTorch's F.cross_entropy.
    z_loss: adds z_loss * logsumexp^2 per row not ignored (PaLM; Liger's lse_square_scale).
    softcap: logits become softcap * tanh(logits / softcap) first (Gemma 2).
    grad_scale: the upstream gradient: a scalar, or for "none" one per row (the row shape).
    out: write the gradient into this array (the logits' shape and dtype, C-contiguous).
    inplace: write the gradient over the logits (which must be writable and C-contiguous).
    num_threads: threads to share the rows out to: None for all cores (or the environment variable
        SOFTMAX_CE_C_NUM_THREADS), else a positive int; the results do not depend on it.
    Returns (loss, grad): loss in the logits' dtype (float32 for half precision), a scalar or for
    "none" an array; grad the gradient of grad_scale times the returned loss (for "none", of the sum
    of the row losses times their grad_scale), shaped like the logits.
    """
    if _validate.plain_call(logits, target, axis, reduction, weight, ignore_index, label_smoothing, z_loss, softcap):
        grad = _validate.plain_gradient(logits, out, inplace, grad_scale)
        if grad is not None:
            return _plain_cross_entropy(logits, target, reduction, _validate.thread_count(num_threads),
                                        grad, grad_scale), grad
    problem = _validate.cross_entropy_problem(
        logits, target, axis, reduction, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
    )
    upstream, row_upstream = _validate.upstream_gradient(grad_scale, reduction, problem.logits.row_shape)
    n_threads = _validate.thread_count(num_threads)
    destination = _validate.gradient_destination(logits, target, problem, out, inplace)
    grad_rows = _gradient_rows(problem, destination, inplace)
    loss = _cross_entropy(problem, n_threads, grad_rows, upstream, row_upstream)
    grad = problem.logits.restore(grad_rows)
    if destination is None:
        return loss, grad
    if not np.shares_memory(grad_rows, destination):
        np.copyto(destination, grad)  # the class axis was not last: the rows were a copy
    return loss, destination


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    reduction="mean",
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
):
    """The loss of softmax_cross_entropy alone (same options but grad_scale, out and inplace); the
    kernel computes and writes no gradient."""
    if _validate.plain_call(logits, target, axis, reduction, weight, ignore_index, label_smoothing, z_loss, softcap):
        return _plain_cross_entropy(logits, target, reduction, _validate.thread_count(num_threads))
    problem = _validate.cross_entropy_problem(
        logits, target, axis, reduction, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
    )
    return _cross_entropy(problem, _validate.thread_count(num_threads))


def _rows(x, axis):
    """(data, kernels, rows) for a row function: data (classes last, C-contiguous) is x itself for a
    plain array (_validate.plain_logits), rows None and the result already in x's layout; else data
    is rows.data, the checked (N, K) rows."""
    if _validate.plain_logits(x, axis):
        return x, _PLAIN_KERNELS[x.dtype], None
    rows = _validate.rows_of(x, axis)
    return rows.data, _KERNELS[_validate.dtype_name(rows.data.dtype)], rows


def _run_rows(function, kernels, out, data, num_threads):
    """Runs a row function's plain form (kernels.logsumexp, ...) on the rows of data, into out."""
    n_classes = data.shape[-1]
    n_threads = _validate.thread_count(num_threads)
    _check(function(kernels.pointer(out), kernels.pointer(data), data.size // n_classes, n_classes, n_threads))


def logsumexp(x, axis=-1, *, num_threads=None):
    """log(sum(exp(x))) along `axis`, in x's dtype; +inf / -inf rows give +inf / -inf as in PyTorch.
    num_threads as for softmax_cross_entropy."""
    data, kernels, rows = _rows(x, axis)
    lse = np.empty(data.shape[:-1] if rows is None else rows.row_shape, data.dtype)
    _run_rows(kernels.logsumexp, kernels, lse, data, num_threads)
    return _scalar_or_array(lse)


def log_softmax(x, axis=-1, *, num_threads=None):
    """x - logsumexp(x) along `axis`, accurate near 0; a row with +inf or no finite value is NaN."""
    data, kernels, rows = _rows(x, axis)
    out = _reused_memory.empty_like(data)
    _run_rows(kernels.log_softmax, kernels, out, data, num_threads)
    return out if rows is None else rows.restore(out)


def softmax(x, axis=-1, *, num_threads=None):
    """exp(x) / sum(exp(x)) along `axis`; a row with +inf or no finite value is NaN."""
    data, kernels, rows = _rows(x, axis)
    out = _reused_memory.empty_like(data)
    _run_rows(kernels.softmax, kernels, out, data, num_threads)
    return out if rows is None else rows.restore(out)


def _instruction_sets():
    """The names of the instruction sets this build has, best first (x86-64: avx512bf16, avx512,
    avx2, baseline; other machines baseline alone), whether or not this CPU has them."""
    names, index = [], 0
    while (name := lib.sce_isa_name(index)) != ffi.NULL:
        names.append(ffi.string(name).decode())
        index += 1
    return tuple(names)


INSTRUCTION_SETS = _instruction_sets()


def _warn_of_unknown_isa_name():
    """The kernel ignores a SOFTMAX_CE_C_ISA it does not know (it forces nothing); a misspelt name
    ("AVX2") would otherwise go unnoticed. Warned once, when the module loads, as the kernel reads it."""
    name = os.environ.get("SOFTMAX_CE_C_ISA", "")
    if name and name not in INSTRUCTION_SETS:
        warnings.warn(f"SOFTMAX_CE_C_ISA={name!r} is not one of {', '.join(INSTRUCTION_SETS)}: ignored, the kernel "
                      f"runs with {instruction_set()!r}", RuntimeWarning, stacklevel=2)


def instruction_set():
    """The instruction set the kernel runs with: "avx512bf16" (AVX-512 with AVX512_BF16, which
    bfloat16 gradients use), "avx512", "avx2" or "baseline" (the best this CPU has, or a lower one
    named by the environment variable SOFTMAX_CE_C_ISA)."""
    return ffi.string(lib.sce_isa()).decode()


_warn_of_unknown_isa_name()

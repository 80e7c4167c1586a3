"""Checks and layout for the public API. Every error is raised here, before the kernel runs and
before anything is written; inputs are only read (a copy is made where the layout needs one)."""
import math
import numbers
import operator
import os
from typing import NamedTuple, Optional

import numpy as np

from . import _reused_memory

# bfloat16 is ml_dtypes' NumPy dtype; it is recognised by name so ml_dtypes is never imported here
LOGIT_DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")
REDUCTIONS = ("mean", "sum", "none")
DEFAULT_IGNORE_INDEX = -100


class Rows(NamedTuple):
    """An array seen as N rows of K classes, C-contiguous and aligned, as the kernel reads it."""

    data: np.ndarray  # (N, K)
    moved_shape: tuple  # the caller's shape with the class axis moved last
    axis: int  # the caller's class axis, non-negative

    @property
    def row_shape(self):
        """The caller's shape without the class axis: the shape of per-row results."""
        return self.moved_shape[:-1]

    @property
    def n_classes(self):
        return self.moved_shape[-1]

    def restore(self, data):
        """An (N, K) result in the caller's layout (a view: the class axis moved back)."""
        moved = data.reshape(self.moved_shape)
        return moved if self.axis == len(self.moved_shape) - 1 else np.moveaxis(moved, -1, self.axis)


class Options(NamedTuple):
    """The cross-entropy options, checked; weight is (K,) float64 or None."""

    weight: Optional[np.ndarray]
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: Optional[float]


class CrossEntropyProblem(NamedTuple):
    array: np.ndarray  # the logits as an array, in the caller's layout
    logits: Rows
    target_index: Optional[np.ndarray]  # (N,) int64, or None
    target_prob: Optional[np.ndarray]  # (N, K), float64 for float64 logits else float32; or None
    reduction: str
    options: Options


_DTYPE_NAMES = {}


def dtype_name(dtype):
    """dtype.name, cached: NumPy computes it anew on every access, which small calls notice. Only the
    numbers' dtypes are kept (a bounded set): records and strings, which callers can make without end
    and which are rejected anyway, would grow the cache with every call."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = dtype.name
        if dtype.kind in "biuf" or name == "bfloat16":
            _DTYPE_NAMES[dtype] = name
    return name


def is_bfloat16(value):
    """whether value is a bfloat16 NumPy scalar"""
    return isinstance(value, np.generic) and dtype_name(value.dtype) == "bfloat16"


def not_masked(x, name):
    """x, unless it is a masked array: np.asarray would drop its mask, and the masked classes or
    rows would count."""
    if isinstance(x, np.ma.MaskedArray):
        hint = {"logits": " (masked classes with -inf)", "target": " (masked rows with ignore_index)"}.get(name, "")
        raise TypeError(f"{name} must not be a masked array: fill it first{hint}")
    return x


def float_array(x, name):
    """x as an array of a supported float dtype with at least one dimension (byte-swapped arrays
    are converted to native order: bfloat16's kind is "V", not "f", but its bytes swap too)."""
    array = np.asarray(not_masked(x, name))
    if dtype_name(array.dtype) not in LOGIT_DTYPE_NAMES:  # (a dtype's name leaves its byte order out)
        raise TypeError(f"{name} must be a float32, float64, float16 or bfloat16 array, got dtype {array.dtype}")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return array


def class_axis(axis, ndim):
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError("axis must be an integer, got bool")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def as_rows(array, axis):
    """The (N, K) rows of a float array along its class axis (checked: K >= 1)."""
    axis = class_axis(axis, array.ndim)
    n_classes = array.shape[axis]
    if n_classes == 0:
        raise ValueError("the class axis has length 0: softmax needs at least one class")
    moved = array if axis == array.ndim - 1 else np.moveaxis(array, axis, -1)
    if not (moved.flags.c_contiguous and moved.flags.aligned):
        moved = np.require(moved, requirements=["C", "A"])
    data = moved.reshape(-1, n_classes)
    return Rows(data, moved.shape, axis)


def rows_of(x, axis, name="x"):
    return as_rows(float_array(x, name), axis)


def check_reduction(reduction):
    if not (isinstance(reduction, str) and reduction in REDUCTIONS):
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def real_number(value, name):
    """value as a float; bools and non-numbers are a TypeError, an int beyond float64's range a
    ValueError (float() would raise OverflowError). A bfloat16 scalar is a number that is not a
    numbers.Real."""
    if type(value) is not float and type(value) is not int:  # (the common cases need no ABC check)
        if isinstance(value, (bool, np.bool_)) or not (isinstance(value, numbers.Real) or is_bfloat16(value)):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # (the value is not printed: str() refuses ints of more than 4300 digits)
        raise ValueError(f"{name} must be within float64's range, got a {type(value).__name__} beyond it") from None


def check_options(weight, ignore_index, label_smoothing, z_loss, softcap, n_classes):
    label_smoothing = real_number(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    z_loss = real_number(z_loss, "z_loss")
    if not (0.0 <= z_loss < math.inf):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss}")
    if softcap is not None:
        softcap = real_number(softcap, "softcap")
        if not (0.0 < softcap < math.inf):
            raise ValueError(f"softcap must be a finite number > 0 (or None), got {softcap}")
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError("ignore_index must be an integer, got bool")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}") from None
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    return Options(class_weights(weight, n_classes), ignore_index, label_smoothing, z_loss, softcap)


def object_hint(dtype):
    """Python ints beyond 64 bits make an array of dtype object: said where it is refused."""
    return " (Python ints beyond 64 bits, or objects that are not numbers)" if dtype == object else ""


def real_array(x, name):
    """x as an array of integers or floats (bfloat16 too: its kind is "V"), to be copied to float64."""
    array = np.asarray(not_masked(x, name))
    if array.dtype.kind not in "iuf" and dtype_name(array.dtype) != "bfloat16":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}{object_hint(array.dtype)}")
    return array


def class_weights(weight, n_classes):
    if weight is None:
        return None
    weight = real_array(weight, "weight")
    if weight.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one per class, got {weight.shape}")
    return np.array(weight, dtype=np.float64)  # a private copy


def class_indices(target, rows):
    """Integer targets as (N,) int64; values are range-checked by the kernel, which names the row."""
    if target.shape != rows.row_shape:
        raise ValueError(
            f"class-index target must have the logits' shape without the class axis, "
            f"{rows.row_shape}, got {target.shape}"
        )
    flat = target.reshape(-1)
    if flat.dtype == np.uint64 and flat.size and flat.max() > np.iinfo(np.int64).max:
        # would wrap to a negative int64; report the true value here instead
        row = int(np.argmax(flat > np.iinfo(np.int64).max))
        raise IndexError(out_of_range_message(rows.row_shape, rows.n_classes, row, int(flat[row])))
    return kernel_indices(flat)


def kernel_indices(flat):
    """Class indices as the kernel reads them: int64, C-contiguous and aligned (flat itself when it
    is so). The kernel copies them before it checks them (so that neither the gradient it writes nor
    another Python thread, the GIL being released, can change them after the check)."""
    if flat.dtype == _INT64 and flat.flags.c_contiguous and flat.flags.aligned:
        return flat  # np.require returns it too, in 0.6 us more
    return np.require(flat, _INT64, "CA")


def probability_dtype(logits_dtype):
    """The kernel reads probabilities as float64 for float64 logits, else as float32."""
    return np.dtype(np.float64) if logits_dtype == np.float64 else np.dtype(np.float32)


def class_probabilities(target, rows, logits_shape):
    if target.shape != logits_shape:
        raise ValueError(
            f"probability target must have the logits' shape {logits_shape}, got {target.shape} "
            "(class-index targets must be integers)"
        )
    dtype = probability_dtype(rows.data.dtype)
    try:
        with np.errstate(over="raise"):  # a finite value that becomes inf would make the answers NaN
            return as_rows(target.astype(dtype, copy=False), rows.axis).data
    except FloatingPointError:
        raise ValueError(f"probability target values must be within {dtype}'s range, which the kernel reads "
                         f"them in for {rows.data.dtype} logits") from None


def out_of_range_message(row_shape, n_classes, row, value):
    where = f"row {row}"
    if len(row_shape) > 1:
        where += f" (index {tuple(int(i) for i in np.unravel_index(row, row_shape))})"
    return f"class target {value} in {where} is outside [0, {n_classes})"


def cross_entropy_problem(logits, target, axis, reduction, weight, ignore_index, label_smoothing, z_loss, softcap):
    logits = float_array(logits, "logits")
    rows = as_rows(logits, axis)
    reduction = check_reduction(reduction)
    options = check_options(weight, ignore_index, label_smoothing, z_loss, softcap, rows.n_classes)
    target = np.asarray(not_masked(target, "target"))
    kind = target.dtype.kind
    if kind in "iu":
        return CrossEntropyProblem(logits, rows, class_indices(target, rows), None, reduction, options)
    if kind == "f" or dtype_name(target.dtype) == "bfloat16":
        if options.ignore_index >= 0:  # (as PyTorch: a negative one, which no class can be, is let be)
            raise ValueError("ignore_index applies to class-index targets only, not to probabilities")
        prob = class_probabilities(target, rows, logits.shape)
        return CrossEntropyProblem(logits, rows, None, prob, reduction, options)
    raise TypeError(
        "target must hold integer class indices or float class probabilities, "
        f"got dtype {target.dtype}{object_hint(target.dtype)}"
    )


# The shortcut for the most common calls, whose general checks (and the problem they build) cost a
# small call more than its kernel: it takes only arguments that every general check would pass as
# they are, and leaves anything else, valid or not, to the general path and its errors.
PLAIN_LOGIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)
_PLAIN_NUMBERS = (float, int)  # not bool, which the general checks reject
_FLOAT64_INT_BOUND = 2**1023  # ints of smaller magnitude convert to float64
_INF = math.inf


def plain_logits(x, axis):
    """True for an array the kernel reads as it is: native float32 or float64, C-contiguous and
    aligned, with at least one class along the last axis, which axis (an int) names."""
    if not (type(x) is np.ndarray and x.dtype in PLAIN_LOGIT_DTYPES and type(axis) is int and x.ndim
            and (axis == -1 or axis == x.ndim - 1) and x.shape[-1]):
        return False
    flags = x.flags
    return flags.c_contiguous and flags.aligned


def plain_call(logits, target, axis, reduction, weight, ignore_index, label_smoothing, z_loss, softcap):
    """True for plain logits, int64 class indices of the row shape as the kernel reads them
    (kernel_indices), a valid reduction and no option set (the gradient's arguments are
    plain_gradient's)."""
    return (plain_logits(logits, axis) and type(target) is np.ndarray and target.dtype == _INT64
            and target.shape == logits.shape[:-1] and target.flags.c_contiguous and target.flags.aligned
            and type(reduction) is str and reduction in REDUCTIONS
            and weight is None and softcap is None and type(ignore_index) is int
            and ignore_index == DEFAULT_IGNORE_INDEX and type(label_smoothing) in _PLAIN_NUMBERS
            and label_smoothing == 0 and type(z_loss) in _PLAIN_NUMBERS and z_loss == 0)


def plain_gradient(logits, out, inplace, grad_scale):
    """For a plain call, where the gradient goes (as gradient_destination) when out, inplace and
    grad_scale are valid as they are: a new array, out (of the logits' shape and dtype, C-contiguous,
    aligned, writable, apart from the logits) or the writable logits for inplace=True; else None."""
    if type(grad_scale) not in _PLAIN_NUMBERS:
        return None
    if type(grad_scale) is int and not -_FLOAT64_INT_BOUND < grad_scale < _FLOAT64_INT_BOUND:
        return None  # an int float() cannot take: upstream_gradient's ValueError
    if grad_scale == _INF or grad_scale == -_INF:
        return None  # upstream_gradient's ValueError
    if inplace is False and out is None:
        return _reused_memory.empty_like(logits)
    if inplace is False and type(out) is np.ndarray and out.shape == logits.shape and out.dtype == logits.dtype:
        flags = out.flags
        if flags.c_contiguous and flags.aligned and flags.writeable and not np.may_share_memory(out, logits):
            return out
    elif inplace is True and out is None and logits.flags.writeable:
        return logits
    return None


def upstream_gradient(grad_scale, reduction, row_shape):
    """(scalar, per-row array or None): a scalar for any reduction; for "none" also an array with
    the shape of the row losses, one upstream gradient per row. Infinite ones are refused: the
    gradient would be inf times 0 in places, and the kernel's factors made every element NaN (NaN is
    allowed, and gives NaN)."""
    not_masked(grad_scale, "grad_scale")  # (0-d ones too)
    if type(grad_scale) is float or np.ndim(grad_scale) == 0:
        scale = real_number(grad_scale.item() if isinstance(grad_scale, np.ndarray) else grad_scale, "grad_scale")
        if math.isinf(scale):
            raise ValueError("grad_scale must not be infinite")
        return scale, None
    if reduction != "none":
        raise ValueError(f"grad_scale must be a scalar for reduction {reduction!r}")
    per_row = real_array(grad_scale, "grad_scale")
    if per_row.shape != row_shape:
        raise ValueError(f"grad_scale must be a scalar or have the row shape {row_shape}, got {per_row.shape}")
    scales = np.array(per_row.reshape(-1), dtype=np.float64)  # a private copy
    if np.isinf(scales).any():
        raise ValueError(f"grad_scale must not be infinite, got inf in row {int(np.argmax(np.isinf(scales)))}")
    return 1.0, scales


def check_destination(destination, like, name):
    """out=, or the logits for inplace=True: an array the kernel can write the gradient into."""
    if not isinstance(destination, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(destination).__name__}")
    if destination.shape != like.shape or destination.dtype != like.dtype:
        byte_order = "" if destination.dtype.isnative else " in native byte order"
        raise ValueError(
            f"{name} must have the logits' shape {like.shape} and dtype {like.dtype}{byte_order}, "
            f"got {destination.shape} and {destination.dtype}"
        )
    if not (destination.flags.c_contiguous and destination.flags.writeable and destination.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous, writable and aligned")


def gradient_destination(logits, target, problem, out, inplace):
    """Where the caller gets the gradient: out, the logits themselves (inplace), or None for a new
    array. logits and target are the caller's objects, problem's arrays what the kernel reads
    (copies where the layout or dtype needed one): out may overlap neither, nor a probability target
    the logits with inplace=True. (Class indices, weights and per-row grad_scale are read from
    private copies before anything is written, so out may hold them.)"""
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be True or False, got {type(inplace).__name__}")
    if inplace and out is not None:
        raise ValueError("out and inplace=True exclude each other: inplace writes over the logits")
    # the caller's objects as arrays too (a memoryview's or a tensor's array views their memory)
    prob_targets = [] if problem.target_prob is None else [problem.target_prob, np.asarray(target)]
    if inplace:
        check_destination(logits, problem.array, "logits (with inplace=True)")
        if any(np.may_share_memory(logits, t) for t in prob_targets):
            raise ValueError("with inplace=True the target must not share memory with the logits")
        return logits
    if out is None:
        return None
    not_masked(out, "out")  # (the gradient would go to its data, under its old mask)
    check_destination(out, problem.array, "out")
    inputs = [np.asarray(logits), problem.array, problem.logits.data] + prob_targets
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out must not share memory with the logits or the target (see inplace=True)")
    return out


THREADS_VARIABLE = "SOFTMAX_CE_C_NUM_THREADS"
_ENVIRON_TYPE = type(os.environ)
_THREADS_KEY = os.environ.encodekey(THREADS_VARIABLE)


def configured_threads():
    """os.environ.get(THREADS_VARIABLE) without the two KeyErrors it raises and catches when the
    variable is unset (0.5 us, a tenth of a small call): the same lookup in os.environ's own dict."""
    environ = os.environ
    if type(environ) is not _ENVIRON_TYPE:  # replaced, say by a test's mock.patch
        return environ.get(THREADS_VARIABLE)
    value = environ._data.get(_THREADS_KEY)
    return None if value is None else environ.decodevalue(value)


def positive_int(value, name):
    if type(value) is not int:  # a plain int needs none of these checks
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a positive integer, got bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return min(value, 2**31 - 1)


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


USABLE_CORES = usable_cores()  # read once: the affinity mask rarely changes while a process runs


def thread_count(num_threads):
    """num_threads, or for None the environment variable or else every core this process could use
    when it imported softmax_ce_c."""
    if num_threads is not None:
        return positive_int(num_threads, "num_threads")
    configured = configured_threads()
    if configured:
        try:
            return positive_int(int(configured), THREADS_VARIABLE)
        except ValueError:
            raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {configured!r}") from None
    return USABLE_CORES


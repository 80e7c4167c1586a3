"""Checks and layout for the public API. Every error is raised here, before the kernel runs and
before anything is written; inputs are only read (a copy is made where the layout needs one)."""
import operator
from typing import NamedTuple, Optional

import numpy as np

LOGIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
REDUCTIONS = ("mean", "sum", "none")


class Rows(NamedTuple):
    """An array seen as N rows of K classes, C-contiguous and aligned, as the kernel reads it."""

    data: np.ndarray  # (N, K)
    moved_shape: tuple  # the caller's shape with the class axis moved last
    axis: int  # the caller's class axis, non-negative

    @property
    def row_shape(self):
        """The caller's shape without the class axis: the shape of per-row results."""
        return self.moved_shape[:-1]

    def restore(self, data):
        """An (N, K) result in the caller's layout (a view: the class axis moved back)."""
        return np.moveaxis(data.reshape(self.moved_shape), -1, self.axis)


class CrossEntropyProblem(NamedTuple):
    logits: Rows
    target_index: Optional[np.ndarray]  # (N,) int64, or None
    target_prob: Optional[np.ndarray]  # (N, K) of the logits' dtype, or None
    reduction: str


def float_array(x, name):
    """x as a float32 or float64 array with at least one dimension (byte-swapped input is converted)."""
    array = np.asarray(x)
    native = array.dtype.newbyteorder("=") if array.dtype.kind == "f" else array.dtype
    if native not in LOGIT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return array.astype(native, copy=False)


def class_axis(axis, ndim):
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
    moved = np.moveaxis(array, axis, -1)
    data = np.require(moved, requirements=["C", "A"]).reshape(-1, n_classes)
    return Rows(data, moved.shape, axis)


def rows_of(x, axis, name="x"):
    return as_rows(float_array(x, name), axis)


def check_reduction(reduction):
    if not (isinstance(reduction, str) and reduction in REDUCTIONS):
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


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
        raise IndexError(out_of_range_message(rows, row, int(flat[row])))
    return np.ascontiguousarray(flat, dtype=np.int64)


def class_probabilities(target, rows, logits_shape):
    if target.shape != logits_shape:
        raise ValueError(
            f"probability target must have the logits' shape {logits_shape}, got {target.shape} "
            "(class-index targets must be integers)"
        )
    return as_rows(target.astype(rows.data.dtype, copy=False), rows.axis).data


def out_of_range_message(rows, row, value):
    where = f"row {row}"
    if len(rows.row_shape) > 1:
        where += f" (index {tuple(int(i) for i in np.unravel_index(row, rows.row_shape))})"
    return f"class target {value} in {where} is outside [0, {rows.moved_shape[-1]})"


def cross_entropy_problem(logits, target, axis, reduction):
    logits = float_array(logits, "logits")
    rows = as_rows(logits, axis)
    reduction = check_reduction(reduction)
    target = np.asarray(target)
    kind = target.dtype.kind
    if kind in "iu":
        return CrossEntropyProblem(rows, class_indices(target, rows), None, reduction)
    if kind == "f":
        return CrossEntropyProblem(rows, None, class_probabilities(target, rows, logits.shape), reduction)
    raise TypeError(
        "target must hold integer class indices or float class probabilities, "
        f"got dtype {target.dtype}"
    )

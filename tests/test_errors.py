"""Bad input gets a clear TypeError, ValueError or IndexError, raised before anything is written."""
import re

import numpy as np
import pytest

import softmax_ce_c
from softmax_ce_c._kernel import ffi, lib

X = np.zeros((4, 5), np.float32)
Y = np.array([0, 1, 2, 3])
CROSS_ENTROPY = [softmax_ce_c.softmax_cross_entropy, softmax_ce_c.cross_entropy]
ROW_FUNCTIONS = [softmax_ce_c.logsumexp, softmax_ce_c.log_softmax, softmax_ce_c.softmax]


def every_function_on(x):
    """Calls of every public function on logits x (with fitting class-index targets)."""
    target = np.zeros(np.shape(x)[:-1], np.int64) if np.ndim(x) else np.int64(0)
    return [lambda f=f: f(x, target) for f in CROSS_ENTROPY] + [lambda f=f: f(x) for f in ROW_FUNCTIONS]


@pytest.mark.parametrize(
    "logits",
    [
        np.zeros((4, 5), np.int64),
        np.zeros((4, 5), np.complex64),
        np.zeros((4, 5), object),
        np.zeros((4, 5), np.float16),
        np.zeros((4, 5), bool),
        [[1, 2], [3, 4]],
        "logits",
        None,
    ],
    ids=["int64", "complex", "object", "float16", "bool", "int list", "string", "None"],
)
def test_non_float_logits_are_a_type_error(logits):
    for call in every_function_on(np.asarray(logits) if isinstance(logits, list) else logits):
        with pytest.raises(TypeError, match="float32 or float64"):
            call()


@pytest.mark.parametrize(
    "target",
    [Y.astype(np.complex64), Y.astype(bool), Y.astype(object), np.array(["a", "b", "c", "d"]), None],
    ids=["complex", "bool", "object", "string", "None"],
)
def test_non_numeric_targets_are_a_type_error(target):
    for f in CROSS_ENTROPY:
        with pytest.raises(TypeError, match="target must hold integer class indices or float"):
            f(X, target)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f: f(np.float32(1.0), np.int64(0)), "at least one dimension"),
        (lambda f: f(np.zeros((4, 0), np.float32), Y), "class axis has length 0"),
        (lambda f: f(X, Y[:3]), r"without the class axis, \(4,\), got \(3,\)"),
        (lambda f: f(X, Y[:, None]), r"without the class axis"),
        (lambda f: f(X, np.zeros((4, 4), np.float32)), r"logits' shape \(4, 5\), got \(4, 4\)"),
        (lambda f: f(X, np.zeros(4, np.float32)), "class-index targets must be integers"),
        (lambda f: f(X, Y, reduction="avg"), "reduction must be one of"),
        (lambda f: f(X, Y, reduction=None), "reduction must be one of"),
        (lambda f: f(X, Y, axis=2), "axis 2 is out of range"),
        (lambda f: f(X, Y, axis=-3), "axis -3 is out of range"),
    ],
)
def test_bad_shapes_and_options_are_a_value_error(call, message):
    for f in CROSS_ENTROPY:
        with pytest.raises(ValueError, match=message):
            call(f)


def test_row_functions_reject_bad_shapes_and_axes():
    for f in ROW_FUNCTIONS:
        with pytest.raises(ValueError, match="at least one dimension"):
            f(np.float64(2.0))
        with pytest.raises(ValueError, match="class axis has length 0"):
            f(np.zeros((3, 0)))
        with pytest.raises(ValueError, match="out of range"):
            f(X, axis=5)
        with pytest.raises(TypeError, match="axis must be an integer"):
            f(X, axis=1.0)


@pytest.mark.parametrize(
    "target, row, value",
    [
        (np.array([0, 1, 5, 3]), 2, 5),
        (np.array([0, 1, 2, -1]), 3, -1),
        (np.array([-100, 1, 2, 3]), 0, -100),
        (np.array([0, 9, 2, 3], np.uint8), 1, 9),
        (np.array([0, 1, 2, 2**64 - 1], np.uint64), 3, 2**64 - 1),
        (np.array([0, 1, 2, 2**62]), 3, 2**62),
    ],
)
def test_class_target_out_of_range_is_an_index_error_naming_row_and_value(target, row, value):
    for f in CROSS_ENTROPY:
        with pytest.raises(IndexError, match=rf"class target {value} in row {row} is outside \[0, 5\)"):
            f(X, target)


def test_out_of_range_message_gives_the_multi_index_for_leading_dims():
    y = np.zeros((2, 3), np.int64)
    y[1, 2] = 7
    with pytest.raises(IndexError, match=re.escape("class target 7 in row 5 (index (1, 2)) is outside [0, 5)")):
        softmax_ce_c.softmax_cross_entropy(np.zeros((2, 3, 5)), y)


def test_kernel_writes_nothing_before_reporting_a_bad_target():
    """The last row's bad target is found before the first row's loss or gradient is written."""
    n_rows, n_classes = 3, 4
    logits = np.zeros((n_rows, n_classes), np.float32)
    target = np.array([0, 1, 4], np.int64)
    grad = np.full((n_rows, n_classes), 7.0, np.float32)
    row_loss = np.full(n_rows, 7.0)
    params = ffi.new("sce_params *", {"n_rows": n_rows, "n_classes": n_classes, "grad_scale": 1.0})
    error = ffi.new("sce_error *")
    status = lib.sce_cross_entropy_f32(
        ffi.from_buffer("float[]", grad), ffi.from_buffer("double[]", row_loss), error, params,
        ffi.from_buffer("float[]", logits), ffi.from_buffer("int64_t[]", target), ffi.NULL,
    )
    assert status == lib.SCE_ERR_TARGET_RANGE and (error.row, error.value) == (2, 4)
    assert np.all(grad == 7.0) and np.all(row_loss == 7.0)


def test_kernel_status_codes_for_bad_sizes_and_missing_targets():
    out = np.empty(4, np.float64)
    for n_rows, n_classes in [(-1, 3), (2, 0)]:
        params = ffi.new("sce_params *", {"n_rows": n_rows, "n_classes": n_classes, "grad_scale": 1.0})
        assert lib.sce_logsumexp_f64(ffi.from_buffer("double[]", out), params, ffi.from_buffer("double[]", out)) == lib.SCE_ERR_SHAPE
    params = ffi.new("sce_params *", {"n_rows": 1, "n_classes": 4, "grad_scale": 1.0})
    status = lib.sce_cross_entropy_f64(
        ffi.NULL, ffi.from_buffer("double[]", out), ffi.new("sce_error *"), params,
        ffi.from_buffer("double[]", out), ffi.NULL, ffi.NULL,
    )
    assert status == lib.SCE_ERR_ARGUMENT

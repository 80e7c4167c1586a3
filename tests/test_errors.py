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
        np.zeros((4, 5), np.longdouble),
        np.zeros((4, 5), bool),
        [[1, 2], [3, 4]],
        "logits",
        None,
    ],
    ids=["int64", "complex", "object", "longdouble", "bool", "int list", "string", "None"],
)
def test_non_float_logits_are_a_type_error(logits):
    for call in every_function_on(np.asarray(logits) if isinstance(logits, list) else logits):
        with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
            call()


def test_masked_arrays_are_a_type_error():
    """np.asarray would drop the mask: the masked classes or rows would count."""
    masked_logits = np.ma.masked_array(X, mask=np.eye(4, 5, dtype=bool))
    for call in every_function_on(masked_logits):
        with pytest.raises(TypeError, match="(logits|x) must not be a masked array"):
            call()
    masked_target = np.ma.masked_array(Y, mask=[0, 1, 0, 0])
    for f in CROSS_ENTROPY:
        with pytest.raises(TypeError, match="target must not be a masked array"):
            f(X, masked_target)
        with pytest.raises(TypeError, match="weight must not be a masked array"):
            f(X, Y, weight=np.ma.masked_array(np.ones(5), mask=[0, 0, 1, 0, 0]))
    with pytest.raises(TypeError, match="grad_scale must not be a masked array"):
        softmax_ce_c.softmax_cross_entropy(X, Y, reduction="none", grad_scale=np.ma.masked_array(np.ones(4)))


@pytest.mark.parametrize(
    "target",
    [Y.astype(np.complex64), Y.astype(bool), Y.astype(object), np.array(["a", "b", "c", "d"]), None],
    ids=["complex", "bool", "object", "string", "None"],
)
def test_non_numeric_targets_are_a_type_error(target):
    for f in CROSS_ENTROPY:
        with pytest.raises(TypeError, match="target must hold integer class indices or float"):
            f(X, target)


def test_ints_beyond_64_bits_are_named_in_the_type_error():
    """A list with such an int becomes an array of objects."""
    for f in CROSS_ENTROPY:
        with pytest.raises(TypeError, match="got dtype object \\(Python ints beyond 64 bits"):
            f(X, [2**64, 0, 1, 2])
        with pytest.raises(TypeError, match="weight must hold real numbers, got dtype object \\(Python ints"):
            f(X, Y, weight=[2**64] * 5)


@pytest.mark.parametrize("logits_dtype", ["float32", "float16", "bfloat16"])
def test_probability_targets_beyond_the_kernels_float_range_are_a_value_error(logits_dtype):
    """Such logits' probabilities are read as float32: 1e39 would become inf (and NaN results)."""
    if logits_dtype == "bfloat16":
        logits_dtype = pytest.importorskip("ml_dtypes").bfloat16
    target = np.array([[0.0, 0.0, 1e39], [1.0, 0.0, 0.0]])
    for f in CROSS_ENTROPY:
        with pytest.raises(ValueError, match="probability target values must be within float32's range"):
            f(np.zeros((2, 3), logits_dtype), target)
    infinite = np.array([[0.0, 0.0, np.inf], [1.0, 0.0, 0.0]])  # (inf is within range: its loss is inf)
    logits = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]]).astype(logits_dtype)  # (not at the max: README)
    assert np.isinf(softmax_ce_c.cross_entropy(logits, infinite, reduction="none")[0])
    loss, grad = softmax_ce_c.softmax_cross_entropy(np.zeros((2, 3), np.float64), target, reduction="none")
    assert np.isfinite(grad).all() and loss[0] == pytest.approx(1e39 * np.log(3))  # float64 logits: float64 targets


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
        with pytest.raises(TypeError, match="axis must be an integer, got bool"):
            f(X, axis=True)  # (not taken as axis 1)


@pytest.mark.parametrize(
    "target, row, value",
    [
        (np.array([0, 1, 5, 3]), 2, 5),
        (np.array([0, 1, 2, -1]), 3, -1),
        (np.array([-101, 1, 2, 3]), 0, -101),  # -100 is the default ignore_index
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


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (dict(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (dict(label_smoothing=float("nan")), ValueError, "label_smoothing"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing must be a real number"),
        (dict(z_loss=-1e-4), ValueError, "z_loss must be a finite number >= 0"),
        (dict(z_loss=float("nan")), ValueError, "z_loss"),
        (dict(z_loss=float("inf")), ValueError, "z_loss"),
        (dict(softcap=0.0), ValueError, "softcap must be a finite number > 0"),
        (dict(softcap=-3.0), ValueError, "softcap"),
        (dict(softcap=float("inf")), ValueError, "softcap"),
        (dict(softcap=float("nan")), ValueError, "softcap"),
        (dict(softcap=True), TypeError, "softcap must be a real number"),
        (dict(label_smoothing=10**400), ValueError, "label_smoothing must be within float64's range"),
        (dict(z_loss=10**5000), ValueError, "z_loss must be within float64's range"),  # (beyond str()'s limit)
        (dict(softcap=10**400), ValueError, "softcap must be within float64's range"),
        (dict(weight=np.ones(4)), ValueError, r"weight must have shape \(5,\)"),
        (dict(weight=np.ones((1, 5))), ValueError, "weight must have shape"),
        (dict(weight=np.ones(5, complex)), TypeError, "weight must hold real numbers"),
        (dict(weight="heavy"), TypeError, "weight must hold real numbers"),
        (dict(ignore_index=1.0), TypeError, "ignore_index must be an integer"),
        (dict(ignore_index=True), TypeError, "ignore_index must be an integer"),
        (dict(ignore_index=2**70), ValueError, "ignore_index must fit in int64"),
        (dict(axis=True), TypeError, "axis must be an integer, got bool"),
    ],
)
def test_bad_option_values(options, error, message):
    for f in CROSS_ENTROPY:
        with pytest.raises(error, match=message):
            f(X, Y, **options)


@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64", "bfloat16"])
def test_byte_swapped_logits_are_read_as_their_values(dtype_name):
    """bfloat16 too, whose dtype kind is "V" (once its bytes were read as native ones)."""
    native = np.dtype(pytest.importorskip("ml_dtypes").bfloat16 if dtype_name == "bfloat16" else dtype_name)
    swapped = native.newbyteorder(">")
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    want = softmax_ce_c.softmax_cross_entropy(x.astype(native), np.array([0, 2]))
    got = softmax_ce_c.softmax_cross_entropy(x.astype(swapped), np.array([0, 2]))
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    for f in (softmax_ce_c.softmax, softmax_ce_c.logsumexp):
        assert np.array_equal(f(x.astype(swapped)), f(x.astype(native)))
    with pytest.raises(ValueError, match="dtype"):
        softmax_ce_c.softmax_cross_entropy(x.astype(swapped), np.array([0, 2]), inplace=True)


def test_ignore_index_with_probability_targets_is_a_value_error():
    """Unless it is negative, which no class can be: PyTorch lets such an ignore_index be too."""
    for f in CROSS_ENTROPY:
        for ignore_index in [0, 1, 7]:
            with pytest.raises(ValueError, match="ignore_index applies to class-index targets only"):
                f(X, np.full((4, 5), 0.2), ignore_index=ignore_index)
    for ignore_index in [-1, -5]:
        target = np.full((4, 5), 0.2)
        assert softmax_ce_c.cross_entropy(X, target, ignore_index=ignore_index) == softmax_ce_c.cross_entropy(X, target)


@pytest.mark.parametrize(
    "reduction, grad_scale, error, message",
    [
        ("mean", np.ones(4), ValueError, "grad_scale must be a scalar for reduction 'mean'"),
        ("sum", [1.0, 2.0, 3.0, 4.0], ValueError, "grad_scale must be a scalar"),
        ("none", np.ones(3), ValueError, r"row shape \(4,\)"),
        ("none", np.ones((4, 1)), ValueError, r"row shape \(4,\)"),
        ("none", np.ones(4, complex), TypeError, "grad_scale must hold real numbers"),
        ("mean", "1", TypeError, "grad_scale must be a real number"),
        ("mean", None, TypeError, "grad_scale must be a real number"),
        pytest.param("mean", 10**400, ValueError, "grad_scale must be within float64's range", id="mean-huge int"),
        pytest.param("none", -(10**400), ValueError, "grad_scale must be within float64's range", id="none-huge int"),
        ("mean", float("inf"), ValueError, "grad_scale must not be infinite"),
        ("sum", -np.inf, ValueError, "grad_scale must not be infinite"),
        ("none", np.array(np.inf, np.float32), ValueError, "grad_scale must not be infinite"),
        ("none", [1.0, 2.0, -np.inf, 1.0], ValueError, "grad_scale must not be infinite, got inf in row 2"),
        ("mean", np.ma.array(2.0, mask=True), TypeError, "grad_scale must not be a masked array"),
        ("mean", np.ma.masked, TypeError, "grad_scale must not be a masked array"),
    ],
)
def test_bad_grad_scale(reduction, grad_scale, error, message):
    with pytest.raises(error, match=message):
        softmax_ce_c.softmax_cross_entropy(X, Y, reduction=reduction, grad_scale=grad_scale)


def test_a_nan_grad_scale_gives_a_nan_gradient():
    for reduction, nan in [("mean", float("nan")), ("none", np.array([1.0, np.nan, 1.0, 1.0]))]:
        loss, grad = softmax_ce_c.softmax_cross_entropy(X, Y, reduction=reduction, grad_scale=nan)
        assert np.all(np.isfinite(loss))
        assert np.isnan(grad).all() if reduction == "mean" else np.isnan(grad).sum(axis=1).tolist() == [0, 5, 0, 0]


READ_ONLY = np.zeros((4, 5), np.float32)
READ_ONLY.flags.writeable = False


@pytest.mark.parametrize(
    "out, error, message",
    [
        (np.zeros((4, 6), np.float32), ValueError, r"out must have the logits' shape \(4, 5\) and dtype float32"),
        (np.zeros((4, 5), np.float64), ValueError, "dtype float32"),
        (np.zeros((5, 4), np.float32).T, ValueError, "out must be C-contiguous, writable and aligned"),
        (READ_ONLY, ValueError, "C-contiguous, writable"),
        ([[0.0] * 5] * 4, TypeError, "out must be a NumPy array"),
        (X, ValueError, "out must not share memory with the logits"),
        (np.ma.masked_all((4, 5), np.float32), TypeError, "out must not be a masked array"),
        (np.zeros((4, 5), ">f4"), ValueError, "dtype float32 in native byte order, got"),
    ],
)
def test_bad_out(out, error, message):
    with pytest.raises(error, match=message):
        softmax_ce_c.softmax_cross_entropy(X, Y, out=out)


def test_bad_inplace():
    with pytest.raises(ValueError, match="out and inplace=True exclude each other"):
        softmax_ce_c.softmax_cross_entropy(X.copy(), Y, out=np.empty_like(X), inplace=True)
    with pytest.raises(ValueError, match="C-contiguous, writable"):
        softmax_ce_c.softmax_cross_entropy(READ_ONLY, Y, inplace=True)
    with pytest.raises(ValueError, match="C-contiguous, writable"):
        softmax_ce_c.softmax_cross_entropy(np.zeros((5, 4), np.float32).T, Y, inplace=True)
    with pytest.raises(ValueError, match="dtype float32 in native byte order"):
        softmax_ce_c.softmax_cross_entropy(np.zeros((4, 5), ">f4"), Y, inplace=True)
    with pytest.raises(TypeError, match="must be a NumPy array"):
        softmax_ce_c.softmax_cross_entropy([[0.0] * 5] * 4, Y, inplace=True)
    with pytest.raises(TypeError, match="inplace must be True or False"):
        softmax_ce_c.softmax_cross_entropy(X.copy(), Y, inplace="yes")
    logits = X.copy()
    with pytest.raises(ValueError, match="target must not share memory"):
        softmax_ce_c.softmax_cross_entropy(logits, logits, inplace=True)


def test_out_may_not_overlap_the_callers_inputs_where_the_kernel_reads_copies():
    """The logits and a probability target the kernel reads as copies (byte-swapped, strided) are
    still the caller's inputs: out may not overlap them, nor with inplace=True the target them."""
    memory = np.zeros(40, np.float32)
    out = memory[:20].reshape(4, 5)
    strided_target = memory[::2].reshape(4, 5)
    with pytest.raises(ValueError, match="out must not share memory"):
        softmax_ce_c.softmax_cross_entropy(X, strided_target, out=out)
    swapped = np.zeros((4, 5), ">f4")
    with pytest.raises(ValueError, match="out must not share memory"):
        softmax_ce_c.softmax_cross_entropy(swapped, Y, out=swapped.view(np.float32))
    with pytest.raises(ValueError, match="out must not share memory"):  # not an array: NumPy views its memory
        softmax_ce_c.softmax_cross_entropy(X, memoryview(strided_target), out=out)
    logits = X.copy()
    with pytest.raises(ValueError, match="target must not share memory"):
        softmax_ce_c.softmax_cross_entropy(logits, logits[:, ::-1], inplace=True)


def test_nothing_is_written_before_an_error():
    out = np.full((4, 5), 7.0, np.float32)
    logits = np.ones((4, 5), np.float32)
    bad_target = np.array([0, 1, 2, 9])
    with pytest.raises(IndexError):
        softmax_ce_c.softmax_cross_entropy(logits, bad_target, out=out)
    with pytest.raises(IndexError):
        softmax_ce_c.softmax_cross_entropy(logits, bad_target, inplace=True)
    with pytest.raises(ValueError):
        softmax_ce_c.softmax_cross_entropy(logits, Y, reduction="none", grad_scale=np.ones(2), out=out)
    assert np.all(out == 7.0) and np.all(logits == 1.0)


def kernel_params(n_rows, n_classes, **options):
    fields = {"n_rows": n_rows, "n_classes": n_classes, "ignore_index": -100, "n_threads": 1, **options}
    return ffi.new("sce_params *", fields)


@pytest.mark.parametrize("n_rows, n_classes, n_threads", [(3, 4, 1), (40000, 4, 2), (2000, 100, 2)])
@pytest.mark.parametrize("copy_space", [False, True])  # the kernel's own copy of the indices, or the caller's
def test_kernel_writes_nothing_before_reporting_a_bad_target(n_rows, n_classes, n_threads, copy_space):
    """The last row's bad target is found before the first row's loss or gradient is written; with
    threads, before the workers (woken meanwhile) take a chunk."""
    logits = np.zeros((n_rows, n_classes), np.float32)
    target = np.arange(n_rows, dtype=np.int64) % n_classes
    target[-1] = n_classes
    grad = np.full((n_rows, n_classes), 7.0, np.float32)
    row_loss = np.full(n_rows, 7.0)
    row_loss_buffer = ffi.from_buffer("double[]", row_loss)
    copy_buffer = ffi.from_buffer("int64_t[]", np.empty(n_rows, np.int64)) if copy_space else ffi.NULL
    result = ffi.new("sce_result *", {"row_loss": row_loss_buffer})
    status = lib.sce_cross_entropy_f32(
        ffi.from_buffer("float[]", grad), result,
        kernel_params(n_rows, n_classes, n_threads=n_threads, target_copy=copy_buffer),
        ffi.from_buffer("float[]", logits), ffi.from_buffer("int64_t[]", target), ffi.NULL,
    )
    assert status == lib.SCE_ERR_TARGET_RANGE and (result.bad_row, result.bad_value) == (n_rows - 1, n_classes)
    assert np.all(grad == 7.0) and np.all(row_loss == 7.0)


@pytest.mark.parametrize(
    "n_rows, n_classes, options, status",
    [
        (-1, 3, {}, lib.SCE_ERR_SHAPE),
        (2, 0, {}, lib.SCE_ERR_SHAPE),
        (2, 4, {"label_smoothing": 1.5}, lib.SCE_ERR_ARGUMENT),
        (2, 4, {"softcap": -1.0}, lib.SCE_ERR_ARGUMENT),
        (2, 4, {"softcap": float("inf")}, lib.SCE_ERR_ARGUMENT),
        (2, 4, {"reduction": 7}, lib.SCE_ERR_ARGUMENT),
        (2, 4, {"z_loss": 0.5}, lib.SCE_ERR_ARGUMENT),  # z_loss without a row_z_loss buffer
    ],
)
def test_kernel_checks_its_arguments(n_rows, n_classes, options, status):
    buffer = ffi.new("double[]", 16)
    result = ffi.new("sce_result *", {"row_loss": buffer})
    target = ffi.new("int64_t[]", 2)
    params = kernel_params(n_rows, n_classes, **options)
    assert lib.sce_cross_entropy_f64(ffi.NULL, result, params, buffer, target, ffi.NULL) == status


def test_kernel_needs_a_target_and_a_thread():
    buffer = ffi.new("double[]", 16)
    result = ffi.new("sce_result *", {"row_loss": buffer})
    assert lib.sce_cross_entropy_f64(ffi.NULL, result, kernel_params(2, 4), buffer, ffi.NULL, ffi.NULL) == lib.SCE_ERR_ARGUMENT
    target = ffi.new("int64_t[]", 2)
    no_threads = kernel_params(2, 4, n_threads=0)
    assert lib.sce_cross_entropy_f64(buffer, result, no_threads, buffer, target, ffi.NULL) == lib.SCE_ERR_ARGUMENT
    assert lib.sce_logsumexp_f64(buffer, kernel_params(2, 0), buffer) == lib.SCE_ERR_SHAPE
    assert lib.sce_softmax_f64(buffer, kernel_params(2, 0), buffer) == lib.SCE_ERR_SHAPE

"""A gradient (or a softmax or log_softmax output) of 16 MiB or more is written with streaming stores
(whole cache lines past the caches, the edges of each row with plain stores; rows under 2 KiB only
when they are whole lines, else all plainly). The values must be
bitwise those of a small call, which writes plainly: rows are independent, so the big call's rows are
checked against the same rows computed a few at a time, with every alignment of the output and every
kind of row."""
import numpy as np
import pytest

import softmax_ce_c
from helpers import at_line_offset, make_index_target, make_logits, make_prob_target

STREAM_MIN_BYTES = 16 * 1024 * 1024
OPTIONS = [{}, dict(label_smoothing=0.1), dict(softcap=20.0, z_loss=1e-3), dict(probabilities=True)]


def problem(shape, dtype, probabilities, seed=0):
    rng = np.random.default_rng(seed)
    x = make_logits(rng, shape, dtype, "special")
    target = make_prob_target(rng, shape, dtype) if probabilities else make_index_target(rng, *shape)
    return x, target


def misaligned_filled(shape, dtype, offset):
    """A C-contiguous array whose data starts offset elements past a 64-byte boundary, filled with a
    value no gradient here takes (so that an element the kernel leaves unwritten shows)."""
    return at_line_offset(np.full(shape, 12345.0, dtype), offset)


def rows_in_small_calls(x, target, rows, rows_per_call=1, grad_scale=1.0, **options):
    """The gradient of the given rows, from calls of rows_per_call of them at a time, each far below
    the streaming size (reduction "sum" unless options say otherwise). grad_scale: a scalar, or for
    reduction "none" one per row of x."""
    rows = np.asarray(rows)
    options.setdefault("reduction", "sum")
    calls = (rows[n:n + rows_per_call] for n in range(0, len(rows), rows_per_call))
    return np.concatenate([softmax_ce_c.softmax_cross_entropy(
        x[part], target[part], grad_scale=grad_scale if np.ndim(grad_scale) == 0 else grad_scale[part], **options)[1]
        for part in calls])


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "smoothing", "softcap", "probabilities"])
@pytest.mark.parametrize("offset", [0, 1, 7])
@pytest.mark.parametrize("shape", [(1030, 4099), (2, 2_100_000), (21846, 192)],
                         ids=["rows", "split-classes", "short-rows"])
def test_streamed_gradient_is_bitwise_the_plain_one(shape, offset, options):
    """Short rows are streamed only when they are whole lines (offset 0; pipelined too: K > 128);
    else written plainly."""
    options = dict(options)
    probabilities = options.pop("probabilities", False)
    x, target = problem(shape, np.float32, probabilities)
    assert x.nbytes >= STREAM_MIN_BYTES
    out = misaligned_filled(shape, np.float32, offset)
    softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", out=out, num_threads=2, **options)
    rows = range(shape[0])
    want = rows_in_small_calls(x, target, rows, max(1, shape[0] // 16), **options)
    assert np.array_equal(out[rows], want, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_every_dtype_streams_the_plain_values(dtype):
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16 if dtype == "bfloat16" else dtype)
    n_classes = 3001
    n_rows = STREAM_MIN_BYTES // (np.dtype(dtype).itemsize * n_classes) + 5
    x, target = problem((n_rows, n_classes), dtype, probabilities=False)
    _, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum")
    rows = [0, 3, n_rows - 1]
    bits = np.dtype(f"u{grad.itemsize}")  # NaN rows compare by their bits
    assert np.array_equal(grad[rows].view(bits), rows_in_small_calls(x, target, rows).view(bits))


@pytest.mark.parametrize("num_threads", [1, 3])
@pytest.mark.parametrize("n_classes", [5003, 4096])  # parts of 2048 and a rest; parts only, rows on lines
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_pipelined_rows_write_every_gradient_once(dtype, n_classes, num_threads):
    """Streamed float32 and bfloat16 rows, and float64 rows on AVX-512, are pipelined (not in the
    AVX2 build, where these calls take the unpipelined path): a row's gradient is written, a part at
    a time, during the next row's exp pass, and a thread's last one after its last chunk. Every
    element of every row must end up written with the row's own values, rows ignored in between
    too."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16 if dtype == "bfloat16" else dtype)
    n_rows = STREAM_MIN_BYTES // (dtype.itemsize * n_classes) + 3
    x, target = problem((n_rows, n_classes), dtype, probabilities=False)
    target[np.random.default_rng(1).random(n_rows) < 0.1] = -100
    target[[1, 2, n_rows - 1]] = -100
    out = misaligned_filled(x.shape, dtype, offset=3)
    softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", out=out, num_threads=num_threads)
    bits = np.dtype(f"u{dtype.itemsize}")  # NaN rows compare by their bits
    assert np.array_equal(out.view(bits), rows_in_small_calls(x, target, range(n_rows)).view(bits))


LINE_OPTIONS = [pytest.param(dict(reduction="none", weight=True), id="weights"),
                pytest.param(dict(label_smoothing=0.1, weight=True), id="smoothing-weights"),
                pytest.param(dict(label_smoothing=0.1), id="smoothing"),
                pytest.param(dict(reduction="none", label_smoothing=0.1, weight=True), id="smoothing-row-weights")]


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("options", LINE_OPTIONS)
@pytest.mark.parametrize("n_classes", [40_000, 600], ids=["two-segments", "short-rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipelined_lines_take_every_kind_of_row(dtype, n_classes, options, num_threads):
    """Float32 and float64 rows pipelined on AVX-512 have their whole lines streamed one per 64 bytes
    of the next row's exp pass, their first and last partial lines written plainly, and a row whose
    values take another loop is written the general way. The class index at the argmax, in the
    first and the last line, rows of several segments or a few lines, weights, smoothing (with the
    call's weights, none, or weights per row: not streamed), negative upstream gradients (signed
    zeros), a row of no finite logit (NaN, not streamed) and (float32) rows whose upstream gradient
    takes the factors out of float's range must all give the bits of calls too small to stream."""
    itemsize = np.dtype(dtype).itemsize
    n_rows = STREAM_MIN_BYTES // (itemsize * n_classes) + 4
    line, offset = 64 // itemsize, 5
    first = line - offset  # the first whole line's first class; the last whole line ends at K - 5
    rng = np.random.default_rng(2)
    x = make_logits(rng, (n_rows, n_classes), dtype)
    target = make_index_target(rng, n_rows, n_classes)  # rows 0, 8, 16, ...: anywhere
    target[1::8] = np.argmax(x[1::8], axis=1)
    target[2::8], target[3::8] = 0, n_classes - 1  # in the partial first and last lines
    target[4::8], target[5::8] = first, n_classes - 6  # in the first and last whole lines
    x[6::8, first + line + 1] = 30.0  # the argmax in a whole line, the index too
    target[6::8] = first + line + 1
    x[3::8, 20:60] = -np.inf  # exps of 0: with a negative upstream gradient, gradients of -0
    x[10] = -np.inf  # no finite logit: a gradient of NaN, whose sign bit must not depend on the path
    target[9] = -100
    options = dict(options, reduction=options.get("reduction", "sum"))
    if options.pop("weight", False):
        options["weight"] = rng.uniform(0.5, 2.0, n_classes).astype(dtype)
    per_row = options["reduction"] == "none"
    grad_scale = rng.uniform(0.5, 2.0, n_rows)
    grad_scale[7::8] = 1e39  # beyond float32: those rows are written the general way
    grad_scale[3::8] = -1.25
    if not per_row:
        grad_scale = -0.75
    out = misaligned_filled(x.shape, dtype, offset=offset)
    softmax_ce_c.softmax_cross_entropy(x, target, out=out, grad_scale=grad_scale, num_threads=num_threads, **options)
    want = rows_in_small_calls(x, target, range(n_rows), STREAM_MIN_BYTES // 2 // (itemsize * n_classes),
                               grad_scale, **options)
    assert np.isinf(want[7]).any() == (per_row and dtype == np.float32) and np.isfinite(want[0]).all()
    assert np.signbit(want[3, 20:60]).all() == (not options.get("label_smoothing"))  # -0, not +0
    bits = f"u{itemsize}"  # signed zeros too
    assert np.array_equal(out.view(bits), want.view(bits))


def test_in_place_streams_over_the_logits():
    x, target = problem((1030, 4099), np.float32, probabilities=False)
    rows = range(1030)
    want = rows_in_small_calls(x, target, rows)
    _, grad = softmax_ce_c.softmax_cross_entropy(x, target, reduction="sum", inplace=True)
    assert grad is x or np.shares_memory(grad, x)
    assert np.array_equal(grad[rows], want, equal_nan=True)


@pytest.mark.parametrize("function", [softmax_ce_c.softmax, softmax_ce_c.log_softmax])
@pytest.mark.parametrize("n_classes", [4099, 128], ids=["rows-across-lines", "rows-on-lines"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_streamed_row_outputs_are_bitwise_the_plain_ones(dtype, n_classes, function):
    """softmax and log_softmax outputs of 16 MiB or more are streamed as the gradient is: every
    element of every row must be the one calls too small to stream write."""
    dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16 if dtype == "bfloat16" else dtype)
    n_rows = STREAM_MIN_BYTES // (dtype.itemsize * n_classes) + 3
    x = make_logits(np.random.default_rng(4), (n_rows, n_classes), dtype, "special")
    got = function(x, num_threads=2)
    rows_per_call = n_rows // 3
    want = np.concatenate([function(x[n:n + rows_per_call]) for n in range(0, n_rows, rows_per_call)])
    bits = f"u{dtype.itemsize}"  # NaN rows compare by their bits
    assert np.array_equal(got.view(bits), want.view(bits))

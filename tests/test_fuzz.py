"""Seeded differential fuzzing: random cases of every public function against the reference, held to
the accuracy contract (fuzz_check.py says how each tolerance follows from the README).

Each case is drawn from its own seed (fuzz_cases.py): 1 to 4 dims with 0, 1 and odd sizes, every
dtype (bfloat16 when ml_dtypes is installed), C / Fortran / strided / negative-stride / misaligned /
byte-swapped layouts, values from 0.1 to 1e30 with +-inf and NaN sprinkled in, integer ties, index
or probability targets, every option, reduction, grad_scale, out= / inplace=True and thread count.
The inputs must come back unchanged (but the logits with inplace=True), and the loss-only
cross_entropy must give bitwise the loss of softmax_cross_entropy.

Environment variables:
  SOFTMAX_CE_C_FUZZ_CASES=N       cases per test and instruction set (default 2000); a long run is
                                  SOFTMAX_CE_C_FUZZ_CASES=100000
  SOFTMAX_CE_C_FUZZ_FIRST_SEED=S  the first seed (default 0); with SOFTMAX_CE_C_FUZZ_CASES=1 this
                                  reruns one failing case
A failure lists every failing case (up to 20) with its seed, instruction set and parameters.
"""
import os

import numpy as np
import pytest

import softmax_ce_c
from fuzz_cases import build_inputs, draw_case, draw_row_case, in_layout, make_values, dtype_of
from fuzz_check import FLOAT_EXP_DTYPES, lse_error, rounds_to_infinity, special_values_mismatch, check_gradient, check_loss, exact_arrays, oracle_dtype, tolerance_terms
from helpers import ulp_error
from softmax_ce_c import reference

N_CASES = int(os.environ.get("SOFTMAX_CE_C_FUZZ_CASES", "2000"))
FIRST_SEED = int(os.environ.get("SOFTMAX_CE_C_FUZZ_FIRST_SEED", "0"))
MAX_REPORTED = 20


def run_cases(draw, check):
    """Runs check on every drawn case; fails once at the end, listing the failing cases."""
    failures = []
    for seed in range(FIRST_SEED, FIRST_SEED + N_CASES):
        case = draw(seed)
        try:
            problem = check(case)
        except Exception as error:  # an exception on valid input is a failure too
            problem = f"raised {type(error).__name__}: {error}"
        if problem:
            failures.append(f"seed {seed} ({softmax_ce_c.instruction_set()}) {case}: {problem}")
    if failures:
        rerun = "rerun one with SOFTMAX_CE_C_FUZZ_FIRST_SEED=<seed> SOFTMAX_CE_C_FUZZ_CASES=1"
        pytest.fail(f"{len(failures)} of {N_CASES} cases failed ({rerun}):\n" + "\n".join(failures[:MAX_REPORTED]))


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def unchanged(before, after):
    """Bitwise the same values (NaN payloads included)."""
    return before.dtype == after.dtype and before.shape == after.shape and before.tobytes() == np.ascontiguousarray(after).tobytes()


def call_cross_entropy(case, logits, target, options, grad_scale):
    """(loss, grad, the logits the reference must see, a problem message or None)."""
    common = dict(axis=case["axis"], reduction=case["reduction"], num_threads=case["num_threads"], **options)
    native = logits.dtype.newbyteorder("=")
    if case["mode"] == "inplace":
        logits = np.array(logits, dtype=native, order="C")  # a fresh copy: writable and aligned
        original = logits.copy()
        loss, grad = softmax_ce_c.softmax_cross_entropy(logits, target, grad_scale=grad_scale, inplace=True, **common)
        return loss, grad, original, None if grad is logits else "inplace=True did not return the logits"
    out = np.full(logits.shape, np.nan, native) if case["mode"] == "out" else None
    loss, grad = softmax_ce_c.softmax_cross_entropy(logits, target, grad_scale=grad_scale, out=out, **common)
    if out is not None and grad is not out:
        return loss, grad, logits, "out= was not returned"
    return loss, grad, logits, None


def check_cross_entropy_case(case):
    logits, target, options, grad_scale = build_inputs(case)
    kept = snapshot(logits, target, np.asarray(grad_scale), options.get("weight", np.zeros(0)))
    loss, grad, seen_logits, problem = call_cross_entropy(case, logits, target, options, grad_scale)
    if problem:
        return problem
    if case["mode"] != "inplace" and not unchanged(kept[0], logits):
        return "the logits were modified"
    if not all(unchanged(k, a) for k, a in zip(kept[1:], [target, np.asarray(grad_scale), options.get("weight", np.zeros(0))])):
        return "the target, grad_scale or weight was modified"

    dtype = seen_logits.dtype.newbyteorder("=")
    loss_dtype = np.float32 if dtype.itemsize == 2 else dtype
    if grad.dtype != dtype or grad.shape == () or grad.shape != seen_logits.shape:
        return f"gradient dtype/shape {grad.dtype} {grad.shape}"
    if np.asarray(loss).dtype != loss_dtype:
        return f"loss dtype {np.asarray(loss).dtype}"

    x, exact_target = exact_arrays(seen_logits, target)
    want_loss, want_grad = reference.softmax_cross_entropy(
        x, exact_target, axis=case["axis"], reduction=case["reduction"], grad_scale=grad_scale, **options)
    if np.shape(loss) != np.shape(want_loss):
        return f"loss shape {np.shape(loss)}, want {np.shape(want_loss)}"
    size, extra, loss_extra = tolerance_terms(x, exact_target, options, case["reduction"], grad_scale, case["axis"],
                                              float_exps=case["dtype"] in FLOAT_EXP_DTYPES)
    problem = check_loss(loss, want_loss, loss_extra) or check_gradient(grad, want_grad, size, extra, case["dtype"])
    if problem:
        return problem

    loss_only = softmax_ce_c.cross_entropy(seen_logits, target, axis=case["axis"], reduction=case["reduction"],
                                           num_threads=case["num_threads"], **options)
    if not np.array_equal(loss_only, loss, equal_nan=True):
        return f"cross_entropy gave {loss_only!r}, softmax_cross_entropy {loss!r}"
    return None


def check_row_case(case):
    rng = np.random.default_rng([case["seed"], 1])
    dtype = dtype_of(case["dtype"])
    x = in_layout(make_values(rng, case), dtype, case["layout"], rng)
    kept = np.array(x, copy=True)
    result = getattr(softmax_ce_c, case["function"])(x, axis=case["axis"])
    if not unchanged(kept, x):
        return "the input was modified"
    exact_input = np.asarray(x).astype(np.float64).astype(oracle_dtype(dtype))
    want = getattr(reference, case["function"])(exact_input, axis=case["axis"])
    result = np.asarray(result)
    if result.dtype != dtype.newbyteorder("=") or result.shape != np.shape(want):
        return f"result dtype/shape {result.dtype} {result.shape}, want {np.shape(want)}"
    # README/test_api_vs_reference: 4 ulp for float32 and float64, 1 ulp (rounded once) for halves;
    # logsumexp = max + log1p(rest) cancels where it is near 0, leaving the absolute error lse_error of
    # exps in double (float32 and bfloat16 rows take their rest again from those there: logsumexp_cancels)
    ulps = 1 if dtype.itemsize == 2 else 4
    got = result.astype(np.float64).astype(want.dtype)
    error = ulp_error(result, want)
    overflow = rounds_to_infinity(want, result.dtype)
    ok = ~special_values_mismatch(got, want, result.dtype) & ((error <= ulps) | overflow)
    if case["function"] == "logsumexp":
        x_rows = np.moveaxis(exact_input, case["axis"], -1)
        row_max = np.max(np.where(np.isnan(x_rows), -np.inf, x_rows), axis=-1)
        with np.errstate(invalid="ignore"):
            bound = lse_error(row_max, float_exps=False)
            ok |= np.isfinite(want) & (np.abs(got - want) <= bound)
    if np.all(ok):
        return None
    where = np.unravel_index(np.argmin(ok), ok.shape) if ok.ndim else ()
    return f"at {where}: got {result[where]!r}, exact {want[where]!r}, {error[where]} ulp"


# a float32 loss beyond float32's range is +inf, rightly, but NumPy warns in the package's cast
# (reported; an np.errstate(over="raise") caller gets FloatingPointError there)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_fuzz_cross_entropy_against_reference():
    run_cases(draw_case, check_cross_entropy_case)


def test_fuzz_row_functions_against_reference():
    run_cases(draw_row_case, check_row_case)

"""Judging one fuzz case against the reference, with tolerances taken from the README's accuracy
contract (helpers.py holds its constants):

- float32 / float64 gradient: each element within GRAD_EPS eps (p_k T + |c_k|) scale of the exact
  value, where c are the row's target coefficients (weights and label smoothing applied, README
  "Options") and T their total; z_loss adds its own gradient 2 z lse p_k to that size, a softcap
  multiplies it by its slope.
- float16 / bfloat16 gradient: the exact value rounded (within 1 ulp), or where the exact gradient
  cancels, the double-precision residue (README: about 1e-17 of the row's scale); bfloat16's exps
  run in float lanes, and its residue is then float32's.
- loss: LOSS_ULPS ulp of its dtype (float32 for half logits), or FLOAT64_RTOL relative for float64.
- softcap: the kernel computes x' = softcap tanh(x / softcap) in double with a 2-ulp expm1, so its
  result is exact for logits moved by up to DELTA = 4 eps64 softcap; that moves p_k by 2 DELTA p_k
  and the loss by DELTA sum_k |p_k T - c_k| (more than the float64 contract for large softcaps).
  Its slope 1 - tanh^2(u) = 4 exp(-2|u|) / (1 + exp(-2|u|))^2 has a relative error of about
  (2|u| + 4) eps64: exp's conditioning times the rounding of u = x / softcap. For float logits the
  AVX-512 and AVX2 kernels compute x' and the slope within FLOAT_SOFTCAP_RTOL relative (a shorter
  polynomial) for softcaps in FLOAT_SOFTCAP_RANGE: DELTA is then at least FLOAT_SOFTCAP_RTOL softcap,
  the slope's error that much more (vector_softcap_takes).
- z_loss: z lse^2 is as accurate as lse, which is max + log1p(rest) and so has an absolute error of
  a few eps64 (|max| + 1) plus, for FLOAT_EXP_DTYPES (whose exps run in float lanes, 1.13 ulp), a
  couple of float32 eps: where lse is near 0 that is a large relative error of the z-loss (README's
  "4 ulp" cannot hold there: it is the conditioning of lse, see lse_error below).
- the exps are rounded before they are scaled: where exp(x'_k - max) is subnormal (in float for
  float32 logits) the gradient element keeps an absolute error of that subnormal's unit times its
  factor (p_k's multiplier T scale + 2 z lse scale, which is large for a large z-loss lse).
- NaN exactly where the reference has NaN; an infinity exactly where it has one; a finite exact
  value beyond the dtype's range must come out as that infinity.
"""
import numpy as np

from helpers import FLOAT64_RTOL, GRAD_EPS, LOSS_ULPS, ulp_error
from softmax_ce_c import instruction_set, reference

FLOAT_SOFTCAP_RTOL = 2.0**-40  # csrc/vector_softcap.h
FLOAT_SOFTCAP_RANGE = (2.0**-1000, 2.0**10)  # its SOFTCAP_VECTOR_MIN and SOFTCAP_VECTOR_MAX


def vector_softcap_takes(softcap, float_exps):
    """Whether the kernel running now softcaps these logits in its vector softcap (AVX-512 or AVX2)."""
    low, high = FLOAT_SOFTCAP_RANGE
    return float_exps and instruction_set() != "baseline" and low <= softcap <= high

HALF_NAMES = ("float16", "bfloat16")


def finfo(dtype):
    """np.finfo, which does not know bfloat16 (ml_dtypes.finfo does)."""
    if np.dtype(dtype).name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


EPS64 = np.finfo(np.float64).eps
CANCELLATION = 2.0**-48  # the residue a half-precision gradient may keep where the exact one cancels
FLOAT_EXP_DTYPES = ("float32", "bfloat16")  # the kernel's exps run in float lanes (type_*.h FLOAT_EXP)


def lse_error(x_capped_max, float_exps):
    """Absolute error bound of the kernel's lse = max + log1p(rest): rest is a sum of positive exps,
    each within 1.2 ulp (of float32 for float exps, else of double), so log1p(rest) is within that
    relative error of rest / (1 + rest) < 1; the additions round in double."""
    exp_eps = 2 * np.finfo(np.float32).eps if float_exps else 2 * EPS64
    return exp_eps + 4 * EPS64 * (np.abs(x_capped_max) + 1)


def oracle_dtype(dtype):
    """float64 results are judged in longdouble, everything else in float64 (half values are exact there)."""
    return np.longdouble if np.dtype(dtype).name == "float64" else np.float64  # either byte order


def prob_dtype(logits_dtype):
    """README: probability targets are read as float64 for float64 logits, else as float32."""
    return np.float64 if np.dtype(logits_dtype).name == "float64" else np.float32  # either byte order


def exact_arrays(logits, target):
    """The logits and target as the kernel sees them, in the oracle precision."""
    oracle = oracle_dtype(logits.dtype)
    x = np.asarray(logits).astype(np.float64).astype(oracle)
    if target.dtype.kind == "f":
        target = target.astype(prob_dtype(logits.dtype)).astype(oracle)
    return x, target


def target_coefficients(x_rows, target_rows, options, is_index):
    """c (N..., K), and the ignored-row mask, with classes last (README "Options" table)."""
    n_classes = x_rows.shape[-1]
    eps = options.get("label_smoothing", 0.0)
    weight = options.get("weight")
    weight = np.ones(n_classes, x_rows.dtype) if weight is None else np.asarray(weight).astype(x_rows.dtype)
    if is_index:
        ignored = target_rows == options.get("ignore_index", -100)
        y = np.where(ignored, 0, target_rows).astype(np.int64)[..., None]
        c = np.broadcast_to(eps / n_classes * weight, x_rows.shape).copy()
        on_target = (1 - eps) * weight[y]
        np.put_along_axis(c, y, np.take_along_axis(c, y, axis=-1) + on_target, axis=-1)
        c[ignored] = 0.0
        return c, ignored, weight[y[..., 0]]
    c = weight * ((1 - eps) * target_rows + eps / n_classes)
    return c, np.zeros(x_rows.shape[:-1], bool), None


def tolerance_terms(x, target, options, reduction, grad_scale, axis, float_exps):
    """Per element: the gradient's size (the factor of GRAD_EPS eps) and the softcap's extra error;
    and the softcap's extra error of the loss, reduced like the loss. x and target in the oracle
    precision, in the caller's layout; float_exps for logits whose exps run in float lanes."""
    is_index = target.dtype.kind in "iu"
    x_rows = np.moveaxis(x, axis, -1)
    target_rows = target if is_index else np.moveaxis(target, axis, -1)
    softcap, z_loss = options.get("softcap"), options.get("z_loss", 0.0)
    with np.errstate(all="ignore"):
        if softcap:
            x_capped = softcap * np.tanh(x_rows / softcap)
            slope = 1.0 / np.cosh(x_rows / softcap) ** 2
        else:
            x_capped, slope = x_rows, 1.0
        p = reference.softmax(x_capped)
        lse = np.abs(reference.logsumexp(x_capped))[..., None]
        c, ignored, target_weight = target_coefficients(x_rows, target_rows, options, is_index)
        counted = ~ignored[..., None]
        total = c.sum(axis=-1, keepdims=True)
        if reduction == "mean":
            ce_denominator = target_weight[~ignored].sum() if is_index else ignored.size
            z_denominator = np.count_nonzero(~ignored)
        else:
            ce_denominator = z_denominator = 1
        scale = np.abs(np.asarray(grad_scale, x.dtype))[..., None]
        size = (p * total + np.abs(c)) * scale / ce_denominator + 2 * z_loss * lse * p * scale / z_denominator
        unsloped_size = size
        size = np.where(counted, size * slope, 0.0)
        slope_rtol = FLOAT_SOFTCAP_RTOL if softcap and vector_softcap_takes(softcap, float_exps) else 0.0
        delta = max(4 * EPS64, slope_rtol) * softcap if softcap else 0.0
        lse_delta = lse_error(np.max(np.where(np.isnan(x_capped), -np.inf, x_capped), axis=-1, keepdims=True), float_exps) + delta
        extra = delta * slope * scale * p * 2 * total / ce_denominator
        extra = extra + 2 * z_loss * (lse_delta + 2 * delta * lse) * slope * scale * p / z_denominator
        unit = np.finfo(np.float32 if float_exps else np.float64).smallest_subnormal
        factor = total * scale / ce_denominator + 2 * z_loss * lse * scale / z_denominator
        extra = extra + 2 * unit * factor * slope
        if softcap:  # the slope 1 - tanh^2(u) ~ 4 exp(-2|u|) inherits 2|u| times the rounding of u = x / softcap
            u = np.where(np.isfinite(x_rows), x_rows / softcap, 0.0)  # an infinite x has slope 0, exactly
            extra = extra + ((2.0 * np.abs(u) + 4.0) * EPS64 + slope_rtol) * size
            # and a subnormal slope is off by up to its last unit or two, times the rest of the gradient
            extra = extra + 2 * np.finfo(np.float64).smallest_subnormal * unsloped_size
        extra = np.where(counted, extra, 0.0)
        ce_moved = delta * np.where(counted, np.abs(p * total - c), 0.0).sum(axis=-1)
        if float_exps:  # each float exp below FLT_MIN is right to its last subnormal unit only, and
            # rest, and so a loss of that size, sums those errors: seeds 902952 and 3007714
            top = np.max(np.where(np.isnan(x_capped), -np.inf, x_capped), axis=-1, keepdims=True)
            subnormal = np.count_nonzero(np.exp(x_capped - top) < np.finfo(np.float32).tiny, axis=-1)
            ce_moved = ce_moved + np.where(ignored, 0.0, 2 * unit * subnormal * np.abs(total[..., 0]))
        z_term = z_loss * lse_delta[..., 0] * (2 * lse[..., 0] + lse_delta[..., 0])
        z_moved = np.where(ignored, 0.0, z_term)
        if reduction == "none":
            loss_extra = ce_moved + z_moved
        else:
            loss_extra = ce_moved.sum() / ce_denominator + z_moved.sum() / z_denominator
    return np.moveaxis(size, -1, axis), np.moveaxis(extra, -1, axis), loss_extra


def rounds_to_infinity(want, result_dtype):
    """Where a finite exact value rounds to +-inf in result_dtype (at max + half its last ulp)."""
    info = finfo(result_dtype)
    threshold = float(info.max) + float(info.max) * float(info.eps) / 4  # max + ulp(max) / 2
    with np.errstate(invalid="ignore"):
        return np.isfinite(want) & (np.abs(want) >= threshold)


def special_values_mismatch(got, want, result_dtype):
    """Where NaN, infinities or overflow disagree (a boolean array), with got and want in the oracle
    precision."""
    nan_mismatch = np.isnan(got) != np.isnan(want)
    inf_mismatch = np.isinf(want) & (got != want)
    with np.errstate(invalid="ignore"):
        overflow_mismatch = rounds_to_infinity(want, result_dtype) & (got != np.sign(want) * np.inf)
    return nan_mismatch | inf_mismatch | overflow_mismatch


def first_failure(ok, got, want, bound):
    where = np.unravel_index(np.argmin(ok), ok.shape) if ok.ndim else ()
    return (f"at {where}: got {np.asarray(got)[where]!r}, exact {np.asarray(want)[where]!r}, "
            f"allowed error {np.asarray(bound)[where]!r} ({np.count_nonzero(~ok)} of {ok.size} elements off)")


def check_gradient(grad, want, size, extra, logits_dtype_name):
    """None, or a message saying where grad breaks the contract."""
    result_dtype = grad.dtype
    got = grad.astype(np.float64).astype(want.dtype)
    special = special_values_mismatch(got, want, result_dtype)
    regular = np.isfinite(want) & ~np.isnan(got) & ~rounds_to_infinity(want, result_dtype)
    with np.errstate(invalid="ignore"):
        error = np.abs(got - want)
        tiny = 2 * finfo(result_dtype).smallest_subnormal
        if logits_dtype_name in HALF_NAMES:
            residue = GRAD_EPS * np.finfo(np.float32).eps if logits_dtype_name in FLOAT_EXP_DTYPES else CANCELLATION
            bound = residue * size + extra + tiny
            close = (ulp_error(grad, want) <= 1) | (error <= bound)
        else:
            bound = GRAD_EPS * finfo(result_dtype).eps * size + extra + tiny
            close = error <= bound
    ok = ~special & (close | ~regular)
    return None if np.all(ok) else "gradient " + first_failure(ok, grad, want, bound)


def check_loss(loss, want, extra):
    """None, or a message saying where the loss breaks the contract."""
    loss = np.asarray(loss)
    want = np.asarray(want)
    got = loss.astype(np.float64).astype(want.dtype)
    special = special_values_mismatch(got, want, loss.dtype)
    regular = np.isfinite(want) & ~np.isnan(got) & ~rounds_to_infinity(want, loss.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(got - want)
        close = (ulp_error(loss, want) <= LOSS_ULPS) | (error <= extra)
        if loss.dtype == np.float64:
            close |= error <= FLOAT64_RTOL * np.abs(want)
    ok = ~special & (close | ~regular)
    return None if np.all(ok) else "loss " + first_failure(ok, loss, want, extra)

"""Random cases for the differential fuzz test (test_fuzz.py): each case is drawn from one seed, so a
failing seed can be run alone and turned into a regression test.

A case is a dict of plain parameters (printable); build_inputs turns it into arrays."""
import numpy as np

from helpers import misaligned

try:
    import ml_dtypes
except ImportError:  # bfloat16 cases are then left out
    ml_dtypes = None

DTYPE_NAMES = ["float32", "float64", "float16"] + (["bfloat16"] if ml_dtypes is not None else [])
LAYOUTS = ["C", "C", "F", "strided", "negative", "misaligned", "byteswapped"]
INDEX_DTYPES = ["int64", "int32", "int16", "int8", "uint8", "uint16", "uint64"]
DIM_SIZES = [0, 1, 1, 2, 3, 5, 7, 13, 16, 17]
CLASS_SIZES = [1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 48, 49, 65, 72, 73, 88, 89, 100, 257, 1000]
MAX_ELEMENTS = 4000


def dtype_of(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def pick(rng, choices):
    """One of choices (any Python objects), as the object itself rather than a NumPy scalar."""
    return choices[int(rng.integers(len(choices)))]


def draw_shape(rng, big):
    """(shape, axis): 1 to 4 dims with 0, 1 and odd sizes, at most MAX_ELEMENTS elements; a big case
    is a few rows of ~100K elements in all, enough for the kernel to share them out to threads."""
    if big:
        n_classes = pick(rng, [33, 89, 1000, 40000])
        shape = [max(1, int(rng.integers(70000, 140000)) // n_classes), n_classes]
        return shape, -1 if rng.random() < 0.8 else 1
    ndim = int(rng.integers(1, 5))
    axis = int(rng.integers(-ndim, ndim))
    while True:
        shape = [pick(rng, DIM_SIZES) for _ in range(ndim)]
        shape[axis] = pick(rng, CLASS_SIZES)
        if np.prod(shape) <= MAX_ELEMENTS:
            return shape, axis


def draw_values(rng):
    return {
        "scale": pick(rng, [0.1, 1.0, 3.0, 30.0, 300.0, 1e4, 1e30]),
        "offset": pick(rng, [0.0, 0.0, 0.0, 100.0, -1e4, 1e8]),
        "integers": rng.random() < 0.15,  # ties: equal logits, and several places holding the max
        "special_rate": pick(rng, [0.0, 0.0, 0.02, 0.2, 0.7]),
    }


def draw_case(seed):
    """The parameters of one cross-entropy case: shape, dtype, values, layout, target, every option."""
    rng = np.random.default_rng(seed)
    big = rng.random() < 0.02
    shape, axis = draw_shape(rng, big)
    n_classes = shape[axis]
    case = {"seed": seed, "shape": shape, "axis": axis, "dtype": pick(rng, DTYPE_NAMES), **draw_values(rng)}
    case["layout"] = pick(rng, LAYOUTS)
    case["target"] = pick(rng, ["index", "index", "index", "prob", "unnormalised", "onehot"])
    if case["target"] == "index":
        fits = [name for name in INDEX_DTYPES if np.iinfo(name).max >= n_classes]
        case["index_dtype"] = pick(rng, fits)
        signed = np.dtype(case["index_dtype"]).kind == "i"
        case["ignore_index"] = pick(rng, ["default", "present", "present"] + (["-1", "-100 present"] if signed else []))
    else:
        case["prob_dtype"] = pick(rng, ["float16", "float32", "float64"])
    case["target_layout"] = pick(rng, ["C", "C", "strided", "negative"])
    case["weight"] = pick(rng, [None, None, "uniform", "with zeros"])
    case["label_smoothing"] = pick(rng, [0.0, 0.0, 0.0, float(rng.uniform(0, 1)), 1.0])
    case["z_loss"] = pick(rng, [0.0, 0.0, 0.0, 1e-4, 1e-2, 1.0])
    case["softcap"] = pick(rng, [None, None, None, float(rng.uniform(0.5, 50.0))])
    case["reduction"] = pick(rng, ["mean", "sum", "none"])
    case["grad_scale"] = pick(rng, [1.0, 1.0, float(rng.uniform(-3, 3)), 0.0, "per row"])
    if case["grad_scale"] == "per row" and case["reduction"] != "none":
        case["grad_scale"] = 2.0
    case["mode"] = pick(rng, ["allocate", "allocate", "out", "inplace"])
    case["num_threads"] = pick(rng, [None, 1, 2, 3, 8])
    return case


def draw_row_case(seed):
    """The parameters of one logsumexp / log_softmax / softmax case."""
    rng = np.random.default_rng(seed)
    shape, axis = draw_shape(rng, big=False)
    case = {"seed": seed, "shape": shape, "axis": axis, "dtype": pick(rng, DTYPE_NAMES), **draw_values(rng)}
    case["layout"] = pick(rng, LAYOUTS)
    case["function"] = pick(rng, ["logsumexp", "log_softmax", "softmax"])
    return case


def make_values(rng, case):
    """Logit values in float64 (exactly representable in the case's dtype), C order."""
    x = case["offset"] + case["scale"] * rng.standard_normal(case["shape"])
    if case["integers"]:
        x = np.round(x / case["scale"] * 2.0)
    n_special = rng.binomial(x.size, case["special_rate"]) if x.size else 0
    where = rng.integers(0, x.size, n_special) if n_special else np.zeros(0, int)
    x.reshape(-1)[where] = rng.choice([-np.inf, -np.inf, -np.inf, np.inf, np.nan], n_special)
    with np.errstate(over="ignore"):  # 1e30 overflows the half dtypes: +-inf, one more special value
        return x.astype(dtype_of(case["dtype"])).astype(np.float64)


def in_layout(values, dtype, layout, rng):
    """values (C order, float64) as an array of dtype in the given memory layout."""
    x = np.asarray(values).astype(dtype)
    if x.ndim == 0:
        return x
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        buffer = np.zeros(tuple(2 * n + 1 for n in x.shape), dtype)
        view = buffer[tuple(slice(1, None, 2) for _ in x.shape)]
        view[...] = x
        return view
    if layout == "negative":
        flip = tuple(slice(None, None, -1) if rng.random() < 0.7 else slice(None) for _ in x.shape)
        return x[flip].copy()[flip]
    if layout == "misaligned" and x.size:
        return misaligned(x)
    if layout == "byteswapped":
        return x.astype(dtype.newbyteorder(">"))
    return x


def build_inputs(case):
    """(logits, target, options for both the API and the reference, grad_scale, mode extras)."""
    rng = np.random.default_rng([case["seed"], 1])
    dtype = dtype_of(case["dtype"])
    shape, axis = case["shape"], case["axis"]
    n_classes = shape[axis]
    row_shape = tuple(np.delete(shape, axis % len(shape)))
    values = make_values(rng, case)
    logits = in_layout(values, dtype, case["layout"], rng)
    options = {"label_smoothing": case["label_smoothing"], "z_loss": case["z_loss"], "softcap": case["softcap"]}
    if case["target"] == "index":
        target = np.asarray(rng.integers(0, n_classes, row_shape))
        rule = case["ignore_index"]
        if rule.startswith("-100") or rule == "-1":
            options["ignore_index"] = -100 if rule.startswith("-100") else -1
            target.reshape(-1)[rng.random(target.size) < 0.3] = options["ignore_index"]
        elif rule == "present":
            options["ignore_index"] = int(target.flat[0]) if target.size else 0
        target = target.astype(case["index_dtype"])
    else:
        t = rng.uniform(0.0, 1.0, shape) ** 4
        if case["target"] == "onehot":
            hot = rng.integers(0, n_classes, row_shape)
            t = (np.arange(n_classes) == hot[..., None]).astype(float)
            t = np.moveaxis(t, -1, axis)
        elif case["target"] == "prob" and t.size:
            t /= t.sum(axis=axis, keepdims=True)
        else:
            t *= 3.0
        target = t.astype(case["prob_dtype"])
    target = in_layout(target, target.dtype, case["target_layout"], rng)
    if case["weight"] is not None:
        weight = rng.uniform(0.0, 3.0, n_classes)
        if case["weight"] == "with zeros":
            weight[rng.random(n_classes) < 0.3] = 0.0
        options["weight"] = weight
    grad_scale = case["grad_scale"]
    if grad_scale == "per row":
        grad_scale = rng.uniform(-3.0, 3.0, row_shape)
    return logits, target, options, grad_scale

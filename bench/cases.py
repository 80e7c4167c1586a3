"""What the benchmark runs: the cases and their seeded inputs, the rep policies, and the names of
the methods timed on them."""
from dataclasses import dataclass

import numpy as np

from machine import import_optional, usable_cpu_count
from timing import RepPolicy

ml_dtypes = import_optional("ml_dtypes")


def class_weights(rng, n_classes, dtype):
    """seeded uniform(0.5, 2) per class"""
    return rng.uniform(0.5, 2.0, n_classes).astype(dtype)


PLAIN = "plain"
# name -> keyword arguments, the same for softmax_ce_c, the reference and the PyTorch composition;
# a callable value is drawn per case as value(rng, n_classes, dtype)
OPTIONS = {
    PLAIN: {},
    # targets are uniform, so class 0 is the target of ~1/K of the rows: those rows are ignored
    "weight+smoothing+ignore": {"weight": class_weights, "label_smoothing": 0.1, "ignore_index": 0},
    "z_loss+softcap": {"z_loss": 1e-4, "softcap": 30.0},
}


def describe_options(name):
    return ", ".join(
        f"{key}={value.__doc__ if callable(value) else value}" for key, value in OPTIONS[name].items()
    )


@dataclass(frozen=True)
class Case:
    n_rows: int
    n_classes: int
    dtype: str = "float32"  # a NumPy dtype name, or "bfloat16" (ml_dtypes)
    options: str = PLAIN  # a key of OPTIONS

    @property
    def shape(self):
        return (self.n_rows, self.n_classes)

    @property
    def label(self):
        return f"{self.n_rows}x{self.n_classes}"

    @property
    def n_elements(self):
        return self.n_rows * self.n_classes

    @property
    def is_plain_float32(self):
        """The baseline of its shape: "vs plain pass" divides by it; it also times out= and inplace."""
        return self.dtype == "float32" and self.options == PLAIN

    @property
    def name(self):
        return f"{self.label} {self.dtype} {self.options}"


# grouped by shape, so a shape's option and dtype cases follow its plain float32 case
CASES = (
    Case(64, 10),
    Case(65536, 10),
    Case(8192, 1000),
    Case(8192, 1000, options="weight+smoothing+ignore"),
    Case(8192, 1000, options="z_loss+softcap"),
    Case(8192, 1000, "bfloat16"),
    Case(8192, 1000, "float64"),
    Case(1024, 32000),
    Case(256, 128256),
    Case(256, 128256, options="weight+smoothing+ignore"),
    Case(256, 128256, "bfloat16"),
    Case(256, 128256, "float64"),
    Case(32, 262144),
)
# a smoke test of every method and option: the small shapes and the whole 8192x1000 group
QUICK_CASES = tuple(c for c in CASES if c.n_elements <= 8192 * 1000)

FULL_POLICY = RepPolicy(target_s=0.2, min_reps=5, max_reps=200)
QUICK_POLICY = RepPolicy(target_s=0.05, min_reps=5, max_reps=50)
SEED = 0

ALL_CORES = usable_cpu_count()
OURS = f"softmax_ce_c loss+grad, all {ALL_CORES} threads"  # the baseline every ratio divides by
OURS_ONE_THREAD = "softmax_ce_c loss+grad, 1 thread"
OURS_NO_KEPT_MEMORY = "softmax_ce_c loss+grad, no kept memory"
OURS_LOSS_ONLY = "softmax_ce_c loss only"
OURS_OUT = "softmax_ce_c out="
OURS_OUT_ONE_THREAD = "softmax_ce_c out=, 1 thread"
OURS_INPLACE = "softmax_ce_c inplace=True"
REFERENCE = "NumPy reference"
TORCH_ONE_THREAD = "torch fwd+bwd, 1 thread"
TORCH_ALL_CORES = f"torch fwd+bwd, all {ALL_CORES} threads"
JAX = "jax jit fwd+bwd (all cores)"
COPY_FLOOR = "np.copyto (floor)"


def numpy_dtype(name):
    """The case's dtype; bfloat16 is ml_dtypes' (callers check that it is importable)."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def make_inputs(case):
    """(logits, target, options as keyword arguments), from the case's seed. Half precision logits
    are a float32 draw rounded, and a weight is float32 for them."""
    rng = np.random.default_rng(SEED)
    dtype = numpy_dtype(case.dtype)
    draw_dtype = dtype if dtype.itemsize >= 4 else np.float32  # standard_normal's dtypes
    logits = rng.standard_normal(case.shape, dtype=draw_dtype).astype(dtype, copy=False)
    target = rng.integers(0, case.n_classes, size=case.n_rows, dtype=np.int64)
    options = {
        key: value(rng, case.n_classes, draw_dtype) if callable(value) else value
        for key, value in OPTIONS[case.options].items()
    }
    return logits, target, options

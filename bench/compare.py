"""Time softmax_ce_c against its NumPy reference, PyTorch and a memory-copy floor.

    python bench/compare.py [--quick] [--cases SUBSTRING] [--json PATH]

Run from the repo root, this imports the *installed* softmax_ce_c: sys.path[0] is bench/, not
the checkout. Prints markdown tables to stdout and progress to stderr.
"""
import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

import softmax_ce_c
import softmax_ce_c.reference
from machine import describe_machine, usable_cpu_count
from timing import Method, RepPolicy, benchmark, do_nothing


def import_torch():
    """torch, or None when it is not importable (it is an optional peer)."""
    try:
        import torch
    except (ImportError, OSError):  # OSError: an install whose shared libraries fail to load
        return None
    return torch


def import_ml_dtypes():
    """ml_dtypes (NumPy's bfloat16), or None: without it the bfloat16 cases are skipped."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


torch = import_torch()
ml_dtypes = import_ml_dtypes()


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
REFERENCE_MAX_CALL_S = 2.0
SEED = 0

ALL_CORES = usable_cpu_count()
OURS = f"softmax_ce_c loss+grad, all {ALL_CORES} threads"  # the baseline every ratio divides by
OURS_ONE_THREAD = "softmax_ce_c loss+grad, 1 thread"
OURS_LOSS_ONLY = "softmax_ce_c loss only"
OURS_OUT = "softmax_ce_c out="
OURS_INPLACE = "softmax_ce_c inplace=True"
REFERENCE = "NumPy reference"
TORCH_ONE_THREAD = "torch fwd+bwd, 1 thread"
TORCH_ALL_CORES = f"torch fwd+bwd, all {ALL_CORES} threads"
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


def reference_policy(policy):
    """The reference is the slowest per call (float64, many passes): a few reps keep the run short."""
    return replace(policy, min_reps=3, max_reps=max(3, policy.max_reps // 10))


def softmax_ce_c_methods(case, logits, target, options, policy):
    """loss+grad with the case's options; for plain cases loss only; for plain float32 the two
    ways to skip allocating the gradient; and the NumPy reference with the same options."""

    def method(name, function, inputs=logits, prepare=do_nothing, **extra):
        def call():
            return function(inputs, target, **options, **extra)

        return Method(name, call, policy, prepare)

    methods = [method(OURS, softmax_ce_c.softmax_cross_entropy, num_threads=ALL_CORES),
               method(OURS_ONE_THREAD, softmax_ce_c.softmax_cross_entropy, num_threads=1)]
    if case.is_plain_float32:
        methods.append(method(OURS_OUT, softmax_ce_c.softmax_cross_entropy, out=np.empty_like(logits)))
        # the gradient overwrites its input: refill a scratch copy before every call, untimed
        scratch = np.empty_like(logits)
        methods.append(method(OURS_INPLACE, softmax_ce_c.softmax_cross_entropy, inputs=scratch,
                              prepare=lambda: np.copyto(scratch, logits), inplace=True))
    if case.options == PLAIN:
        methods.append(method(OURS_LOSS_ONLY, softmax_ce_c.cross_entropy))
    reference = method(REFERENCE, softmax_ce_c.reference.softmax_cross_entropy)
    methods.append(replace(reference, policy=reference_policy(policy), max_call_s=REFERENCE_MAX_CALL_S))
    return methods


def torch_loss(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
               softcap=None):
    """softmax_ce_c's loss composed from PyTorch ops. The z-loss mean is over all rows, the API's
    over the rows not ignored: the same when no row is ignored, as in the cases with a z-loss."""
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = torch.nn.functional.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    if z_loss:
        loss = loss + z_loss * (torch.logsumexp(logits, dim=1) ** 2).mean()
    return loss


def to_torch(array, dtype):
    """A tensor of the array's values in `dtype`; torch.from_numpy does not know ml_dtypes' bfloat16,
    so half precision goes through float32 (exactly: every half value is a float32)."""
    if array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    return torch.from_numpy(array).to(dtype)


def torch_methods(case, logits, target, options, policy):
    """Forward + backward of torch_loss at 1 thread and at all cores; none without torch."""
    if torch is None:
        return []
    if options.get("z_loss") and np.any(target == options.get("ignore_index", -100)):
        raise ValueError(f"{case.name}: torch_loss's z-loss would count the ignored rows")

    torch_dtype = getattr(torch, case.dtype)
    logits_tensor = to_torch(logits, torch_dtype).requires_grad_()
    target_tensor = torch.from_numpy(target)
    torch_options = {
        key: to_torch(value, torch_dtype) if isinstance(value, np.ndarray) else value
        for key, value in options.items()
    }

    def forward_backward():
        logits_tensor.grad = None
        torch_loss(logits_tensor, target_tensor, **torch_options).backward()

    def at_threads(name, n_threads):
        # each method sets its own count: the other one changes it between calls
        return Method(name, forward_backward, policy, prepare=lambda: torch.set_num_threads(n_threads))

    return [at_threads(TORCH_ONE_THREAD, 1), at_threads(TORCH_ALL_CORES, ALL_CORES)]


def copy_floor_method(logits, policy):
    """A fused pass must at least read the logits and write the gradient: one copy."""
    destination = np.empty_like(logits)
    return Method(COPY_FLOOR, lambda: np.copyto(destination, logits), policy)


def time_case(case, policy):
    logits, target, options = make_inputs(case)
    methods = [
        *softmax_ce_c_methods(case, logits, target, options, policy),
        *torch_methods(case, logits, target, options, policy),
        copy_floor_method(logits, policy),
    ]
    return benchmark(methods)


def result_records(case, timings):
    """One JSON-ready dict per method; ratio = its median / softmax_ce_c loss+grad's (>1: slower)."""
    baseline_s = next(t.median_s for t in timings if t.method == OURS)
    return [
        {
            "case": case.label,
            "dtype": case.dtype,
            "options": case.options,
            "method": t.method,
            "median_s": t.median_s,
            "reps": len(t.samples),
            "ns_per_element": t.median_s / case.n_elements * 1e9 if t.samples else None,
            "ratio": t.median_s / baseline_s if t.samples else None,
            "skipped": t.skipped,
        }
        for t in timings
    ]


def format_seconds(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_optional(value, template):
    return "n/a" if value is None else template.format(value)


def markdown_table(header, rows, align):
    """align: one letter per column, "l" or "r"; cells are padded so the raw text reads too."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        padded = (c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if a == "r" else "-") for w, a in zip(widths, align)) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def results_table(records):
    rows = [
        [
            r["case"],
            r["dtype"],
            r["options"],
            r["method"],
            r["skipped"] or format_seconds(r["median_s"]),
            format_optional(r["ns_per_element"], "{:.2f}"),
            format_optional(r["ratio"], "{:.2f}"),
            str(r["reps"]),
        ]
        for r in records
    ]
    header = ["case", "dtype", "options", "method", "median", "ns/element", "ratio", "reps"]
    return markdown_table(header, rows, "llllrrrr")


def divide(numerator, denominator):
    """None when either method was not measured (no torch, or no plain case in this run)."""
    return None if numerator is None or denominator is None else numerator / denominator


def summary_rows(records):
    """Per case: torch time / ours at the same thread count (speed-up, >1: we are faster), ours /
    copy floor (1 thread and all cores), and ours / ours on the plain float32 case of the same shape
    (what the options or the dtype cost)."""
    median_by_key = {(r["case"], r["dtype"], r["options"], r["method"]): r["median_s"] for r in records}
    case_keys = dict.fromkeys((r["case"], r["dtype"], r["options"]) for r in records)  # ordered, unique
    rows = []
    for case_key in case_keys:
        ours, ours_one, torch_one, torch_all, copy_floor = (
            median_by_key.get((*case_key, method))
            for method in (OURS, OURS_ONE_THREAD, TORCH_ONE_THREAD, TORCH_ALL_CORES, COPY_FLOOR)
        )
        plain = median_by_key.get((case_key[0], "float32", PLAIN, OURS))
        rows.append([
            *case_key,
            format_optional(divide(torch_one, ours_one), "{:.2f}x"),
            format_optional(divide(torch_all, ours), "{:.2f}x"),
            format_optional(divide(ours_one, copy_floor), "{:.2f}"),
            format_optional(divide(ours, copy_floor), "{:.2f}"),
            format_optional(divide(ours_one, ours), "{:.2f}x"),
            format_optional(divide(ours, plain), "{:.2f}"),
        ])
    return rows


def summary_table(records):
    header = [
        "case",
        "dtype",
        "options",
        "vs torch, 1 thread",
        f"vs torch, {ALL_CORES} threads",
        "/ copy, 1 thread",
        f"/ copy, {ALL_CORES} threads",
        f"1 -> {ALL_CORES} threads",
        "vs plain pass",
    ]
    return markdown_table(header, summary_rows(records), "lllrrrrrr")


def header_lines(machine, policy, records):
    option_names = dict.fromkeys(r["options"] for r in records if r["options"] != PLAIN)
    lines = [
        "# softmax_ce_c benchmark",
        "",
        f"- date: {machine['date_utc']}",
        f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}"
        f" ({machine['usable_cpus']} usable), {machine['platform']}",
        f"- load average (1 min) at start: {format_optional(machine['load_average_1min'], '{:.2f}')}",
        f"- Python {machine['python']}, NumPy {machine['numpy']}, torch {machine['torch']}, "
        f"ml_dtypes {machine['ml_dtypes']}, softmax_ce_c {machine['softmax_ce_c']} "
        f"({machine['softmax_ce_c_path']}), kernel instruction set {machine['softmax_ce_c_instruction_set']}",
        f"- timings are medians of interleaved repetitions (round-robin over the methods, "
        f"~{policy.target_s} s per method per case, after a warm-up call)",
        f"- ratio = method time / {OURS} time of the same case (>1: slower than softmax_ce_c); "
        f"ns/element = median / (N*K)",
    ]
    if option_names:
        lines.append("- options: " + "; ".join(f"{name}: {describe_options(name)}" for name in option_names)
                     + ". The targets are uniform: ignore_index=0 ignores ~N/K rows (none when K >> N). PyTorch runs the same "
                     "loss: F.cross_entropy(weight=, ignore_index=, label_smoothing=) on "
                     "softcap * tanh(x / softcap), plus z_loss * mean(logsumexp^2)")
    if any(r["dtype"] == "bfloat16" for r in records):
        lines.append("- bfloat16: float32 logits rounded (ml_dtypes for NumPy, torch.bfloat16 for PyTorch); "
                     "the loss is float32, the gradient bfloat16")
    if any(r["method"] == OURS_INPLACE for r in records):
        lines.append(f"- {OURS_OUT}: into a preallocated gradient; {OURS_INPLACE}: over a scratch copy "
                     f"of the logits, refilled (untimed) before every call")
    return lines


def report(records, machine, policy, notes):
    lines = header_lines(machine, policy, records)
    lines += [f"- {note}" for note in notes]
    if torch is None:
        lines.append("- PyTorch rows skipped: torch is not importable")
    lines += [
        "",
        results_table(records),
        "",
        "## Summary",
        "",
        "vs torch = torch fwd+bwd time / softmax_ce_c loss+grad time at the same thread count (>1: "
        "softmax_ce_c is faster); / copy = softmax_ce_c loss+grad time / np.copyto time (1: as fast as "
        "one plain copy, which is single-threaded); 1 -> N threads = the speed-up from threads; "
        f"vs plain pass = {OURS} time / its time on the plain float32 case of the same shape "
        "(what the options or the dtype cost; n/a when that case was not run).",
        "",
        summary_table(records),
    ]
    return "\n".join(lines)


def selected_cases(quick, substring):
    """(the cases to run, notes on the ones left out)."""
    candidates = QUICK_CASES if quick else CASES
    cases = [c for c in candidates if substring in c.name]
    if not cases:
        known = ", ".join(c.name for c in candidates)
        sys.exit(f"no case matches {substring!r}; cases: {known}")
    notes = []
    if ml_dtypes is None and any(c.dtype == "bfloat16" for c in cases):
        cases = [c for c in cases if c.dtype != "bfloat16"]
        notes.append("bfloat16 cases skipped: ml_dtypes is not importable")
        if not cases:
            sys.exit(notes[0])
    return cases, notes


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write all results and machine info as JSON")
    parser.add_argument("--quick", action="store_true", help="the cases up to 8192x1000, fewer reps: a smoke test")
    parser.add_argument("--cases", metavar="SUBSTRING", default="",
                        help='only cases whose "NxK dtype options" contains this, e.g. 8192x1000 '
                             'or bfloat16 or "float32 plain"')
    return parser.parse_args()


def main():
    args = parse_args()
    policy = QUICK_POLICY if args.quick else FULL_POLICY
    cases, notes = selected_cases(args.quick, args.cases)
    machine = describe_machine(softmax_ce_c, torch, ml_dtypes)
    records = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.name} ...", end=" ", file=sys.stderr, flush=True)
        start = time.perf_counter()
        records += result_records(case, time_case(case, policy))
        print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)
    print(report(records, machine, policy, notes))
    if args.json:
        options = {name: describe_options(name) for name in dict.fromkeys(c.options for c in cases)}
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "policy": asdict(policy), "options": options, "notes": notes,
                       "results": records}, out, indent=2)


if __name__ == "__main__":
    main()

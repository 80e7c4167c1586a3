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
from timing import Method, RepPolicy, benchmark


def import_torch():
    """torch, or None when it is not importable (it is an optional peer)."""
    try:
        import torch
    except (ImportError, OSError):  # OSError: an install whose shared libraries fail to load
        return None
    return torch


torch = import_torch()


@dataclass(frozen=True)
class Case:
    n_rows: int
    n_classes: int
    dtype: str = "float32"

    @property
    def shape(self):
        return (self.n_rows, self.n_classes)

    @property
    def label(self):
        return f"{self.n_rows}x{self.n_classes}"

    @property
    def n_elements(self):
        return self.n_rows * self.n_classes


CASES = (
    Case(64, 10),
    Case(65536, 10),
    Case(8192, 1000),
    Case(1024, 32000),
    Case(256, 128256),
    Case(32, 262144),
    Case(8192, 1000, "float64"),
)
QUICK_CASES = CASES[:3]  # the two smallest and 8192x1000 float32

FULL_POLICY = RepPolicy(target_s=0.2, min_reps=5, max_reps=200)
QUICK_POLICY = RepPolicy(target_s=0.05, min_reps=5, max_reps=50)
REFERENCE_MAX_CALL_S = 2.0
SEED = 0

ALL_CORES = usable_cpu_count()
OURS = "softmax_ce_c loss+grad"  # the baseline every ratio divides by
OURS_LOSS_ONLY = "softmax_ce_c loss only"
REFERENCE = "NumPy reference"
TORCH_ONE_THREAD = "torch fwd+bwd, 1 thread"
TORCH_ALL_CORES = f"torch fwd+bwd, all {ALL_CORES} threads"
COPY_FLOOR = "np.copyto (floor)"


def make_inputs(case):
    rng = np.random.default_rng(SEED)
    logits = rng.standard_normal(case.shape, dtype=case.dtype)
    target = rng.integers(0, case.n_classes, size=case.n_rows, dtype=np.int64)
    return logits, target


def reference_policy(policy):
    """The reference is the slowest per call (float64, many passes): a few reps keep the run short."""
    return replace(policy, min_reps=3, max_reps=max(3, policy.max_reps // 10))


def softmax_ce_c_methods(logits, target, policy):
    return [
        Method(OURS, lambda: softmax_ce_c.softmax_cross_entropy(logits, target), policy),
        Method(OURS_LOSS_ONLY, lambda: softmax_ce_c.cross_entropy(logits, target), policy),
        Method(
            REFERENCE,
            lambda: softmax_ce_c.reference.softmax_cross_entropy(logits, target),
            reference_policy(policy),
            max_call_s=REFERENCE_MAX_CALL_S,
        ),
    ]


def torch_methods(logits, target, policy):
    """F.cross_entropy forward + backward at 1 thread and at all cores; none without torch."""
    if torch is None:
        return []

    logits_tensor = torch.from_numpy(logits).requires_grad_()
    target_tensor = torch.from_numpy(target)

    def forward_backward():
        logits_tensor.grad = None
        torch.nn.functional.cross_entropy(logits_tensor, target_tensor).backward()

    def at_threads(name, n_threads):
        # each method sets its own count: the other one changes it between calls
        return Method(name, forward_backward, policy, prepare=lambda: torch.set_num_threads(n_threads))

    return [at_threads(TORCH_ONE_THREAD, 1), at_threads(TORCH_ALL_CORES, ALL_CORES)]


def copy_floor_method(logits, policy):
    """A fused pass must at least read the logits and write the gradient: one copy."""
    destination = np.empty_like(logits)
    return Method(COPY_FLOOR, lambda: np.copyto(destination, logits), policy)


def time_case(case, policy):
    logits, target = make_inputs(case)
    methods = [
        *softmax_ce_c_methods(logits, target, policy),
        *torch_methods(logits, target, policy),
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
            r["method"],
            r["skipped"] or format_seconds(r["median_s"]),
            format_optional(r["ns_per_element"], "{:.2f}"),
            format_optional(r["ratio"], "{:.2f}"),
            str(r["reps"]),
        ]
        for r in records
    ]
    header = ["case", "dtype", "method", "median", "ns/element", "ratio", "reps"]
    return markdown_table(header, rows, "lllrrrr")


def divide(numerator, denominator):
    """None when the numerator's method was not measured (no torch)."""
    return None if numerator is None else numerator / denominator


def summary_rows(records):
    """Per case: torch time / ours (speed-up, >1: we are faster) and ours / copy floor."""
    median_by_key = {(r["case"], r["dtype"], r["method"]): r["median_s"] for r in records}
    case_keys = dict.fromkeys((r["case"], r["dtype"]) for r in records)  # ordered, unique
    rows = []
    for case_key in case_keys:
        ours, torch_one, torch_all, copy_floor = (
            median_by_key.get((*case_key, method))
            for method in (OURS, TORCH_ONE_THREAD, TORCH_ALL_CORES, COPY_FLOOR)
        )
        rows.append([
            *case_key,
            format_optional(divide(torch_one, ours), "{:.2f}x"),
            format_optional(divide(torch_all, ours), "{:.2f}x"),
            format_optional(divide(ours, copy_floor), "{:.2f}"),
        ])
    return rows


def summary_table(records):
    header = [
        "case",
        "dtype",
        "softmax_ce_c vs torch (1 thread)",
        f"vs torch (all cores, {ALL_CORES})",
        "softmax_ce_c / copy floor",
    ]
    return markdown_table(header, summary_rows(records), "llrrr")


def header_lines(machine, policy):
    return [
        "# softmax_ce_c benchmark",
        "",
        f"- date: {machine['date_utc']}",
        f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}"
        f" ({machine['usable_cpus']} usable), {machine['platform']}",
        f"- load average (1 min) at start: {format_optional(machine['load_average_1min'], '{:.2f}')}",
        f"- Python {machine['python']}, NumPy {machine['numpy']}, torch {machine['torch']}, "
        f"softmax_ce_c {machine['softmax_ce_c']} ({machine['softmax_ce_c_path']})",
        f"- timings are medians of interleaved repetitions (round-robin over the methods, "
        f"~{policy.target_s} s per method per case, after a warm-up call)",
        f"- ratio = method time / {OURS} time (>1: slower than softmax_ce_c); "
        f"ns/element = median / (N*K)",
    ]


def report(records, machine, policy):
    lines = header_lines(machine, policy)
    if torch is None:
        lines.append("- PyTorch rows skipped: torch is not importable")
    lines += [
        "",
        results_table(records),
        "",
        "## Summary",
        "",
        f"Speed-up = torch time / {OURS} time (>1: softmax_ce_c is faster); "
        f"copy floor = {OURS} time / {COPY_FLOOR} time (1: as fast as a plain copy).",
        "",
        summary_table(records),
    ]
    return "\n".join(lines)


def selected_cases(quick, substring):
    candidates = QUICK_CASES if quick else CASES
    cases = [c for c in candidates if substring in f"{c.label} {c.dtype}"]
    if not cases:
        known = ", ".join(f"{c.label} {c.dtype}" for c in candidates)
        sys.exit(f"no case matches {substring!r}; cases: {known}")
    return cases


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write all results and machine info as JSON")
    parser.add_argument("--quick", action="store_true", help="three small cases, fewer reps: a smoke test")
    parser.add_argument("--cases", metavar="SUBSTRING", default="",
                        help='only cases whose "NxK dtype" contains this, e.g. 8192x1000')
    return parser.parse_args()


def main():
    args = parse_args()
    policy = QUICK_POLICY if args.quick else FULL_POLICY
    cases = selected_cases(args.quick, args.cases)
    machine = describe_machine(softmax_ce_c, torch)
    records = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.label} {case.dtype} ...", end=" ", file=sys.stderr, flush=True)
        start = time.perf_counter()
        records += result_records(case, time_case(case, policy))
        print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(report(records, machine, policy))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "policy": asdict(policy), "results": records}, out, indent=2)


if __name__ == "__main__":
    main()

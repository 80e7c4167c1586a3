"""Time softmax_ce_c against its NumPy reference, PyTorch, JAX and a memory-copy floor, and measure
the peak memory one call adds.

    python bench/compare.py [--quick] [--cases SUBSTRING] [--json PATH] [--plot PATH] [--no-memory]

Run from the repo root, this imports the *installed* softmax_ce_c: sys.path[0] is bench/, not
the checkout. Prints markdown tables to stdout and progress to stderr.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace

import numpy as np

import softmax_ce_c
import softmax_ce_c.reference
from cases import (ALL_CORES, CASES, COPY_FLOOR, FULL_POLICY, JAX, OURS, OURS_INPLACE, OURS_LOSS_ONLY,
                   OURS_NO_KEPT_MEMORY, OURS_ONE_THREAD, OURS_OUT, OURS_OUT_ONE_THREAD, PLAIN, QUICK_CASES,
                   QUICK_POLICY, REFERENCE, TORCH_ALL_CORES, TORCH_ONE_THREAD, describe_options, make_inputs,
                   ml_dtypes)
from machine import describe_machine
from peak_memory import measure_memory
from peers import jax, jax_methods, torch, torch_methods
from report import report, result_records
from timing import Method, benchmark, do_nothing

REFERENCE_MAX_CALL_S = 2.0


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
        # the calls above get the memory of the gradient the previous call dropped (README: reused
        # memory), as in a training loop; a caller who keeps every gradient gets the allocator's
        methods.append(method(OURS_NO_KEPT_MEMORY, softmax_ce_c.softmax_cross_entropy,
                              prepare=softmax_ce_c.release_cached_memory, num_threads=ALL_CORES))
        methods.append(method(OURS_OUT, softmax_ce_c.softmax_cross_entropy, out=np.empty_like(logits),
                              num_threads=ALL_CORES))
        methods.append(method(OURS_OUT_ONE_THREAD, softmax_ce_c.softmax_cross_entropy, out=np.empty_like(logits),
                              num_threads=1))
        # the gradient overwrites its input: refill a scratch copy before every call, untimed
        scratch = np.empty_like(logits)
        methods.append(method(OURS_INPLACE, softmax_ce_c.softmax_cross_entropy, inputs=scratch,
                              prepare=lambda: np.copyto(scratch, logits), inplace=True, num_threads=ALL_CORES))
    if case.options == PLAIN:
        methods.append(method(OURS_LOSS_ONLY, softmax_ce_c.cross_entropy, num_threads=ALL_CORES))
    reference = method(REFERENCE, softmax_ce_c.reference.softmax_cross_entropy)
    methods.append(replace(reference, policy=reference_policy(policy), max_call_s=REFERENCE_MAX_CALL_S))
    return methods


def copy_floor_method(logits, policy):
    """A fused pass must at least read the logits and write the gradient: one copy."""
    destination = np.empty_like(logits)
    return Method(COPY_FLOOR, lambda: np.copyto(destination, logits), policy)


def case_methods(case, policy):
    logits, target, options = make_inputs(case)
    return [
        *softmax_ce_c_methods(case, logits, target, options, policy),
        *torch_methods(case, logits, target, options, policy),
        *jax_methods(case, logits, target, options, policy),
        copy_floor_method(logits, policy),
    ]


def time_case(case, policy):
    return benchmark(case_methods(case, policy))


def selected_cases(quick, substring):
    """(the cases to run, notes on the ones left out)."""
    candidates = QUICK_CASES if quick else CASES
    cases = [c for c in candidates if substring in c.name]
    if not cases:
        known = ", ".join(c.name for c in candidates)
        sys.exit(f"no case matches {substring!r}; cases: {known}")
    notes = []
    if not os.path.exists("/proc/self/clear_refs"):
        notes.append("peak memory not measured: it needs Linux's /proc/self/clear_refs")
    if ml_dtypes is None and any(c.dtype == "bfloat16" for c in cases):
        cases = [c for c in cases if c.dtype != "bfloat16"]
        notes.append("bfloat16 cases skipped: ml_dtypes is not importable")
        if not cases:
            sys.exit(notes[0])
    return cases, notes


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write all results and machine info as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="also draw the plain float32 timings as a PNG (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="the cases up to 8192x1000, fewer reps: a smoke test")
    parser.add_argument("--cases", metavar="SUBSTRING", default="",
                        help='only cases whose "NxK dtype options" contains this, e.g. 8192x1000 '
                             'or bfloat16 or "float32 plain"')
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak memory table (a child process per plain float32 case and method)")
    return parser.parse_args()


def load_plotter():
    """bench/plot.py's plot_timings, or None, said on stderr, when matplotlib is not importable."""
    try:
        from plot import plot_timings
    except ImportError as error:
        print(f"--plot skipped: matplotlib is not importable ({error})", file=sys.stderr)
        return None
    return plot_timings


def main():
    args = parse_args()
    plot_timings = load_plotter() if args.plot else None  # before the run: say it now, not after
    policy = QUICK_POLICY if args.quick else FULL_POLICY
    cases, notes = selected_cases(args.quick, args.cases)
    machine = describe_machine(softmax_ce_c, torch=torch, jax=jax, ml_dtypes=ml_dtypes)
    records = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.name} ...", end=" ", file=sys.stderr, flush=True)
        start = time.perf_counter()
        records += result_records(case, time_case(case, policy))
        print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    memory = []
    if args.memory and os.path.exists("/proc/self/clear_refs"):
        print("peak memory ...", end=" ", file=sys.stderr, flush=True)
        start = time.perf_counter()
        memory = measure_memory(cases)
        print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)
    print(report(records, machine, policy, notes, memory))
    if args.json:
        options = {name: describe_options(name) for name in dict.fromkeys(c.options for c in cases)}
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "policy": asdict(policy), "options": options, "notes": notes,
                       "results": records, "memory": memory}, out, indent=2)
    if plot_timings:
        methods = (OURS, OURS_ONE_THREAD, TORCH_ALL_CORES, TORCH_ONE_THREAD, JAX, COPY_FLOOR, REFERENCE)
        plot_timings(records, machine, args.plot, methods, faint=(REFERENCE,))
        print(f"plot written to {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()

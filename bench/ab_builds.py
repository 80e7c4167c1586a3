"""Two (or more) builds of softmax_ce_c side by side in one process: the A/B behind the kernel's
measured changes.

    python bench/ab_builds.py TREE_A TREE_B [--shape 65536x10 ...] [--kind "-1e4 masks"] [--rounds 120]

A TREE is a source tree with its kernel built in place (`python softmax_ce_c/_build.py` run in it).
Each is imported under a name of its own, and the builds' calls are interleaved as compare.py's
methods are (timing.py: rounds over the builds in a new random order, after a warm-up call), so
that the drift of a shared, noisy machine (frequency, neighbours) hits them alike: A/Bs in
separate processes moved 20-40% here, more than most changes they were to measure. Float32, class
indices; per shape the cases are the gradient into out= on one and on two threads, the loss alone
and softmax, each printed as the medians (and minima) of every build and the ratio of the last
build's median to the first's. --kind takes the logits of one of logit_kinds.py's kinds (masked
classes, logits spread wide) instead of normal ones.
"""
import argparse
import importlib.util
import pathlib
import sys

import numpy as np

from logit_kinds import KINDS, logits_of_kind
from machine import describe_machine
from timing import Method, RepPolicy, benchmark


def load_build(tree, alias):
    """The package of tree, imported as alias."""
    package = pathlib.Path(tree).resolve() / "softmax_ce_c"
    spec = importlib.util.spec_from_file_location(alias, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def cases(shape, kind, rng):
    """(name, call of a build) for each case of an N x K shape of logits of a kind."""
    n_rows, n_classes = shape
    y = rng.integers(0, n_classes, n_rows)
    x = logits_of_kind(kind, n_rows, n_classes, y, rng)
    out = np.empty_like(x)
    name = f"{n_rows}x{n_classes}" + ("" if kind == "normal" else f" {kind}")
    return [
        (f"{name} out=, 1 thread", lambda m: m.softmax_cross_entropy(x, y, out=out, num_threads=1)),
        (f"{name} out=, 2 threads", lambda m: m.softmax_cross_entropy(x, y, out=out, num_threads=2)),
        (f"{name} loss only, 1 thread", lambda m: m.cross_entropy(x, y, num_threads=1)),
        (f"{name} softmax, 1 thread", lambda m: m.softmax(x, num_threads=1)),
    ]


def build_timings(builds, call, rounds):
    """Each build's Timing of call, interleaved over rounds."""
    every_round = RepPolicy(target_s=0.0, min_reps=rounds, max_reps=rounds)
    return benchmark([Method(f"build {i}", lambda build=build: call(build), every_round)
                      for i, build in enumerate(builds)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="source trees with their kernels built in place")
    parser.add_argument("--shape", action="append", help="N x K, e.g. 65536x10 (repeatable; default 65536x10)")
    parser.add_argument("--kind", choices=KINDS, default="normal", help="the logits (logit_kinds.py)")
    parser.add_argument("--rounds", type=int, default=120)
    args = parser.parse_args()
    if len(args.trees) < 2:
        parser.error("give two trees or more")
    shapes = [tuple(int(n) for n in s.lower().split("x")) for s in args.shape or ["65536x10"]]
    builds = [load_build(tree, f"softmax_ce_c_build_{i}") for i, tree in enumerate(args.trees)]
    machine = describe_machine(builds[0])
    print(f"# {machine['date_utc']}, {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, load average "
          f"{machine['load_average_1min'] or 0:.2f}, NumPy {machine['numpy']}, instruction set "
          f"{machine['softmax_ce_c_instruction_set']}; {args.rounds} calls per build")
    print("builds: " + ", ".join(f"{i} = {tree}" for i, tree in enumerate(args.trees)))
    rng = np.random.default_rng(0)
    for shape in shapes:
        for name, call in cases(shape, args.kind, rng):
            timings = build_timings(builds, call, args.rounds)
            medians = [timing.median_s for timing in timings]
            columns = "  ".join(f"{i}: {timing.median_s * 1e6:9.1f} ({min(timing.samples) * 1e6:9.1f}) us"
                                for i, timing in enumerate(timings))
            print(f"{name:44s} {columns}  last/first {medians[-1] / medians[0]:.3f}")


if __name__ == "__main__":
    main()

"""Interleaved timing: all methods of a case are measured in the same rounds, so drift on a
shared, noisy machine (frequency, neighbours, cache state) hits every method alike."""
import gc
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RepPolicy:
    """How many timed calls a method gets: about target_s of measured time, within the bounds."""

    target_s: float
    min_reps: int
    max_reps: int

    def reps_for(self, seconds_per_call):
        wanted = self.target_s / seconds_per_call if seconds_per_call > 0 else math.inf
        return int(max(self.min_reps, min(self.max_reps, wanted)))


def do_nothing():
    pass


@dataclass(frozen=True)
class Method:
    name: str
    call: Callable[[], object]
    policy: RepPolicy
    # runs untimed before every call, e.g. to set a thread count other methods changed
    prepare: Callable[[], None] = do_nothing
    # a method whose calls take longer than this is skipped rather than measured
    max_call_s: float = math.inf


@dataclass(frozen=True)
class Timing:
    method: str
    samples: tuple = ()  # seconds per call; empty when skipped
    skipped: str = ""  # why there are no samples

    @property
    def median_s(self):
        return statistics.median(self.samples) if self.samples else None


def time_one_call(method):
    method.prepare()
    start = time.perf_counter()
    method.call()
    return time.perf_counter() - start


def spread_rounds(reps, n_rounds):
    """reps round indices spaced evenly over n_rounds, so a method with fewer reps still
    samples the whole measuring period instead of only its start."""
    return {i * n_rounds // reps for i in range(reps)}


def measure_interleaved(methods, reps_by_name):
    """Seconds per call for each method. Every round runs its methods in a new (seeded) random
    order: a call right after a heavy one (PyTorch's or XLA's threads still spinning, caches and TLB
    cold) runs several times slower here, and a fixed order would charge that to one method."""
    n_rounds = max(reps_by_name.values())
    schedule = {m.name: spread_rounds(reps_by_name[m.name], n_rounds) for m in methods}
    samples = {m.name: [] for m in methods}
    order = random.Random(0)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection would be charged to whichever call happened to trigger it
    try:
        for round_index in range(n_rounds):
            for method in order.sample(methods, len(methods)):
                if round_index in schedule[method.name]:
                    samples[method.name].append(time_one_call(method))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def benchmark(methods):
    """A Timing per method, in the given order: warm up, size the reps from one timed call,
    skip the methods too slow for their max_call_s, then measure the rest interleaved."""
    reps_by_name = {}
    skipped = {}
    for method in methods:
        time_one_call(method)  # warm-up: first-touch page faults, lazy initialisation, caches
        seconds = time_one_call(method)
        if seconds > method.max_call_s:
            skipped[method.name] = "skipped (too slow)"
        else:
            reps_by_name[method.name] = method.policy.reps_for(seconds)
    measured = [m for m in methods if m.name in reps_by_name]
    samples = measure_interleaved(measured, reps_by_name) if measured else {}
    return [
        Timing(m.name, tuple(samples.get(m.name, ())), skipped.get(m.name, ""))
        for m in methods
    ]

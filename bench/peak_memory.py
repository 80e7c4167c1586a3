"""The peak memory one call adds, each call measured in a fresh child process."""
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import softmax_ce_c
from cases import (ALL_CORES, CASES, COPY_FLOOR, OURS, OURS_INPLACE, OURS_LOSS_ONLY, QUICK_POLICY,
                   TORCH_ALL_CORES, numpy_dtype)

# the methods whose peak memory is measured, on the plain float32 cases
MEMORY_METHODS = (OURS, OURS_INPLACE, OURS_LOSS_ONLY, TORCH_ALL_CORES, COPY_FLOOR)


def rss_kib(field):
    """VmRSS (now) or VmHWM (the peak) of this process, from Linux's /proc."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def memory_child(case_methods, case_name, method_name):
    """Run in a fresh process by measure_memory: build the case's inputs and methods with
    case_methods (compare's, as for timing), reset the peak RSS to the current RSS, make one call
    and print, as JSON, the KiB by which it raised the peak (null when the method does not exist
    here) and which softmax_ce_c it imported. The peak is
    VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (exec keeps the max).
    The child runs without jax (see measure_memory)."""
    case = next(c for c in CASES if c.name == case_name)
    method = next((m for m in case_methods(case, QUICK_POLICY) if m.name == method_name), None)
    added_kib = None
    if method is not None:
        method.prepare()
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := VmRSS
        before_kib = rss_kib("VmHWM")
        result = method.call()  # kept alive until the peak is read
        added_kib = rss_kib("VmHWM") - before_kib
        del result
    print(json.dumps({"added_kib": added_kib, "softmax_ce_c": os.path.dirname(softmax_ce_c.__file__)}))


def measure_memory(cases):
    """One record per plain float32 case and MEMORY_METHODS method, each measured by memory_child in
    its own `python -c`, with the parent's softmax_ce_c and bench/ on its path and a cwd without a
    softmax_ce_c folder. The children run ALL_CORES at a time: each one measures only its own RSS.
    They do not import jax: it is not measured, and its CPU backend, started by the device_put of
    the JAX method, allocates in background threads (tens of MiB that would land in the peaks)."""
    package_dir = os.path.dirname(softmax_ce_c.__file__)
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    path = [os.path.dirname(package_dir), bench_dir, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    code = ("import sys; sys.modules['jax'] = None; import compare, peak_memory; "
            "peak_memory.memory_child(compare.case_methods, *sys.argv[1:])")
    jobs = [(case, method) for case in cases if case.is_plain_float32 for method in MEMORY_METHODS]

    def measure(job):
        case, method = job
        child = subprocess.run([sys.executable, "-c", code, case.name, method], check=False, cwd=cwd,
                               env=env, capture_output=True, text=True)
        if child.returncode:
            print(f"peak memory of {method} on {case.name} failed:\n{child.stderr}", file=sys.stderr)
            added_kib = None
        else:
            reply = json.loads(child.stdout.splitlines()[-1])
            if reply["softmax_ce_c"] != package_dir:
                raise RuntimeError(f"the memory child imported {reply['softmax_ce_c']}, not {package_dir}")
            added_kib = reply["added_kib"]
        return {
            "case": case.label,
            "method": method,
            "array_mib": case.n_elements * numpy_dtype(case.dtype).itemsize / 2**20,
            "added_mib": None if added_kib is None else added_kib / 1024,
        }

    with tempfile.TemporaryDirectory() as cwd, ThreadPoolExecutor(ALL_CORES) as pool:
        return list(pool.map(measure, jobs))

"""Time softmax_ce_c against its NumPy reference, PyTorch, JAX and a memory-copy floor, and measure
the peak memory one call adds.

    python bench/compare.py [--quick] [--cases SUBSTRING] [--json PATH] [--plot PATH] [--no-memory]

Run from the repo root, this imports the *installed* softmax_ce_c: sys.path[0] is bench/, not
the checkout. Prints markdown tables to stdout and progress to stderr.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

import softmax_ce_c
import softmax_ce_c.reference
from machine import describe_machine, import_optional, usable_cpu_count
from timing import Method, RepPolicy, benchmark, do_nothing


torch = import_optional("torch")
ml_dtypes = import_optional("ml_dtypes")
jax = import_optional("jax")
if jax is not None:
    jax.config.update("jax_enable_x64", True)  # for the float64 cases; float32 inputs stay float32


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
# the methods whose peak memory is measured, on the plain float32 cases
MEMORY_METHODS = (OURS, OURS_INPLACE, OURS_LOSS_ONLY, TORCH_ALL_CORES, COPY_FLOOR)


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


def check_peer_options(case_name, target, options):
    """The peers' z-loss means are over all rows (torch_loss, jax_loss)."""
    if options.get("z_loss") and np.any(target == options.get("ignore_index", -100)):
        raise ValueError(f"{case_name}: the peers' z-loss would count the ignored rows")


def torch_forward_backward(logits, target, options, dtype_name):
    """A call of torch_loss forward and backward in torch's dtype_name, on tensors made once: it
    returns the loss; the logits tensor (returned too) holds the gradient after it."""
    torch_dtype = getattr(torch, dtype_name)
    logits_tensor = to_torch(logits, torch_dtype).requires_grad_()
    target_tensor = torch.from_numpy(target)
    torch_options = {
        key: to_torch(value, torch_dtype) if isinstance(value, np.ndarray) else value
        for key, value in options.items()
    }

    def forward_backward():
        logits_tensor.grad = None
        loss = torch_loss(logits_tensor, target_tensor, **torch_options)
        loss.backward()
        return loss

    return forward_backward, logits_tensor


def torch_methods(case, logits, target, options, policy):
    """Forward + backward of torch_loss at 1 thread and at all cores; none without torch."""
    if torch is None:
        return []
    check_peer_options(case.name, target, options)
    forward_backward, _ = torch_forward_backward(logits, target, options, case.dtype)

    def at_threads(name, n_threads):
        # each method sets its own count: the other one changes it between calls
        return Method(name, forward_backward, policy, prepare=lambda: torch.set_num_threads(n_threads))

    return [at_threads(TORCH_ONE_THREAD, 1), at_threads(TORCH_ALL_CORES, ALL_CORES)]


def jax_loss(logits, target, weight=None, ignore_index=None, label_smoothing=0.0, z_loss=0.0, softcap=None):
    """torch_loss in jax.numpy: F.cross_entropy's mean over the rows not ignored, weighted by their
    targets' weights, with label smoothing's eps / K weighted per class. Without a weight, an
    ignore_index or smoothing (the plain cases) the plain mean of -log_softmax at the targets."""
    jnp = jax.numpy
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    log_probabilities = jax.nn.log_softmax(logits)
    if weight is None and ignore_index is None and not label_smoothing:
        loss = -jnp.mean(jnp.take_along_axis(log_probabilities, target[:, None], axis=1))
    else:
        weight = jnp.ones(logits.shape[1], logits.dtype) if weight is None else weight
        counted = target != ignore_index
        counted_target = jnp.where(counted, target, 0)
        target_weight = jnp.where(counted, weight[counted_target], 0)
        nll = -jnp.take_along_axis(log_probabilities, counted_target[:, None], axis=1)[:, 0]
        smoothing = -jnp.where(counted, (log_probabilities * weight).sum(axis=1), 0)
        total = ((1 - label_smoothing) * (target_weight * nll).sum()
                 + label_smoothing / logits.shape[1] * smoothing.sum())
        loss = total / target_weight.sum()
    if z_loss:
        loss = loss + z_loss * jnp.mean(jax.nn.logsumexp(logits, axis=1) ** 2)
    return loss


def jax_call(logits, target, options):
    """A call of jit(value_and_grad(jax_loss)) with the options, on arrays put on the device once:
    it returns the loss and the gradient, finished. Its first call compiles."""
    jax_options = {key: jax.numpy.asarray(value) if isinstance(value, np.ndarray) else value
                   for key, value in options.items()}
    loss_and_grad = jax.jit(jax.value_and_grad(lambda x, y: jax_loss(x, y, **jax_options)))
    # device_put copies asynchronously: wait, or the copy would overlap the other methods' calls
    logits_array, target_array = jax.block_until_ready(jax.device_put((logits, target)))
    return lambda: jax.block_until_ready(loss_and_grad(logits_array, target_array))


def jax_methods(case, logits, target, options, policy):
    """jax_call at JAX's default threading (all cores); none without jax. benchmark()'s warm-up call
    compiles it."""
    if jax is None:
        return []
    check_peer_options(case.name, target, options)
    return [Method(JAX, jax_call(logits, target, options), policy)]


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


def rss_kib(field):
    """VmRSS (now) or VmHWM (the peak) of this process, from Linux's /proc."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def memory_child(case_name, method_name):
    """Run in a fresh process by measure_memory: build the case's inputs and methods, reset the peak
    RSS to the current RSS, make one call and print, as JSON, the KiB by which it raised the peak
    (null when the method does not exist here) and which softmax_ce_c it imported. The peak is
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
    code = "import sys; sys.modules['jax'] = None; import compare; compare.memory_child(*sys.argv[1:])"
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
            "samples_s": list(t.samples),  # every timed call, in the order taken: the spread behind the median
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
        ours, ours_one, out_all, out_one, torch_one, torch_all, jax_all, copy_floor = (
            median_by_key.get((*case_key, method))
            for method in (OURS, OURS_ONE_THREAD, OURS_OUT, OURS_OUT_ONE_THREAD, TORCH_ONE_THREAD, TORCH_ALL_CORES,
                           JAX, COPY_FLOOR)
        )
        plain = median_by_key.get((case_key[0], "float32", PLAIN, OURS))
        rows.append([
            *case_key,
            format_optional(divide(torch_one, ours_one), "{:.2f}x"),
            format_optional(divide(torch_all, ours), "{:.2f}x"),
            format_optional(divide(jax_all, ours), "{:.2f}x"),
            format_optional(divide(ours_one, copy_floor), "{:.2f}"),
            format_optional(divide(ours, copy_floor), "{:.2f}"),
            format_optional(divide(out_one, copy_floor), "{:.2f}"),
            format_optional(divide(out_all, copy_floor), "{:.2f}"),
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
        "vs jax",
        "/ copy, 1 thread",
        f"/ copy, {ALL_CORES} threads",
        "out= / copy, 1 thread",
        f"out= / copy, {ALL_CORES} threads",
        f"1 -> {ALL_CORES} threads",
        "vs plain pass",
    ]
    return markdown_table(header, summary_rows(records), "lllrrrrrrrrr")


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
        f"jax {machine['jax']}, ml_dtypes {machine['ml_dtypes']}, softmax_ce_c {machine['softmax_ce_c']} "
        f"({machine['softmax_ce_c_path']}), kernel instruction set {machine['softmax_ce_c_instruction_set']}",
        f"- timings are medians of interleaved repetitions (rounds over all the methods, each round in a "
        f"new seeded random order, ~{policy.target_s} s per method per case, after a warm-up call)",
        f"- ratio = method time / {OURS} time of the same case (>1: slower than softmax_ce_c); "
        f"ns/element = median / (N*K)",
    ]
    if option_names:
        lines.append("- options: " + "; ".join(f"{name}: {describe_options(name)}" for name in option_names)
                     + ". The targets are uniform: ignore_index=0 ignores ~N/K rows (none when K >> N). PyTorch runs the same "
                     "loss: F.cross_entropy(weight=, ignore_index=, label_smoothing=) on "
                     "softcap * tanh(x / softcap), plus z_loss * mean(logsumexp^2); JAX the same in jax.numpy "
                     "(tests/test_bench_peers.py checks both against this package)")
    if any(r["dtype"] == "bfloat16" for r in records):
        lines.append("- bfloat16: float32 logits rounded (ml_dtypes for NumPy, torch.bfloat16 for PyTorch); "
                     "this package's loss is float32 (PyTorch's and JAX's bfloat16), the gradient bfloat16")
    if any(r["method"] == OURS_INPLACE for r in records):
        lines.append(f"- {OURS} and {OURS_ONE_THREAD}: a gradient of 4 MiB or more is allocated on the memory of "
                     f"the one the previous call dropped (the package keeps it, as in a training loop); "
                     f"{OURS_NO_KEPT_MEMORY}: as for a caller who keeps every gradient (the kept memory "
                     f"released, untimed, before every call): on what NumPy and the C library give, new pages "
                     f"for arrays above glibc's mmap threshold (which rises to 32 MiB as large blocks are "
                     f"freed), often recycled ones below it; {OURS_OUT} and {OURS_OUT_ONE_THREAD}: into "
                     f"a preallocated gradient; {OURS_INPLACE}: over a scratch copy of the logits, refilled "
                     f"(untimed) before every call; all without a thread count use all {ALL_CORES} cores")
    if any(r["method"] == JAX for r in records):
        lines.append(f"- {JAX}: jax.jit(jax.value_and_grad(loss)), loss(x, y) = "
                     "-mean(take_along_axis(log_softmax(x), y[:, None], axis=1)) on the plain cases, and "
                     "PyTorch's loss with the options written in jax.numpy on the others; in the case's dtype "
                     "(its loss bfloat16 for bfloat16; jax_enable_x64 on, for float64); one call = the jitted "
                     "call + block_until_ready on the loss and the gradient; the warm-up call compiles")
    for peer, module_name, module in (("PyTorch", "torch", torch), ("JAX", "jax", jax)):
        if module is None:
            lines.append(f"- {peer} rows skipped: {module_name} is not importable")
    return lines


def memory_table(memory):
    """A row per case: the size of its N x K logits, then the MiB each method's call added."""
    added_mib = {(m["case"], m["method"]): m["added_mib"] for m in memory}
    array_mib = {m["case"]: m["array_mib"] for m in memory}  # ordered by case
    rows = [
        [case, f"{size:.2f}", *(format_optional(added_mib[case, m], "{:.2f}") for m in MEMORY_METHODS)]
        for case, size in array_mib.items()
    ]
    header = ["case (float32, plain)", "N x K array", *MEMORY_METHODS]
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def memory_section(memory):
    if not memory:
        return []
    return [
        "",
        "## Peak memory added by one call (MiB)",
        "",
        ("Each cell is its own fresh process (`python -c`): it builds the inputs and the method (the "
         "inplace scratch copy filled), resets the peak RSS to the current RSS (Linux: "
         "/proc/self/clear_refs, VmHWM), makes one call (the first in the process, so any lazy "
         "initialisation counts) and reports the peak minus the RSS before. The output np.copyto writes "
         "was allocated untouched beforehand, so it shows one N x K array being written. n/a: not "
         "measured (torch not importable, or the child failed). MiB = 2^20 bytes."),
        "",
        memory_table(memory),
    ]


def report(records, machine, policy, notes, memory):
    lines = header_lines(machine, policy, records)
    lines += [f"- {note}" for note in notes]
    lines += [
        "",
        results_table(records),
        "",
        "## Summary",
        "",
        "vs torch = torch fwd+bwd time / softmax_ce_c loss+grad time at the same thread count (>1: "
        f"softmax_ce_c is faster); vs jax = {JAX} time / {OURS} time (n/a: not run); "
        "/ copy = softmax_ce_c loss+grad time / np.copyto time (1: as fast as "
        "one plain copy, which is single-threaded); out= / copy = the same for softmax_ce_c out= (the "
        "plain float32 cases); 1 -> N threads = the speed-up from threads; "
        f"vs plain pass = {OURS} time / its time on the plain float32 case of the same shape "
        "(what the options or the dtype cost; n/a when that case was not run).",
        "",
        summary_table(records),
        *memory_section(memory),
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

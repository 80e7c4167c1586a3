"""The results as JSON-ready records, and the markdown report of them: header, tables, summary."""
from cases import (ALL_CORES, COPY_FLOOR, JAX, OURS, OURS_INPLACE, OURS_NO_KEPT_MEMORY, OURS_ONE_THREAD,
                   OURS_OUT, OURS_OUT_ONE_THREAD, PLAIN, TORCH_ALL_CORES, TORCH_ONE_THREAD, describe_options)
from peak_memory import MEMORY_METHODS
from peers import jax, torch


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

"""compare.py's plain float32 timings as a PNG. Imported only for --plot: matplotlib stays optional."""
import math

from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state


def plot_timings(records, machine, path, methods, faint=()):
    """ns per element (log y) per plain float32 case (x, in run order), a line per method of
    `methods` that has a timing (those in `faint` drawn pale), with the date, machine and versions
    in the title; written to `path` as a ~1000x600 px PNG."""
    plain = [r for r in records if r["dtype"] == "float32" and r["options"] == "plain"]
    cases = list(dict.fromkeys(r["case"] for r in plain))
    ns = {(r["case"], r["method"]): r["ns_per_element"] for r in plain}
    figure = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    axes = figure.subplots()
    markers = iter("os^vDPX*")
    for method in methods:
        values = [ns.get((case, method)) for case in cases]
        if all(v is None for v in values):
            continue  # not run: no torch or jax
        style = dict(color="0.7", lw=1, ms=4, zorder=1) if method in faint else dict(lw=2, ms=7, zorder=2)
        axes.plot(range(len(cases)), [math.nan if v is None else v for v in values],
                  marker=next(markers), label=method, **style)
    axes.set_yscale("log")
    axes.set_xticks(range(len(cases)), cases)
    axes.set_xlabel("case (rows x classes), float32, no options")
    axes.set_ylabel("median time / element (ns), log scale")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    versions = ", ".join(f"{name} {machine[name]}" for name in ("softmax_ce_c", "numpy", "torch", "jax")
                         if machine.get(name, "not installed") != "not installed")
    figure.suptitle("softmax cross-entropy loss + gradient, float32", fontsize=13)
    axes.set_title(f"{machine['date_utc']}\n{machine['cpu_model']}, {machine['usable_cpus']} usable of "
                   f"{machine['cpu_count']} CPUs, kernel: {machine['softmax_ce_c_instruction_set']}\n"
                   f"Python {machine['python']}, {versions}", fontsize=9)
    figure.savefig(path)

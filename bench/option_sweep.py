"""Every option and entry point against the plain pass, for every logit dtype, on one thread: the
table that shows a performance cliff (one combination much slower than its neighbours).

    python bench/option_sweep.py [--shape 8192x1000]

Each cell is the median time of the case over the plain softmax_cross_entropy of the same dtype
(out= preallocated, class-index targets), measured interleaved with it. Prints markdown to stdout.
Like compare.py, this imports the installed softmax_ce_c.
"""
import argparse

import numpy as np

import softmax_ce_c
from machine import describe_machine, import_optional
from timing import Method, RepPolicy, benchmark, do_nothing

POLICY = RepPolicy(target_s=0.3, min_reps=5, max_reps=200)


def methods(x, labels, probs, weight, out):
    """A Method per case, all on one thread, all writing their gradient into out but inplace= and
    the loss-only and row functions (which allocate or write nothing)."""
    def ce(target=labels, **options):
        return lambda: softmax_ce_c.softmax_cross_entropy(x, target, num_threads=1, out=out, **options)

    inplace_logits = x.copy()  # refilled (untimed) before every call: the gradient overwrites it
    calls = {
        "plain": ce(),
        "weight": ce(weight=weight),
        "label_smoothing=0.1": ce(label_smoothing=0.1),
        "weight+smoothing+ignore": ce(weight=weight, label_smoothing=0.1, ignore_index=0),
        "z_loss=1e-4": ce(z_loss=1e-4),
        "softcap=30": ce(softcap=30.0),
        "reduction=none": ce(reduction="none"),
        "probability targets": ce(target=probs),
        "probabilities+weight+smoothing": ce(target=probs, weight=weight, label_smoothing=0.1),
        "inplace=True": lambda: softmax_ce_c.softmax_cross_entropy(inplace_logits, labels, num_threads=1,
                                                                   inplace=True),
        "cross_entropy (loss only)": lambda: softmax_ce_c.cross_entropy(x, labels, num_threads=1),
        "logsumexp": lambda: softmax_ce_c.logsumexp(x, num_threads=1),
        "softmax": lambda: softmax_ce_c.softmax(x, num_threads=1),
        "log_softmax": lambda: softmax_ce_c.log_softmax(x, num_threads=1),
    }
    def refill():
        np.copyto(inplace_logits, x)

    return [Method(name, call, POLICY, prepare=refill if name == "inplace=True" else do_nothing)
            for name, call in calls.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8192x1000", help="rows x classes (default 8192x1000)")
    args = parser.parse_args()
    n_rows, n_classes = (int(n) for n in args.shape.split("x"))
    ml_dtypes = import_optional("ml_dtypes")
    dtypes = {"float32": np.float32, "float64": np.float64, "float16": np.float16}
    if ml_dtypes is not None:
        dtypes["bfloat16"] = ml_dtypes.bfloat16

    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal((n_rows, n_classes))
    labels = rng.integers(0, n_classes, n_rows)
    weight = rng.uniform(0.5, 2.0, n_classes)
    probs = rng.dirichlet(np.ones(n_classes), n_rows)

    columns = {}
    for name, dtype in dtypes.items():
        x = logits.astype(dtype)
        # the dtype the kernel reads probabilities in: no conversion timed
        target_probs = probs if name == "float64" else probs.astype(np.float32)
        timings = benchmark(methods(x, labels, target_probs, weight, np.empty_like(x)))
        columns[name] = {t.method: t.median_s for t in timings}

    machine = describe_machine(softmax_ce_c, ml_dtypes=ml_dtypes)
    print(f"softmax_ce_c {machine['softmax_ce_c']} ({softmax_ce_c.instruction_set()}), {machine['cpu_model']}, "
          f"{machine['date_utc']}, load average {machine['load_average_1min']}; {n_rows}x{n_classes}, one thread; "
          "each case's median over the plain pass of its dtype (plain: its median)\n")
    print("| case | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for case in next(iter(columns.values())):
        cells = [f"{t['plain'] * 1e3:.2f} ms" if case == "plain" else f"{t[case] / t['plain']:.2f}x"
                 for t in columns.values()]
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

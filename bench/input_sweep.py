"""Time per logit across kinds of logits, float32, class-index targets, one thread: ordinary logits
against masked classes and logits spread wide, whose exps or gradient products reach the subnormal
floats (where Intel cores take a microcode assist per vector instruction unless the kernel avoids it).

    python bench/input_sweep.py [--logits 4194304] [--classes 10,1000,32000]

Each K has about the same number of logits (N = logits // K rows), of each kind of logit_kinds.py:
masks hit a tenth of the classes of every row (never its target); a spread of S draws the logits
uniformly from [-S/2, S/2]. PyTorch's
F.cross_entropy forward+backward and np.copyto run beside it, as in class_sweep.py. Like compare.py,
this imports the installed softmax_ce_c.
"""
import numpy as np

from class_sweep import ns_per_logit, start_sweep, sweep_arguments
from logit_kinds import KINDS, logits_of_kind
from peers import torch

CLASSES = [10, 1000, 32000]


def main():
    args = sweep_arguments(__doc__, CLASSES)
    start_sweep(args.logits)
    rng = np.random.default_rng(0)
    rows = []
    for n_classes in (int(k) for k in args.classes.split(",")):
        n_rows = max(1, args.logits // n_classes)
        target = rng.integers(0, n_classes, n_rows)
        for kind in KINDS:
            x = logits_of_kind(kind, n_rows, n_classes, target, rng)
            rows.append((n_classes, kind, ns_per_logit(x, target)))
    names = list(rows[0][2])
    print("\nns per logit, float32, one thread, medians (out= against the normal logits of its K; "
          "torch / ours: allocating against allocating)\n")
    torch_header = " torch / ours |" if torch is not None else ""
    print("| K | logits | " + " | ".join(names) + " | out= / normal |" + torch_header)
    print("|---:|---|" + "---:|" * (len(names) + 1 + (torch is not None)))
    normal = {n_classes: ns["out="] for n_classes, kind, ns in rows if kind == "normal"}
    for n_classes, kind, ns in rows:
        cells = [f"{ns[name]:.2f}" for name in names] + [f"{ns['out='] / normal[n_classes]:.2f}"]
        if torch is not None:
            cells.append(f"{ns['torch fwd+bwd'] / ns['allocating']:.1f}x")
        print(f"| {n_classes} | {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

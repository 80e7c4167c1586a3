"""Time per logit across the number of classes K, float32, class-index targets, one thread: the
table that shows a cliff where the kernel changes path (the few-classes groups, rows, streamed and
pipelined rows) or where rows stop being whole cache lines.

    python bench/class_sweep.py [--logits 4194304] [--classes 2,10,33,...]

Every K has about the same number of logits (N = logits // K rows), so the ns per logit of a
method would be flat if only the bytes moved counted; np.copyto of the logits is that floor.
PyTorch's F.cross_entropy forward+backward runs beside it when installed. Like compare.py, this
imports the installed softmax_ce_c.
"""
import argparse

import numpy as np

import softmax_ce_c
from machine import describe_machine
from peers import torch, torch_loss
from timing import Method, RepPolicy, benchmark

POLICY = RepPolicy(target_s=0.3, min_reps=5, max_reps=100)
CLASSES = [2, 10, 32, 33, 48, 64, 65, 100, 128, 129, 256, 512, 1000, 4096, 32000]


def methods(x, target):
    """The methods timed for one K, by name; out= is from np.empty_like, 16 bytes past a cache
    line for large arrays, as a user's buffer is."""
    out = np.empty_like(x)
    timed = {
        "out=": lambda: softmax_ce_c.softmax_cross_entropy(x, target, out=out, num_threads=1),
        "allocating": lambda: softmax_ce_c.softmax_cross_entropy(x, target, num_threads=1),
        "loss only": lambda: softmax_ce_c.cross_entropy(x, target, num_threads=1),
        "np.copyto": lambda: np.copyto(out, x),
    }
    if torch is not None:
        x_tensor, target_tensor = torch.from_numpy(x).requires_grad_(), torch.from_numpy(target)

        def forward_backward():
            x_tensor.grad = None
            torch_loss(x_tensor, target_tensor).backward()

        timed["torch fwd+bwd"] = forward_backward
    return timed


def ns_per_logit(x, target):
    """The methods' medians on x, by name, in ns per logit"""
    timings = benchmark([Method(name, call, POLICY) for name, call in methods(x, target).items()])
    return {t.method: t.median_s * 1e9 / x.size for t in timings}


def sweep_arguments(doc, classes):
    """--logits and --classes, which this sweep and input_sweep.py take"""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--logits", type=int, default=1 << 22, help="logits per call (about)")
    parser.add_argument("--classes", default=",".join(map(str, classes)), help="comma-separated K values")
    return parser.parse_args()


def start_sweep(n_logits):
    """PyTorch on one thread, and the line naming the versions and the machine"""
    if torch is not None:
        torch.set_num_threads(1)
    machine = describe_machine(softmax_ce_c, torch=torch)
    print(f"softmax_ce_c {machine['softmax_ce_c']} ({softmax_ce_c.instruction_set()}), torch {machine['torch']}, "
          f"NumPy {machine['numpy']}, {machine['cpu_model']}, {machine['date_utc']}, "
          f"load average {machine['load_average_1min']}; about {n_logits} logits per call")


def main():
    args = sweep_arguments(__doc__, CLASSES)
    start_sweep(args.logits)
    rng = np.random.default_rng(0)
    rows = []
    for n_classes in (int(k) for k in args.classes.split(",")):
        n_rows = max(1, args.logits // n_classes)
        x = rng.standard_normal((n_rows, n_classes), dtype=np.float32)
        target = rng.integers(0, n_classes, n_rows)
        ns = ns_per_logit(x, target)
        rows.append((n_classes, n_rows, ns))
    names = list(rows[0][2])
    print("\nns per logit, float32, one thread, medians (torch / ours: allocating against allocating)\n")
    print("| K | N | " + " | ".join(names) + (" | torch / ours |" if torch is not None else " |"))
    print("|---:|---:|" + "---:|" * (len(names) + (torch is not None)))
    for n_classes, n_rows, ns in rows:
        cells = [f"{ns[name]:.2f}" for name in names]
        if torch is not None:
            cells.append(f"{ns['torch fwd+bwd'] / ns['allocating']:.1f}x")
        print(f"| {n_classes} | {n_rows} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

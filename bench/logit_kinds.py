"""Kinds of float32 logits whose exps or gradient products may reach the subnormal floats, for
input_sweep.py and ab_builds.py: masks hit a tenth of the classes of every row (never its target),
a spread of S draws the logits uniformly from [-S/2, S/2]."""
import numpy as np

KINDS = ["normal", "-inf masks", "-1e4 masks", "spread 64", "spread 128"]


def logits_of_kind(kind, n_rows, n_classes, target, rng):
    if kind.startswith("spread"):
        spread = float(kind.split()[1])
        return rng.uniform(-spread / 2, spread / 2, (n_rows, n_classes)).astype(np.float32)
    x = rng.standard_normal((n_rows, n_classes), dtype=np.float32)
    if kind.endswith("masks"):
        masked = rng.random(x.shape) < 0.1
        masked[np.arange(n_rows), target] = False
        x[masked] = -np.inf if kind == "-inf masks" else -1e4
    return x

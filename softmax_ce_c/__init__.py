"""Fused, numerically stable softmax cross-entropy loss and gradient for NumPy arrays, in C.

softmax_cross_entropy(logits, target) -> (loss, grad); cross_entropy -> loss alone; logsumexp,
log_softmax, softmax row-wise; release_cached_memory frees the memory large results and calls leave
behind for reuse. `softmax_ce_c.reference` holds the same functions in plain NumPy.
"""
from ._reused_memory import release_cached_memory
from ._api import cross_entropy, instruction_set, log_softmax, logsumexp, softmax, softmax_cross_entropy

__all__ = ["softmax_cross_entropy", "cross_entropy", "logsumexp", "log_softmax", "softmax", "instruction_set",
           "release_cached_memory"]
__version__ = "0.1.0"

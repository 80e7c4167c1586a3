"""The benchmark's peers compute this package's loss: bench/peers.py's PyTorch and JAX calls,
forward and backward, against softmax_cross_entropy with the same options, for every option case
of the benchmark. A peer not installed is skipped."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

import softmax_ce_c
from conftest import DEFAULT_ISA

BENCH = Path(__file__).resolve().parent.parent / "bench"


def import_bench_module(name):
    sys.path.insert(0, str(BENCH))  # the bench modules import their neighbours (machine, timing)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def cases():
    return import_bench_module("cases")


@pytest.fixture(scope="module")
def peers():
    return import_bench_module("peers")


def inputs(cases, option_name, dtype):
    """Logits, class targets (class 0, the ignored one, among them) and the case's options."""
    rng = np.random.default_rng(7)
    n_rows, n_classes = 96, 37
    logits = (3.0 * rng.standard_normal((n_rows, n_classes))).astype(dtype)
    target = rng.integers(0, n_classes, n_rows)
    assert np.any(target == 0)
    options = {key: value(rng, n_classes, dtype) if callable(value) else value
               for key, value in cases.OPTIONS[option_name].items()}
    return logits, target, options


def peer_results(peers, peer, logits, target, options):
    """(loss, gradient) as NumPy float64, from the benchmark's call of the peer."""
    if peer == "torch":
        if peers.torch is None:
            pytest.skip("torch is not installed")
        forward_backward, logits_tensor = peers.torch_forward_backward(logits, target, options, logits.dtype.name)
        loss = forward_backward()
        return float(loss.detach()), logits_tensor.grad.double().numpy()
    if peers.jax is None:
        pytest.skip("jax is not installed")
    loss, grad = peers.jax_call(logits, target, options)()
    return float(loss), np.asarray(grad, dtype=np.float64)


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize("option_name", ["plain", "weight+smoothing+ignore", "z_loss+softcap"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peer_computes_the_package_loss(cases, peers, peer, option_name, dtype, isa):
    if isa != DEFAULT_ISA:
        pytest.skip("the peers do not depend on the instruction set: run once")
    logits, target, options = inputs(cases, option_name, dtype)
    peers.check_peer_options(option_name, target, options)
    loss, grad = softmax_ce_c.softmax_cross_entropy(logits, target, **options)
    peer_loss, peer_grad = peer_results(peers, peer, logits, target, options)
    # the peers compute in the logits' dtype, by other formulas: a few of its eps apart
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(peer_loss, float(loss), rtol=rtol)
    np.testing.assert_allclose(peer_grad, grad.astype(np.float64), rtol=rtol, atol=rtol * np.abs(grad).max())

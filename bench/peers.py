"""The peers timed beside softmax_ce_c: its loss and gradient composed from PyTorch ops and in
jax.numpy; each is skipped when not importable."""
import numpy as np

from cases import ALL_CORES, JAX, TORCH_ALL_CORES, TORCH_ONE_THREAD
from machine import import_optional
from timing import Method

torch = import_optional("torch")
jax = import_optional("jax")
if jax is not None:
    jax.config.update("jax_enable_x64", True)  # for the float64 cases; float32 inputs stay float32


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

"""The per-step pieces of the fsdp backend: gradient-sync switch and clipping of sharded grads."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Replicate


@contextlib.contextmanager
def _sync_off(model: FSDPModule) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Backward in this block keeps unsharded gradients locally (no reduce-scatter); the next
    backward outside it adds to them and reduce-scatters the sum once."""
    if isinstance(model, FSDPModule):
        return _sync_off(model)
    return contextlib.nullcontext()


def _grads(parameters: Iterable[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = []
    for param in parameters:
        grad = param.grad
        if isinstance(grad, DTensor) and any(p.is_partial() for p in grad.placements):
            # Tensor parallelism can leave a replicated parameter's gradient as pending
            # partial sums (sequence parallelism); reduce it now: the norm needs the values
            # and the optimizer would reduce it anyway.
            grad = grad.redistribute(
                grad.device_mesh, [Replicate() if p.is_partial() else p for p in grad.placements]
            )
            param.grad = grad
        if grad is not None:
            grads.append(grad)
    return grads


def _counted_here(grad: DTensor) -> bool:
    """Whether this rank's piece of ``grad`` counts in the global norm: along every mesh dim
    where it is replicated, only the rank at coordinate 0 counts it."""
    coordinate = grad.device_mesh.get_coordinate()
    return all(c == 0 for c, p in zip(coordinate, grad.placements) if p.is_replicate())


def _split(grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
    """(pieces counted by this rank, plain gradients, whether any gradient is distributed).

    Plain gradients (parameters outside any sharded model) are the same on every rank and
    count once, on rank 0.
    """
    counted, plain, distributed = [], [], False
    for grad in grads:
        if isinstance(grad, DTensor):
            distributed = True
            if _counted_here(grad):
                counted.append(grad.to_local())
        else:
            plain.append(grad)
    return counted, plain, distributed


def _local_grads(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g.to_local() if isinstance(g, DTensor) else g for g in grads]


def clip_grad_norm(
    parameters: Iterable[torch.Tensor] | torch.Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> torch.Tensor:
    """Clip to the global norm over every rank's shards; return that norm (same on all ranks).

    Each rank sums ``|g|^p`` over the pieces it owns (a piece replicated over some mesh dims
    counts on one rank of them), one all-reduce over every process adds them (max for the
    inf-norm). Works for any mix of meshes: FSDP, HSDP, tensor parallelism and 2-D layouts.
    """
    norm_type = float(norm_type)
    grads = _grads(parameters)
    local = _local_grads(grads)
    if not local:
        return torch.tensor(0.0)
    counted, plain, distributed = _split(grads)
    device = local[0].device
    communicate = distributed and dist.is_initialized()
    if norm_type == math.inf:
        norms = [g.detach().abs().max() if g.numel() else g.new_zeros(()) for g in local]
        total = torch.stack([n.float().to(device) for n in norms]).max()
        if communicate:
            dist.all_reduce(total, op=dist.ReduceOp.MAX)
    else:
        total = _powered_sum(counted, norm_type, device)
        rank = dist.get_rank() if communicate else 0
        if plain and rank == 0:
            total = total + _powered_sum(plain, norm_type, device)
        if communicate:
            dist.all_reduce(total)
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not torch.isfinite(total):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is non-finite; "
            "pass error_if_nonfinite=False to clip anyway"
        )
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    by_device: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for grad in local:
        by_device.setdefault((grad.device, grad.dtype), []).append(grad)
    for (grad_device, _), group_grads in by_device.items():
        torch._foreach_mul_(group_grads, coefficient.to(grad_device))
    return total


def _powered_sum(grads: list[torch.Tensor], norm_type: float, device: torch.device) -> torch.Tensor:
    if not grads:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm([g.detach() for g in grads], norm_type)
    stacked = torch.stack([n.float().to(device) for n in norms])
    return (stacked**norm_type).sum()


def clip_grad_value(parameters: Iterable[torch.Tensor] | torch.Tensor, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (shard by shard)."""
    for local in _local_grads(_grads(parameters)):
        local.clamp_(min=-clip_value, max=clip_value)

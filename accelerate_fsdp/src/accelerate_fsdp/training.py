"""The per-step pieces of the fsdp backend: gradient-sync switch and clipping of sharded grads."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor


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
    return [p.grad for p in parameters if p.grad is not None]


def _split(grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """(local shards of sharded grads, replicated grads, the process group of the shards)."""
    shards, replicated, group = [], [], None
    for grad in grads:
        if isinstance(grad, DTensor) and any(p.is_shard() for p in grad.placements):
            shards.append(grad.to_local())
            group = grad.device_mesh.get_group()
        elif isinstance(grad, DTensor):
            replicated.append(grad.to_local())
        else:
            replicated.append(grad)
    return shards, replicated, group


def clip_grad_norm(
    parameters: Iterable[torch.Tensor] | torch.Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> torch.Tensor:
    """Clip to the global norm over every rank's shards; return that norm (same on all ranks).

    Each rank sums ``|g|^p`` over its shards, one all-reduce adds them (max for the inf-norm);
    replicated gradients (parameters outside any sharded model) count once, not once per rank.
    """
    norm_type = float(norm_type)
    grads = _grads(parameters)
    shards, replicated, group = _split(grads)
    local = shards + replicated
    if not local:
        return torch.tensor(0.0)
    device = local[0].device
    if norm_type == math.inf:
        norms = [g.detach().abs().max() if g.numel() else g.new_zeros(()) for g in local]
        total = torch.stack([n.float().to(device) for n in norms]).max()
        if group is not None:
            dist.all_reduce(total, op=dist.ReduceOp.MAX, group=group)
    else:
        total = _powered_sum(shards, norm_type, device)
        rank = dist.get_rank(group) if group is not None else 0
        if replicated and rank == 0:
            total = total + _powered_sum(replicated, norm_type, device)
        if group is not None:
            dist.all_reduce(total, group=group)
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
    for grad in _grads(parameters):
        local = grad.to_local() if isinstance(grad, DTensor) else grad
        local.clamp_(min=-clip_value, max=clip_value)

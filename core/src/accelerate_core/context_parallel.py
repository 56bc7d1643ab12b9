"""Context parallelism through torch's ``context_parallel`` (``maybe_context_parallel``).

Inside the context every ``scaled_dot_product_attention`` call runs as ring attention over the
``cp`` ranks, and the given buffers (inputs, labels, position ids) are cut in place along their
sequence dimension into this rank's load-balanced share: with ``2 * cp_size`` dividing the
sequence, rank ``r`` keeps chunks ``r`` and ``2 * cp_size - 1 - r`` of ``2 * cp_size``, so every
rank does as much causal attention as the others. Buffers are restored on exit except those
in ``no_restore_buffers``. Torch only: the core owns it; the backend shards the model over
``dp_shard_cp`` so gradients are reduced over the ``cp`` ranks too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .errors import ConfigurationError

_warned_inactive = False


def _check_buffers(
    buffers: Sequence[torch.Tensor],
    seq_dims: Sequence[int],
    no_restore: set[torch.Tensor] | None,
    cp_size: int,
) -> None:
    """Clear errors (the same on every rank) for what torch would reject obscurely or not at all."""
    if len(buffers) != len(seq_dims):
        raise ConfigurationError(
            f"maybe_context_parallel got {len(buffers)} buffers and {len(seq_dims)} "
            "buffer_seq_dims; give one sequence dimension per buffer"
        )
    for index, (buffer, dim) in enumerate(zip(buffers, seq_dims)):
        if not isinstance(buffer, torch.Tensor) or isinstance(buffer, torch.nn.Parameter):
            raise ConfigurationError(
                f"maybe_context_parallel buffer {index} must be a tensor that is not a "
                f"Parameter, got {type(buffer).__name__}"
            )
        if not -buffer.dim() <= dim < buffer.dim():
            raise ConfigurationError(
                f"maybe_context_parallel buffer {index} has {buffer.dim()} dimensions; "
                f"buffer_seq_dims[{index}]={dim} is not one of them"
            )
        length = buffer.shape[dim]
        if length % cp_size:
            raise ConfigurationError(
                f"maybe_context_parallel buffer {index} has sequence length {length}, which the "
                f"{cp_size} context-parallel ranks cannot split evenly; pad the sequences to a "
                f"multiple of {2 * cp_size} (that also balances causal attention)"
            )
    for buffer in no_restore or ():
        if not any(buffer is b for b in buffers):
            raise ConfigurationError(
                "maybe_context_parallel: no_restore_buffers must be a subset of buffers (the "
                "same tensor objects)"
            )


@contextlib.contextmanager
def context_parallel_shards(
    cp_mesh: Any,
    buffers: Sequence[torch.Tensor] | None,
    buffer_seq_dims: Sequence[int] | None,
    no_restore_buffers: set[torch.Tensor] | None,
    comm_strategy: str = "allgather",
) -> Iterator[None]:
    """Enter torch's ``context_parallel`` over ``cp_mesh`` after checking the arguments."""
    from torch.distributed.tensor.experimental import context_parallel
    from torch.distributed.tensor.experimental._attention import set_rotate_method

    buffers = list(buffers or [])
    seq_dims = list(buffer_seq_dims or [])
    _check_buffers(buffers, seq_dims, no_restore_buffers, cp_mesh.size())
    set_rotate_method(comm_strategy)
    with context_parallel(
        cp_mesh, buffers=buffers, buffer_seq_dims=seq_dims, no_restore_buffers=no_restore_buffers
    ):
        yield


def maybe_context_parallel(
    layout: Any,
    buffers: Sequence[torch.Tensor] | None = None,
    buffer_seq_dims: Sequence[int] | None = None,
    no_restore_buffers: set[torch.Tensor] | None = None,
) -> contextlib.AbstractContextManager:
    """The context of ``Accelerator.maybe_context_parallel``: a no-op (warned once) without CP."""
    global _warned_inactive
    config = layout.config
    if config is None or not config.cp_enabled:
        if not _warned_inactive:
            _warned_inactive = True
            warnings.warn(
                "maybe_context_parallel: context parallelism is not enabled, so this context "
                "does nothing; set ParallelismConfig(cp_size > 1) to enable it",
                UserWarning,
                stacklevel=3,
            )
        return contextlib.nullcontext()
    return context_parallel_shards(
        layout.submesh("cp"), buffers, buffer_seq_dims, no_restore_buffers,
        config.cp_handler.cp_comm_strategy,
    )  # fmt: skip


__all__ = ["context_parallel_shards", "maybe_context_parallel"]

"""Per-rank model state under ZeRO 0-3 for ``accel estimate-memory`` (no DeepSpeed import).

The layout of the ZeRO paper (Rajbhandari et al. 2020), as ``benchmarks/memory_deepspeed.py``
measures it on DeepSpeed 0.19 with Adam, for Psi trainable parameters on N ranks and b bytes per
element of the engine's module (2 under fp16/bf16, which the engine owns, 4 in fp32):

* parameters: b*Psi, partitioned (b*Psi/N) at stage 3;
* gradients: b*Psi at stage 0, partitioned from stage 1 on (DeepSpeed's stage 1 reduces into
  partitions as stage 2 does);
* optimizer: Adam's moments (8 bytes per element) plus an fp32 master copy (4) whenever the
  module is 16-bit or the optimizer is partitioned (stages 1-3): 12*Psi/N; 8*Psi at stage 0 fp32.

Partitions are ceil(Psi/N) elements. Not counted: ZeRO's communication buckets, and at stage 3
the small parameters DeepSpeed keeps whole on every rank (``stage3_param_persistence_threshold``).
"""

from __future__ import annotations

import math

from accelerate_core import MemoryEstimate

NAME = "deepspeed"
SIXTEEN_BIT = ("fp16", "bf16")
NOTE = (
    "ZeRO paper layout (Adam step counts, buckets and ZeRO-3's persisted small parameters "
    "not counted)"
)


def estimates(
    parameters: list[tuple[tuple[int, ...], int, bool]],
    num_processes: int,
    mixed_precisions: list[str],
) -> list[MemoryEstimate]:
    psi = sum(math.prod(shape) for shape, _, trainable in parameters if trainable)
    frozen = sum(math.prod(shape) * size for shape, size, trainable in parameters if not trainable)
    part = math.ceil(psi / num_processes)
    found = []
    for precision in mixed_precisions:
        if precision not in ("no", *SIXTEEN_BIT):
            continue
        b = 2 if precision in SIXTEEN_BIT else 4
        for stage in (0, 1, 2, 3):
            params = (b * part if stage == 3 else b * psi) + frozen
            grads = b * psi if stage == 0 else b * part
            states = 8 * psi if (stage == 0 and b == 4) else 12 * (psi if stage == 0 else part)
            per_rank = ((params,), (grads,), (states,))
            found.append(
                MemoryEstimate(
                    NAME, f"ZeRO-{stage}", precision, *(f * num_processes for f in per_rank), NOTE
                )
            )
    return found

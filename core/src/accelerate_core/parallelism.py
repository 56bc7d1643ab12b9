"""The process layout of one ``Accelerator``: its device mesh, data-parallel rank and groups.

Resolved once, at ``Accelerator`` creation, on every rank from data every rank has (so a bad
layout is the same error everywhere, before any collective). What it decides:

* the sizes: a ``ParallelismConfig`` whose sizes are all 1 on several processes gives them all
  to ``dp_shard`` when the backend shards, else to ``dp_replicate``; any other product that is
  not the world size is an error naming the sizes;
* the backend must apply every enabled dimension (``BackendSpec.parallelism``); a layout whose
  only enabled dimension is ``dp_replicate`` is plain data parallelism, which every distributed
  backend does;
* the data-parallel rank and size the prepared dataloaders shard by (ranks of one TP/CP group
  read the same batches);
* the groups of the collectives: ``gather``/``gather_for_metrics``/``pad_across_processes``
  collect one copy per batch (over ``dp``), ``reduce`` combines every rank that holds different
  data (over ``dp_cp``: a sequence-sharded loss is averaged over its shards too), never the
  tensor-parallel replicas.

``MeshMethods`` is the part of ``Accelerator`` that uses the layout (HF's ``torch_device_mesh``,
rank properties, ``maybe_context_parallel`` and the collectives), kept here as a mixin.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from . import collectives
from .collectives import THIS_PROCESS
from .context_parallel import maybe_context_parallel
from .errors import ConfigurationError
from .ops import apply_to_tensors
from .parallelism_config import ParallelismConfig
from .process_settings import launch_setting

DIMS = ("dp_replicate", "dp_shard", "tp", "cp")
ABOUT = {
    "dp_shard": "sharded data parallelism",
    "tp": "tensor parallelism",
    "cp": "context parallelism",
}


def parallelism_from_launch(config: ParallelismConfig | None) -> ParallelismConfig | None:
    """``config``, else ``ParallelismConfig()`` when the launch asked for one (as HF does)."""
    if config is not None:
        if not isinstance(config, ParallelismConfig):
            raise ConfigurationError(
                f"parallelism_config must be a ParallelismConfig, got {type(config).__name__}"
            )
        return config
    if launch_setting("use_parallelism_config", None):
        return ParallelismConfig()
    return None


def default_backend(config: ParallelismConfig | None) -> str | None:
    """The backend a layout needs when none was named: ``fsdp`` to shard, split or TP."""
    if config is None:
        return None
    return "fsdp" if any(config._enabled("dp_shard", "tp", "cp")) else None


@dataclass(frozen=True)
class ParallelLayout:
    """How this process sits in the run (see the module docstring).

    Attributes:
        config: the ``ParallelismConfig`` (``None`` when the script gave none).
        mesh: its ``DeviceMesh`` (``None`` without a config or when every size is 1).
        dp_rank, dp_size: this process's data-parallel rank and the number of them.
        data_group, reduce_group: the process groups of gather-type collectives and of
            ``reduce`` (``None``: every process; ``THIS_PROCESS``: no communication).
        sizes: ``{"dp_replicate", "dp_shard", "tp", "cp"}``: the effective layout (also
            without a config), which checkpoints record.
    """

    config: ParallelismConfig | None
    mesh: Any
    dp_rank: int
    dp_size: int
    data_group: Any
    reduce_group: Any
    sizes: dict[str, int]

    def local_rank(self, dim: str) -> int:
        """This process's coordinate along ``dim`` (0 when the dim is not in the mesh)."""
        if self.mesh is None or dim not in (self.mesh.mesh_dim_names or ()):
            return 0
        return self.mesh.get_local_rank(dim)

    def submesh(self, *names: str) -> Any:
        """A sub-mesh by dimension names (flattened ones too); ``None`` when absent."""
        return None if self.config is None else self.config.submesh(*names)

    def enabled(self, dim: str) -> bool:
        return self.sizes[dim] > 1


def _sizes_text(config: ParallelismConfig) -> str:
    return " x ".join(f"{dim}_size={getattr(config, f'{dim}_size')}" for dim in DIMS)


def _check_fits(config: ParallelismConfig, world: int, backend_spec: Any) -> None:
    if config.sp_enabled:
        raise ConfigurationError(
            f"sp_size={config.sp_size}: sequence parallelism is DeepSpeed's ALST/Ulysses, which "
            "accelerate-core does not provide; use cp_size for torch context parallelism"
        )
    if config.total_size == 1 and world > 1:
        # HF always gives the world to dp_replicate; a sharding backend shards instead.
        dim = "dp_shard" if "dp_shard" in backend_spec.parallelism else "dp_replicate"
        setattr(config, f"{dim}_size", world)
    if config.total_size != world:
        raise ConfigurationError(
            f"ParallelismConfig {_sizes_text(config)} = {config.total_size} processes, but this "
            f"run has {world}; choose sizes whose product is {world} (or launch "
            f"{config.total_size} processes)"
        )
    enabled = [dim for dim in DIMS if getattr(config, f"{dim}_size") > 1]
    if enabled == ["dp_replicate"]:
        return  # plain data parallelism: any distributed backend
    missing = [dim for dim in enabled if dim not in backend_spec.parallelism]
    if missing:
        what = ", ".join(f"{dim}_size={getattr(config, f'{dim}_size')}" for dim in missing)
        applies = ", ".join(sorted(backend_spec.parallelism)) or "none of them"
        raise ConfigurationError(
            f"{what} needs a backend that applies {' and '.join(ABOUT.get(d, d) for d in missing)}"
            f", but backend '{backend_spec.name}' applies {applies}; select backend 'fsdp' "
            "(Accelerator(backend='fsdp') or accel launch --backend fsdp; pip install "
            "accelerate-fsdp)"
        )


def _check_device(config: ParallelismConfig, device: Any) -> None:
    if config.cp_enabled and device.type == "cpu":
        raise ConfigurationError(
            f"cp_size={config.cp_size}: context parallelism runs attention as a ring through "
            "the flash / memory-efficient scaled_dot_product_attention kernels, which torch "
            f"provides on CUDA (and other accelerators) only, and this process runs on "
            f"{device}; run it on GPUs, or set cp_size=1"
        )


def _group(config: ParallelismConfig, flat: str, dims: list[str]) -> Any:
    return config.submesh(flat).get_group() if dims else THIS_PROCESS


def resolve_layout(config: ParallelismConfig | None, state: Any) -> ParallelLayout:
    """Check ``config`` against this run, build its mesh and this process's place in it."""
    world = state.num_processes
    spec = state.backend_spec
    if config is None:
        shards = world > 1 and "dp_shard" in spec.parallelism
        sizes = {dim: 1 for dim in DIMS}
        sizes["dp_shard" if shards else "dp_replicate"] = world
        return ParallelLayout(None, None, state.process_index, world, None, None, sizes)
    _check_fits(config, world, spec)
    _check_device(config, state.device)
    mesh = config.get_device_mesh(state.device.type) if world > 1 else None
    sizes = config.sizes()
    dp_rank = 0
    if mesh is not None:
        names = mesh.mesh_dim_names
        coordinate = dict(zip(names, mesh.get_coordinate()))
        dp_rank = coordinate.get("dp_replicate", 0) * config.dp_shard_size + coordinate.get(
            "dp_shard", 0
        )
    data_group = reduce_group = None
    if config.tp_enabled or config.cp_enabled:  # some ranks share a batch
        data_group = _group(config, "dp", config.dp_dim_names)
    if config.tp_enabled:  # some ranks hold copies of the same values
        reduce_group = _group(config, "dp_cp", config.dp_cp_dim_names)
    return ParallelLayout(
        config, mesh, dp_rank, config.data_parallel_size, data_group, reduce_group, sizes
    )


# --------------------------------------------------------------------------- the Accelerator's API


def _mesh_rank(dim: str) -> property:
    def rank(self: MeshMethods) -> int:
        if self.parallel_layout.config is None:
            raise RuntimeError(f"{dim} parallelism is not configured; pass parallelism_config")
        return self.parallel_layout.local_rank(dim)

    return property(rank, doc=f"This process's coordinate along {dim} (0 when not enabled).")


class MeshMethods:
    """``Accelerator``'s device-mesh API (HF's names) and its collectives, which run over the
    layout's groups. A mixin: the ``Accelerator`` sets ``parallel_layout`` and
    ``gradient_state``."""

    parallel_layout: ParallelLayout
    gradient_state: Any

    @property
    def parallelism_config(self) -> ParallelismConfig | None:
        return self.parallel_layout.config

    @property
    def torch_device_mesh(self) -> Any:
        """The ``DeviceMesh`` of the ``ParallelismConfig`` (HF's dim names), else ``None``."""
        return self.parallel_layout.mesh

    tensor_parallel_rank = _mesh_rank("tp")
    context_parallel_rank = _mesh_rank("cp")
    data_parallel_rank = _mesh_rank("dp_replicate")
    data_parallel_shard_rank = _mesh_rank("dp_shard")

    def maybe_context_parallel(
        self,
        buffers: list[torch.Tensor] | None = None,
        buffer_seq_dims: list[int] | None = None,
        no_restore_buffers: set[torch.Tensor] | None = None,
    ) -> AbstractContextManager[Any]:
        """Context parallelism for one forward/backward (``context_parallel.py``): ``buffers``
        cut in place along ``buffer_seq_dims``, restored on exit unless in ``no_restore_buffers``;
        attention runs as a ring over the ``cp`` ranks. A no-op without ``cp_size > 1``."""
        return maybe_context_parallel(
            self.parallel_layout, buffers, buffer_seq_dims, no_restore_buffers
        )

    def gather(self, tensor: Any) -> Any:
        """Concatenate every process's tensors (nested structures too) along dimension 0.

        With tensor/context parallelism, one copy per batch: from the data-parallel ranks.
        """
        return collectives.gather(tensor, self.parallel_layout.data_group)

    def gather_for_metrics(self, input_data: Any, use_gather_object: bool = False) -> Any:
        """``gather``, minus the samples repeated to even out the last batch of the epoch.

        Over a whole prepared evaluation loader the result holds exactly the dataset's samples,
        in order. Non-tensor data (or ``use_gather_object=True``) is gathered as objects.
        """
        tensors = collectives.tensor_leaves(input_data)
        as_objects = use_gather_object or not tensors
        if as_objects:
            data = collectives.gather_object(input_data, self.parallel_layout.data_group)
        else:
            data = self.gather(input_data)
        loader = self.gradient_state.active_dataloader
        real = loader.remainder if loader is not None and loader.end_of_dataloader else None
        if real is None:
            return data
        if as_objects:
            return data[:real]
        return apply_to_tensors(lambda t: t[:real], data)

    def reduce(self, tensor: Any, reduction: str = "sum", scale: float = 1.0) -> Any:
        """Sum (or average, ``reduction="mean"``) every process's tensors.

        With tensor parallelism, tensor-parallel replicas count once (over ``dp_cp``).
        """
        return collectives.reduce(tensor, reduction, scale, self.parallel_layout.reduce_group)

    def pad_across_processes(
        self, tensor: Any, dim: int = 0, pad_index: int = 0, pad_first: bool = False
    ) -> Any:
        """Pad tensors along ``dim`` to the largest size any process has."""
        return collectives.pad_across_processes(
            tensor, dim, pad_index, pad_first, self.parallel_layout.data_group
        )


__all__ = [
    "MeshMethods",
    "ParallelLayout",
    "default_backend",
    "parallelism_from_launch",
    "resolve_layout",
]

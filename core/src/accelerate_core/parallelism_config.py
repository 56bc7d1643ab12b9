"""``ParallelismConfig``: how the processes of a run are arranged into a device mesh.

Hugging Face Accelerate's names, fields, defaults and dimension names (after torchtitan's
``ParallelDims``): ``dp_replicate`` (replicated data parallelism), ``dp_shard`` (sharded data
parallelism, FSDP), ``tp`` (tensor parallelism) and ``cp`` (context parallelism), laid out in
that canonical order, ``tp`` innermost. Only dimensions of size > 1 are in the mesh; the
flattened dimensions ``dp`` (dp_replicate x dp_shard: the ranks that read different data),
``dp_shard_cp`` (the ranks FSDP shards over) and ``dp_cp`` (the ranks a loss is averaged over)
are built with it.

A size left unset comes from ``accel launch --parallelism-config-*`` (the
``PARALLELISM_CONFIG_*`` variables Hugging Face uses), else 1. The mesh is torch only and the
core's; applying FSDP/HSDP/TP to a model is the backend's (``accelerate_fsdp``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .process_settings import launch_setting

MESH_ORDER = ("dp_replicate", "dp_shard", "cp", "sp", "tp")
SIZE_FIELDS = ("dp_replicate_size", "dp_shard_size", "tp_size", "cp_size", "sp_size")
LAUNCHED_SIZES = SIZE_FIELDS[:4]  # accel launch sets these (no DeepSpeed sequence parallelism)
CP_BACKENDS = ("torch",)
SP_BACKENDS = ("deepspeed",)
CP_COMM_STRATEGIES = ("allgather", "alltoall")


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"ParallelismConfig {name} must be an integer >= 1, got {value!r}; 1 turns that "
            "dimension off"
        )
    return value


@dataclass
class TorchTensorParallelConfig:
    """Options of torch tensor parallelism (Hugging Face's handler).

    ``enable_async_tp`` is accepted for compatibility and, as in Hugging Face Accelerate,
    not supported: it warns and is ignored.
    """

    enable_async_tp: bool = False

    def __post_init__(self) -> None:
        if self.enable_async_tp:
            warnings.warn(
                "async tensor parallelism is not supported; enable_async_tp is ignored",
                UserWarning,
                stacklevel=3,
            )


@dataclass
class TorchContextParallelConfig:
    """Options of torch context parallelism (Hugging Face's handler).

    Args:
        cp_comm_strategy: how ring attention exchanges keys and values between the context
            parallel ranks: ``"allgather"`` (default) or ``"alltoall"``; default from
            ``accel launch --parallelism-config-cp-comm-strategy``.
    """

    cp_comm_strategy: str | None = None

    def __post_init__(self) -> None:
        strategy = launch_setting("parallelism_config_cp_comm_strategy", self.cp_comm_strategy)
        self.cp_comm_strategy = strategy or "allgather"
        if self.cp_comm_strategy not in CP_COMM_STRATEGIES:
            raise ConfigurationError(
                f"cp_comm_strategy must be one of {', '.join(CP_COMM_STRATEGIES)}, got "
                f"{self.cp_comm_strategy!r}"
            )


@dataclass
class ParallelismConfig:
    """The sizes of each parallelism; their product is the number of processes.

    Args:
        dp_replicate_size: replicas of the model that each read different data (DDP-like;
            with ``dp_shard_size > 1``, the replica groups of HSDP).
        dp_shard_size: ranks that shard parameters, gradients and optimizer state (FSDP) and
            read different data.
        tp_size: ranks that split each layer's weights (tensor parallelism); they read the same
            batch.
        cp_size: ranks that split each sequence (context parallelism); they read the same batch
            and run attention as a ring.
        cp_backend: ``"torch"`` (the only one).
        sp_size: Hugging Face's DeepSpeed ALST/Ulysses sequence parallelism; accepted for
            compatibility, refused by ``Accelerator`` when ``sp_size > 1`` (no DeepSpeed
            sequence parallelism here: use ``cp_size``).
        sp_backend: as ``sp_size``, accepted for compatibility.
        sp_handler: as ``sp_size``, accepted for compatibility.
        tp_handler: ``TorchTensorParallelConfig`` (made when ``tp_size > 1``).
        cp_handler: ``TorchContextParallelConfig`` (made when ``cp_size > 1``).

    With several processes and every size 1, ``Accelerator`` gives all processes to
    ``dp_shard`` when the backend shards (fsdp) and to ``dp_replicate`` otherwise (Hugging Face
    always uses dp_replicate). ``dp_replicate_size > 1`` with ``tp_size``/``cp_size > 1``
    needs ``dp_shard_size > 1`` (HSDP + TP/CP), as in Hugging Face Accelerate.
    """

    dp_replicate_size: int | None = None
    dp_shard_size: int | None = None
    tp_size: int | None = None
    cp_size: int | None = None
    cp_backend: str | None = None
    sp_size: int | None = None
    sp_backend: str | None = None
    tp_handler: TorchTensorParallelConfig | None = None
    cp_handler: TorchContextParallelConfig | None = None
    sp_handler: Any = None
    device_mesh: Any = field(default=None, init=False, repr=False, compare=False)
    _flattened: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if name in LAUNCHED_SIZES:
                value = launch_setting(f"parallelism_config_{name}", value)
            setattr(self, name, _check_size(name, 1 if value is None else value))
        self.cp_backend = launch_setting("parallelism_config_cp_backend", self.cp_backend)
        self.cp_backend = self.cp_backend or "torch"
        self.sp_backend = self.sp_backend or "deepspeed"
        if self.cp_backend not in CP_BACKENDS:
            raise ConfigurationError(
                f"cp_backend must be one of {', '.join(CP_BACKENDS)}, got {self.cp_backend!r}"
            )
        if self.sp_backend not in SP_BACKENDS:
            raise ConfigurationError(
                f"sp_backend must be one of {', '.join(SP_BACKENDS)}, got {self.sp_backend!r}"
            )
        if self.tp_size > 1 and self.tp_handler is None:
            self.tp_handler = TorchTensorParallelConfig()
        if self.cp_size > 1:
            if self.cp_handler is None:
                self.cp_handler = TorchContextParallelConfig()
            elif not isinstance(self.cp_handler, TorchContextParallelConfig):
                raise ConfigurationError(
                    f"cp_backend='torch' needs a TorchContextParallelConfig as cp_handler, got "
                    f"{type(self.cp_handler).__name__}"
                )
        if self.cp_size > 1 and self.sp_size > 1:
            raise ConfigurationError(
                f"context parallelism (cp_size={self.cp_size}) and sequence parallelism "
                f"(sp_size={self.sp_size}) exclude each other; set one of them to 1"
            )
        replicate_only = self.dp_replicate_enabled and not self.dp_shard_enabled
        if (self.tp_enabled or self.cp_enabled) and replicate_only:
            raise ConfigurationError(
                f"tensor/context parallelism (tp_size={self.tp_size}, cp_size={self.cp_size}) "
                "cannot be combined with pure replication (dp_replicate_size="
                f"{self.dp_replicate_size}, dp_shard_size=1): set dp_shard_size > 1 (FSDP + "
                "TP/CP, or HSDP + TP/CP with dp_replicate_size)"
            )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={getattr(self, name)}" for name in SIZE_FIELDS)
        return (
            f"ParallelismConfig({sizes}, cp_backend={self.cp_backend!r}, "
            f"total_size={self.total_size})"
        )

    def to_json(self) -> dict[str, Any]:
        """The sizes and handler options as plain data (the mesh left out)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in SIZE_FIELDS}
        data.update(cp_backend=self.cp_backend, sp_backend=self.sp_backend)
        for name in ("tp_handler", "cp_handler"):
            handler = getattr(self, name)
            data[name] = None if handler is None else dict(vars(handler))
        return data

    # ------------------------------------------------------------------ sizes and names

    @property
    def dp_replicate_enabled(self) -> bool:
        return self.dp_replicate_size > 1

    @property
    def dp_shard_enabled(self) -> bool:
        return self.dp_shard_size > 1

    @property
    def tp_enabled(self) -> bool:
        return self.tp_size > 1

    @property
    def cp_enabled(self) -> bool:
        return self.cp_size > 1

    @property
    def sp_enabled(self) -> bool:
        return self.sp_size > 1

    @property
    def total_size(self) -> int:
        """The product of every size: the number of processes this layout needs."""
        return (
            self.dp_replicate_size
            * self.dp_shard_size
            * self.tp_size
            * self.cp_size
            * (self.sp_size)
        )

    @property
    def data_parallel_size(self) -> int:
        """Ranks that read different batches (dp_replicate x dp_shard)."""
        return self.dp_replicate_size * self.dp_shard_size

    @property
    def non_data_parallel_size(self) -> int:
        """Ranks that share one batch (tp x cp x sp)."""
        return self.tp_size * self.cp_size * self.sp_size

    def _enabled(self, *names: str) -> list[str]:
        return [name for name in names if getattr(self, f"{name}_size") > 1]

    @property
    def dp_dim_names(self) -> list[str]:
        """Enabled data-parallel dimensions (flattened into ``dp``)."""
        return self._enabled("dp_replicate", "dp_shard")

    @property
    def non_dp_dim_names(self) -> list[str]:
        """Enabled dimensions whose ranks receive the same batch."""
        return self._enabled("tp", "cp", "sp")

    @property
    def dp_shard_cp_dim_names(self) -> list[str]:
        """Enabled dimensions FSDP shards the model over (flattened into ``dp_shard_cp``)."""
        return self._enabled("dp_shard", "cp")

    @property
    def dp_cp_dim_names(self) -> list[str]:
        """Enabled dimensions a loss is averaged over (flattened into ``dp_cp``)."""
        return self._enabled("dp_replicate", "dp_shard", "cp")

    @property
    def fsdp_dim_names(self) -> list[str]:
        """The mesh FSDP is applied over: ``dp_replicate`` (when enabled) and ``dp_shard_cp``."""
        return [*self._enabled("dp_replicate"), "dp_shard_cp"]

    @property
    def active_mesh_dims(self) -> list[str]:
        return self.dp_dim_names + self.non_dp_dim_names

    def _get_mesh(self) -> tuple[tuple[str, ...], tuple[int, ...]] | tuple[()]:
        """(names, shape) of the enabled dimensions in canonical order, ``()`` when none."""
        names = sorted(self.active_mesh_dims, key=MESH_ORDER.index)
        if not names:
            return ()
        return tuple(names), tuple(getattr(self, f"{name}_size") for name in names)

    # ------------------------------------------------------------------ the mesh

    def build_device_mesh(self, device_type: str) -> Any:
        """Build the ``DeviceMesh`` (and its flattened dims); ``None`` when no size is > 1.

        Needs the process group to exist (``Accelerator`` creates it first).
        """
        from torch.distributed.device_mesh import init_device_mesh

        layout = self._get_mesh()
        if not layout:
            return None
        names, shape = layout
        mesh = init_device_mesh(device_type, shape, mesh_dim_names=names)
        flattened = {}
        for flat, dims in (
            ("dp", self.dp_dim_names),
            ("dp_shard_cp", self.dp_shard_cp_dim_names),
            ("dp_cp", self.dp_cp_dim_names),
        ):
            if dims:
                flattened[flat] = mesh[tuple(dims)]._flatten(flat)
        self._flattened = flattened
        return mesh

    def get_device_mesh(self, device_type: str | None = None) -> Any:
        """The mesh, built on first use for ``device_type``."""
        if self.device_mesh is None:
            if device_type is None:
                raise ConfigurationError(
                    "the device mesh is not built yet; pass a device_type (e.g. 'cuda')"
                )
            self.device_mesh = self.build_device_mesh(device_type)
        elif device_type is not None and self.device_mesh.device_type != device_type:
            raise ConfigurationError(
                f"the device mesh was built for {self.device_mesh.device_type}, not "
                f"{device_type}; one ParallelismConfig serves one device type"
            )
        return self.device_mesh

    def submesh(self, *names: str) -> Any:
        """The sub-mesh over ``names`` (mesh dims or flattened ones: ``dp``, ``dp_shard_cp``).

        Flattened meshes are kept here rather than sliced from the root, which torch
        deprecates. An accelerate-core addition; ``None`` when a name is not in the mesh.
        """
        mesh = self.device_mesh
        if mesh is None:
            return None
        if len(names) == 1 and names[0] in self._flattened:
            return self._flattened[names[0]]
        dims = mesh.mesh_dim_names or ()
        if all(name in dims for name in names):
            return mesh[names]
        if names == ("dp_replicate", "dp_shard_cp") and not self.cp_enabled:
            return mesh[("dp_replicate", "dp_shard")] if self.dp_shard_enabled else None
        if not all(name in dims or name in self._flattened for name in names):
            return None
        with warnings.catch_warnings():  # slicing a flattened dim from the root (HSDP + CP)
            warnings.simplefilter("ignore", UserWarning)
            return mesh[names]

    def sizes(self) -> dict[str, int]:
        """``{"dp_replicate": .., "dp_shard": .., "tp": .., "cp": ..}`` (checkpoints record it)."""
        dims = ("dp_replicate", "dp_shard", "tp", "cp")
        return {name: getattr(self, f"{name}_size") for name in dims}


__all__ = ["ParallelismConfig", "TorchContextParallelConfig", "TorchTensorParallelConfig"]

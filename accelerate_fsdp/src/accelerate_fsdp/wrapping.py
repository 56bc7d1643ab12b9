"""Sharding prepared models with FSDP2 (``fully_shard``) and rebinding optimizers to the shards.

``fully_shard`` shards a module in place: every parameter is replaced by a new ``DTensor``
parameter holding this rank's shard. An optimizer built before ``prepare`` still points at the
old, unsharded parameters; ``rebind_optimizer`` swaps them (param groups and any existing state)
for the sharded ones by parameter name, so the optimizer trains exactly as one built after
sharding and the unsharded tensors are freed.

Under a ``ParallelismConfig`` the mesh is the core's: tensor parallelism is applied first over
``tp`` (``tensor_parallel.py``), then ``fully_shard`` over ``dp_shard_cp`` (with
``dp_replicate`` in front: HSDP). A layout without sharded ranks (``tp`` alone) is not sharded
by FSDP at all.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from accelerate_core import ConfigurationError, PrepareRequest

from .options import FSDPOptions
from .tensor_parallel import TP_LAYOUT, apply_tensor_parallel

CHECKPOINTED = "_accelerate_fsdp_checkpointed"
# Containers are never called, so their forward hooks would never gather their parameters.
NEVER_UNITS = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.ParameterList)

# id(old parameter) -> (weak old parameter, weak model, name): optimizers prepared in a later
# `prepare` call than their model are rebound too. Weak, so nothing is kept alive.
_SHARDED_FROM: dict[int, tuple[weakref.ref, weakref.ref, str]] = {}


def shard_request(request: PrepareRequest, context: Any) -> PrepareRequest:
    """Shard every model of one ``prepare`` call, then rebind its optimizers."""
    options = FSDPOptions.from_mapping(context.backend_options)
    if not request.models and not request.optimizers:
        return request
    mesh, tp_mesh = meshes(context)
    renamed: dict[int, torch.nn.Parameter] = {}
    for model in request.models:
        renamed.update(shard_model(model, options, mesh, context, tp_mesh))
    _prune_dead()
    for optimizer in request.optimizers:
        rebind_optimizer(optimizer, renamed)
    return request


def meshes(context: Any) -> tuple[DeviceMesh | None, DeviceMesh | None]:
    """(the mesh FSDP shards over or None, the tensor-parallel mesh or None)."""
    layout = context.parallelism
    config = None if layout is None else layout.config
    if config is None:  # no ParallelismConfig: FSDP over every process
        return init_device_mesh(context.device.type, (context.state.num_processes,)), None
    tp_mesh = layout.submesh("tp") if config.tp_enabled else None
    if not config.dp_shard_cp_dim_names:
        return None, tp_mesh
    return layout.submesh(*config.fsdp_dim_names), tp_mesh


def check_layout(layout: Any, options: FSDPOptions) -> None:
    """Layouts this backend refuses, at ``Accelerator`` creation (on every rank alike)."""
    config = None if layout is None else layout.config
    if config is None:
        return
    if config.dp_replicate_enabled and not config.dp_shard_cp_dim_names:
        raise ConfigurationError(
            f"dp_replicate_size={config.dp_replicate_size} with dp_shard_size=1 replicates the "
            "model without sharding it: that is plain data parallelism, use backend 'ddp' (or "
            "set dp_shard_size > 1 for HSDP)"
        )
    if config.tp_enabled and options.cpu_ram_efficient_loading:
        raise ConfigurationError(
            "fsdp cpu_ram_efficient_loading is not supported with tensor parallelism "
            f"(tp_size={config.tp_size}); build the model with its weights on every rank"
        )


def shard_model(
    model: torch.nn.Module,
    options: FSDPOptions,
    mesh: DeviceMesh | None,
    context: Any,
    tp_mesh: DeviceMesh | None = None,
) -> dict[int, torch.nn.Parameter]:
    """Shard ``model`` in place; return ``{id(old parameter): new sharded parameter}``.

    ``mesh``: where FSDP shards (``None``: no FSDP); ``tp_mesh``: tensor parallelism first.
    """
    if isinstance(model, FSDPModule) or model.__dict__.get(TP_LAYOUT):
        return {}
    if next(model.parameters(), None) is None:  # buffers only: nothing to shard
        return {} if _is_meta(model) else _placed(model, context)
    # Strong references until the optimizers are rebound: ids must not be reused meanwhile.
    before = {id(p): (name, p) for name, p in model.named_parameters()}
    for name, param in list(model.named_parameters()):
        # A parameter subclass wrapping the original (torchao's fp8 all-gather weight, made by
        # the precision conversion) stands in for it: the optimizer still holds the original.
        inner = getattr(param, "_tensor", None)
        if isinstance(inner, torch.nn.Parameter) and id(inner) not in before:
            before[id(inner)] = (name, inner)
    units = select_units(model, options)
    if options.activation_checkpointing:
        if not units:
            raise ConfigurationError(
                "fsdp activation_checkpointing recomputes the sharded blocks, but this model "
                f"({type(model).__name__}) has none: set backend_options wrap_classes (names "
                "of its blocks) or min_num_params"
            )
        for unit in units:
            checkpoint_forward(unit)
    param_dtype, reduce_dtype = options.dtypes(context.mixed_precision)
    offload: OffloadPolicy = OffloadPolicy()
    if options.cpu_offload:
        offload = CPUOffloadPolicy(pin_memory=context.device.type == "cuda")
    kwargs = {
        "mesh": mesh,
        "reshard_after_forward": options.reshard_after_forward,
        "mp_policy": MixedPrecisionPolicy(
            param_dtype=getattr(torch, param_dtype) if param_dtype else None,
            reduce_dtype=getattr(torch, reduce_dtype) if reduce_dtype else None,
        ),
        "offload_policy": offload,
    }
    full_state = None
    _check_meta(model, options, context)
    if options.cpu_ram_efficient_loading:
        full_state = _prepare_rank0_loading(model, context)
    if tp_mesh is not None:
        model.to(context.device)  # DTensors are made on the mesh's device
        apply_tensor_parallel(model, tp_mesh, options.tp_plan)
    if mesh is not None:
        for unit in units:
            fully_shard(unit, **kwargs)
        fully_shard(model, **kwargs)
    if options.cpu_ram_efficient_loading:
        _load_from_rank0(model, full_state, options, context)
    after = dict(model.named_parameters())
    renamed = {}
    for key, (name, old) in before.items():
        renamed[key] = after[name]
        _SHARDED_FROM[key] = (weakref.ref(old), weakref.ref(model), name)
    return renamed


def _is_meta(model: torch.nn.Module) -> bool:
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def _placed(model: torch.nn.Module, context: Any) -> dict[int, torch.nn.Parameter]:
    model.to(context.device)  # the core leaves placement to this backend (places_models)
    return {}


# --------------------------------------------------------------------------- units


def select_units(model: torch.nn.Module, options: FSDPOptions) -> list[torch.nn.Module]:
    """The sub-modules sharded as their own units, innermost first (``fully_shard`` order)."""
    classes = options.wrap_classes
    present = {type(m).__name__ for m in model.modules()}
    if classes is None:
        declared = getattr(model, "_no_split_modules", None) or ()
        classes = tuple(name for name in declared if name in present)
    else:
        missing = [name for name in classes if name not in present]
        if missing:
            raise ConfigurationError(
                f"fsdp wrap_classes {', '.join(missing)} not found in "
                f"{type(model).__name__}; its module classes are: {', '.join(sorted(present))}"
            )
    wanted = set(classes)
    minimum = options.min_num_params
    units: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module, is_root: bool) -> int:
        """Parameters below ``module`` not yet in a unit; appends units in post-order."""
        count = sum(p.numel() for p in module.parameters(recurse=False))
        for child in module.children():
            count += visit(child, False)
        if is_root or isinstance(module, NEVER_UNITS) or count == 0:
            return count
        if type(module).__name__ in wanted or (minimum is not None and count >= minimum):
            units.append(module)
            return 0
        return count

    visit(model, True)
    return units


def checkpoint_forward(module: torch.nn.Module) -> None:
    """Run ``module``'s forward under non-reentrant activation checkpointing.

    Replacing the instance's ``forward`` keeps parameter names unchanged (a wrapper module
    would add ``_checkpoint_wrapped_module.`` to every key of every state dict).
    """
    if getattr(module, CHECKPOINTED, False):
        return
    original = module.forward

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(original, *args, use_reentrant=False, **kwargs)

    module.forward = forward
    setattr(module, CHECKPOINTED, True)


# --------------------------------------------------------------------------- rank-0 loading


def _check_meta(model: torch.nn.Module, options: FSDPOptions, context: Any) -> None:
    """Refuse meta-device weights nobody can fill, on every rank (one rank alone raising
    would leave the others waiting in the first collective)."""
    from accelerate_core.collectives import gather_object

    meta_ranks = [rank for rank, meta in enumerate(gather_object(_is_meta(model))) if meta]
    name = type(model).__name__
    if options.cpu_ram_efficient_loading and 0 in meta_ranks:
        raise ConfigurationError(
            "fsdp cpu_ram_efficient_loading broadcasts the weights from rank 0, but rank 0 "
            f"built {name} on the meta device; build it with its real weights on rank 0 (the "
            "other ranks may use torch.device('meta'))"
        )
    if not options.cpu_ram_efficient_loading and meta_ranks:
        raise ConfigurationError(
            f"{name} has parameters on the meta device on rank(s) "
            f"{', '.join(map(str, meta_ranks))}; to build it on the meta device on ranks other "
            "than 0, set backend_options cpu_ram_efficient_loading=True and build it with its "
            "real weights on rank 0"
        )


def _prepare_rank0_loading(model: torch.nn.Module, context: Any) -> dict[str, torch.Tensor]:
    """Rank 0 keeps its full weights for the broadcast; other ranks drop (or never had) them."""
    if context.state.process_index == 0:
        return model.state_dict()
    model.to(torch.device("meta"))  # frees real weights if this rank built them anyway
    return {}


def _load_from_rank0(
    model: torch.nn.Module, full_state: dict[str, torch.Tensor] | None, options: FSDPOptions,
    context: Any,
) -> None:  # fmt: skip
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if context.state.process_index != 0:
        model.to_empty(device="cpu" if options.cpu_offload else context.device)
    set_model_state_dict(
        model,
        full_state or {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    # Non-persistent buffers are in no state dict: send them too.
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


# --------------------------------------------------------------------------- optimizers


def _prune_dead() -> None:
    for key in [k for k, (old, model, _) in _SHARDED_FROM.items() if old() is None]:
        del _SHARDED_FROM[key]


def _sharded_twin(param: torch.Tensor) -> torch.nn.Parameter | None:
    """The sharded parameter that replaced ``param`` in an earlier ``prepare``, if any."""
    entry = _SHARDED_FROM.get(id(param))
    if entry is None or entry[0]() is not param:
        return None
    model = entry[1]()
    return None if model is None else dict(model.named_parameters()).get(entry[2])


def rebind_optimizer(optimizer: Any, renamed: dict[int, torch.nn.Parameter]) -> None:
    """Point ``optimizer``'s param groups and state at the sharded parameters.

    Hyper-parameters and group structure are kept; state made before sharding (an optimizer
    that already stepped) is cut to this rank's shard of each parameter.
    """
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        return
    mapping: dict[int, torch.nn.Parameter] = {}
    for group in inner.param_groups:
        for param in group["params"]:
            new = renamed.get(id(param))
            if new is None and not isinstance(param, DTensor):
                new = _sharded_twin(param)
            if new is not None:
                mapping[id(param)] = new
    if not mapping:
        return
    for group in inner.param_groups:
        group["params"] = [mapping.get(id(p), p) for p in group["params"]]
    if inner.state:
        state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        for param, values in inner.state.items():
            new = mapping.get(id(param))
            state[param if new is None else new] = (
                values if new is None else _shard_state(values, param, new)
            )
        inner.state = state


def _shard_state(values: dict[str, Any], old: torch.Tensor, new: DTensor) -> dict[str, Any]:
    local = new.to_local()
    sharded = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.shape == old.shape and value.dim() > 0:
            value = distribute_tensor(
                value.detach().to(local.device), new.device_mesh, new.placements,
                src_data_rank=None,  # every rank holds the full value: cut, do not send
            )  # fmt: skip
        sharded[key] = value
    return sharded

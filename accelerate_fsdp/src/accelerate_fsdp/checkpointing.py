"""State dicts and checkpoints of sharded models: full weights on rank 0, sharded or full saves.

``save_state`` writes, into the directory the core gives it:

* ``fsdp_checkpoint.json``: which format was written and how each object was stored;
* sharded (default): ``fsdp_sharded/`` written by ``torch.distributed.checkpoint`` (each rank its
  own shards of every model and optimizer, no gather);
* full: ``model_<i>.safetensors`` and ``optimizer_<i>.bin`` gathered to rank 0 (loadable
  without torch.distributed: plain parameter names);
* in the middle of a gradient-accumulation cycle, ``fsdp_grads_<rank>_model_<i>.safetensors``:
  each rank's unsharded accumulated gradients, which FSDP2 keeps out of ``param.grad`` (for a
  model under tensor parallelism alone: its ``param.grad``, this rank's parts, with their
  placements in ``fsdp_grad_placements_<rank>_model_<i>.bin``).

An optimizer that has not stepped yet is saved as its plain ``state_dict()`` (param groups only):
torch's state-dict helpers would initialise its state with a fake step, and a resumed Adam would
then count one step too many. The hooks return the names of the sharded models and their
optimizers; the core stores every other object in its replicated format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from accelerate_core import CheckpointError
from accelerate_core.checkpoint_io import (
    get_object,
    get_tensors,
    put_object,
    put_tensors,
    read_manifest,
)

from .options import FSDPOptions
from .tensor_parallel import as_tensor_parallel

META = "fsdp_checkpoint.json"
SHARDED_DIR = "fsdp_sharded"
FORMAT = "accelerate-fsdp/1"


def _state_dict_options(full: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=full)


def is_sharded(model: Any) -> bool:
    """Sharded by FSDP or split by tensor parallelism (DTensor parameters)."""
    if isinstance(model, FSDPModule):
        return True
    return isinstance(model, torch.nn.Module) and any(
        isinstance(p, DTensor) for p in model.parameters()
    )


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on CPU on rank 0 (``{}`` elsewhere); ``None``: not sharded."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_dict_options(full=True))


# --------------------------------------------------------------------------- grouping


class _Plan:
    """Which saved objects this backend stores itself, and how."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.models = {n: m for n, m in objects.items() if is_sharded(m)}
        for model in self.models.values():
            _reshard(model)
        # One container for every sharded model: optimizers spanning several models work and
        # optimizer keys are stable parameter names ("model_0.layers.0.weight").
        self.container = torch.nn.ModuleDict(self.models)
        owned = {id(p) for p in self.container.parameters()}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for name, obj in objects.items():
            inner = getattr(obj, "optimizer", obj)
            if not name.startswith("optimizer_") or not isinstance(inner, torch.optim.Optimizer):
                continue
            params = [p for g in inner.param_groups for p in g["params"]]
            if params and all(id(p) in owned for p in params):
                self.optimizers[name] = inner

    @property
    def stored(self) -> list[str]:
        """The names this backend stores; the core stores the others."""
        return [*self.models, *self.optimizers]


def _reshard(model: torch.nn.Module) -> None:
    """Put every FSDP unit back to its sharded parameters.

    After a forward under ``no_grad`` the root unit keeps its parameters unsharded (nothing
    reshards them until the next backward), and ``module.parameters()`` would then not be the
    sharded parameters the optimizers hold.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _accumulated_grads(model: FSDPModule) -> dict[str, torch.Tensor]:
    """Unsharded gradients of an unfinished accumulation cycle (FSDP2 keeps them off
    ``param.grad`` until the syncing backward reduce-scatters them)."""
    names = {id(m): n for n, m in model.named_modules()}
    grads = {}
    for key, fsdp_param in _fsdp_params(model, names):
        grad = fsdp_param.unsharded_accumulated_grad
        if grad is None and hasattr(fsdp_param, "_unsharded_param"):
            grad = fsdp_param._unsharded_param.grad
        if grad is not None:
            # Tensor-parallel: this rank's part (the file is this rank's).
            grads[key] = (grad.to_local() if isinstance(grad, DTensor) else grad).detach()
    return grads


def _fsdp_params(model: FSDPModule, names: dict[int, str]) -> list[tuple[str, Any]]:
    found = []
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        for group in module._get_fsdp_state()._fsdp_param_groups:
            for fsdp_param in group.fsdp_params:
                info = fsdp_param._module_info
                prefix = names[id(info.module)]
                found.append((f"{prefix}.{info.param_name}" if prefix else info.param_name,
                              fsdp_param))  # fmt: skip
    return found


def _restore_accumulated_grads(model: FSDPModule, grads: dict[str, torch.Tensor]) -> None:
    names = {id(m): n for n, m in model.named_modules()}
    for key, fsdp_param in _fsdp_params(model, names):
        grad = grads.get(key)
        if hasattr(fsdp_param, "_unsharded_param"):
            fsdp_param._unsharded_param.grad = None
        # The next backward adds its gradient to this one, as if the run had not stopped.
        if grad is not None:
            grad = grad.to(fsdp_param.sharded_param.to_local().device)
            grad = as_tensor_parallel(model, key, grad)
        fsdp_param.unsharded_accumulated_grad = grad


def _tensor_parallel_grads(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """This rank's parts of ``param.grad`` (tensor parallelism alone) and their placements:
    sequence parallelism leaves some as pending partial sums, restored as such."""
    grads, placements = {}, {}
    for name, param in model.named_parameters():
        grad = param.grad
        if isinstance(grad, DTensor):
            grads[name] = grad.to_local().detach()
            placements[name] = [_placement_code(p) for p in grad.placements]
        elif grad is not None:
            grads[name] = grad.detach()
    return grads, placements


def _placement_code(placement: Any) -> str:
    if placement.is_replicate():
        return "R"
    if placement.is_partial() and placement.reduce_op == "sum":
        return "P"
    if placement.is_shard():
        return f"S{placement.dim}"
    raise CheckpointError(
        f"cannot save a gradient placed as {placement!r} in the middle of a gradient-"
        "accumulation cycle; save at a step that updates"
    )


def _restore_tensor_parallel_grads(
    model: torch.nn.Module, grads: dict[str, torch.Tensor], placements: dict[str, list[str]]
) -> None:
    from torch.distributed.tensor import Partial, Replicate, Shard

    def placement(code: str) -> Any:
        return Replicate() if code == "R" else Partial() if code == "P" else Shard(int(code[1:]))

    for name, param in model.named_parameters():
        grad = grads.get(name)
        if grad is None:
            param.grad = None
        elif isinstance(param, DTensor):
            param.grad = DTensor.from_local(
                grad.to(param.to_local().device), param.device_mesh,
                [placement(c) for c in placements[name]], run_check=False,
            )  # fmt: skip
        else:
            param.grad = grad.to(param.device)


def _drop_zero_sharded_grads(models: dict[str, FSDPModule], device: torch.device) -> None:
    """Mid-cycle, sharded gradients exist only after ``zero_grad(set_to_none=False)``: zeros.

    The core saves ``param.grad`` of an unfinished cycle itself and cannot store shards, so
    zero shards become ``None`` (the next reduce-scatter then assigns instead of adding zero:
    the same values). Non-zero shards are refused on every rank with the fix.
    """
    import torch.distributed as dist

    nonzero = torch.zeros((), device=device)
    fsdp = [m for m in models.values() if isinstance(m, FSDPModule)]
    # Without FSDP (tensor parallelism alone) param.grad holds the accumulated gradients.
    params = [p for m in fsdp for p in m.parameters() if p.grad is not None]
    for param in params:
        if bool(param.grad.to_local().count_nonzero()):
            nonzero.fill_(1)
    dist.all_reduce(nonzero, op=dist.ReduceOp.MAX)  # every rank raises, or none
    if nonzero.item():
        raise CheckpointError(
            "save_state in the middle of a gradient-accumulation cycle found sharded gradients "
            "left from an earlier optimizer step; call optimizer.zero_grad() (set_to_none=True, "
            "the default) after optimizer.step()"
        )
    for param in params:
        param.grad = None


# --------------------------------------------------------------------------- save


def save_state(objects: dict[str, Any], directory: str, context: Any) -> list[str]:
    options = FSDPOptions.from_mapping(context.backend_options)
    path = Path(directory)
    plan = _Plan(objects)
    rank = context.state.process_index
    is_main = context.state.is_main_process
    full = options.state_dict_type == "full"
    plain = [name for name, opt in plan.optimizers.items() if not opt.state]
    stored = {name: opt for name, opt in plan.optimizers.items() if name not in plain}
    if is_main:
        for name in plain:
            put_object(path, f"{name}.bin", plan.optimizers[name].state_dict())
    if full:
        _save_full(plan, stored, path, is_main)
    elif plan.models or stored:
        _save_sharded(plan, stored, path)
    gradient_state = context.gradient_state
    if gradient_state is not None and gradient_state.mid_cycle:
        _drop_zero_sharded_grads(plan.models, context.device)
        for name, model in plan.models.items():
            if isinstance(model, FSDPModule):
                grads = _accumulated_grads(model)
            else:
                grads, placements = _tensor_parallel_grads(model)
                if grads:
                    put_object(path, f"fsdp_grad_placements_{rank}_{name}.bin", placements)
            if grads:
                put_tensors(path, f"fsdp_grads_{rank}_{name}.safetensors", grads)
    if is_main:
        (path / META).write_text(json.dumps({
            "format": FORMAT, "state_dict_type": options.state_dict_type,
            "models": sorted(plan.models), "optimizers": sorted(stored), "plain_optimizers": plain,
        }, indent=2))  # fmt: skip
    return plan.stored


def _save_full(plan: _Plan, stored: dict[str, Any], path: Path, is_main: bool) -> None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    for name, model in plan.models.items():
        state = full_state_dict(model)
        if is_main:
            put_tensors(path, f"{name}.safetensors", state)
    for name, optimizer in stored.items():
        state = get_optimizer_state_dict(
            plan.container, optimizer, options=_state_dict_options(full=True)
        )
        if is_main:
            put_object(path, f"{name}.bin", state)


def _save_sharded(plan: _Plan, stored: dict[str, Any], path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_state(plan, stored), checkpoint_id=str(path / SHARDED_DIR))


def _sharded_state(plan: _Plan, stored: dict[str, Any]) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    state: dict[str, Any] = {}
    for name, model in plan.models.items():
        state[name] = get_model_state_dict(model, options=_state_dict_options(full=False))
    for name, optimizer in stored.items():
        state[name] = get_optimizer_state_dict(
            plan.container, optimizer, options=_state_dict_options(full=False)
        )
    return state


# --------------------------------------------------------------------------- load


def load_state(objects: dict[str, Any], directory: str, context: Any) -> list[str]:
    path = Path(directory)
    meta_path = path / META
    if not meta_path.exists():
        raise CheckpointError(
            f"{path} has no {META}: it was not written by the fsdp backend; resume it with the "
            "backend that saved it"
        )
    meta = json.loads(meta_path.read_text())
    manifest = read_manifest(path)
    plan = _Plan(objects)
    expected = set(meta["models"]) | set(meta["optimizers"]) | set(meta["plain_optimizers"])
    if set(plan.models) | set(plan.optimizers) != expected:
        raise CheckpointError(
            f"{path} holds sharded objects {sorted(expected)} but this run prepared "
            f"{sorted(set(plan.models) | set(plan.optimizers))}; prepare the same models and "
            "optimizers (in the same order) before load_state"
        )
    stored = {name: plan.optimizers[name] for name in meta["optimizers"]}
    for name in meta["plain_optimizers"]:
        plan.optimizers[name].load_state_dict(get_object(path, f"{name}.bin", manifest))
    if meta["state_dict_type"] == "full":
        _load_full(plan, stored, path, manifest, context)
    elif plan.models or stored:
        _load_sharded(plan, stored, path)
    rank = context.state.process_index
    for name, model in plan.models.items():
        grads_name = f"fsdp_grads_{rank}_{name}.safetensors"
        grads = get_tensors(path, grads_name, manifest) if grads_name in manifest["files"] else {}
        if isinstance(model, FSDPModule):
            _restore_accumulated_grads(model, grads)
        else:
            placements_name = f"fsdp_grad_placements_{rank}_{name}.bin"
            placements = get_object(path, placements_name, manifest) if grads else {}
            _restore_tensor_parallel_grads(model, grads, placements)
    return plan.stored


def _load_full(
    plan: _Plan, stored: dict[str, Any], path: Path, manifest: dict[str, Any], context: Any
) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    is_main = context.state.is_main_process
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    for name, model in plan.models.items():
        state = get_tensors(path, f"{name}.safetensors", manifest) if is_main else {}
        set_model_state_dict(model, state, options=options)
    for name, optimizer in stored.items():
        state = get_object(path, f"{name}.bin", manifest) if is_main else {}
        set_optimizer_state_dict(plan.container, optimizer, state, options=options)


def _load_sharded(plan: _Plan, stored: dict[str, Any], path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = _sharded_state(plan, stored)  # templates: DCP loads into them in place
    dcp.load(state, checkpoint_id=str(path / SHARDED_DIR))
    for name, model in plan.models.items():
        set_model_state_dict(model, state[name], options=_state_dict_options(full=False))
    for name, optimizer in stored.items():
        set_optimizer_state_dict(
            plan.container, optimizer, state[name], options=_state_dict_options(full=False)
        )

"""The conformance recipe: one small training run, its hand-written references, and the scenarios
the checks run (module-level functions, so ``run_distributed`` can start them on N processes).

Everything here is deliberately plain. The data are fixed, the dataloader is not shuffled and its
batches divide evenly between two processes and into whole accumulation cycles, so the reference
loops can be written out by hand: a backend that trains correctly gives the same weights (bit for
bit where the arithmetic is the same; within a tolerance where it legitimately is not, as fp8).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

from accelerate_core.launch_options import CONFIG_FILE_ENV, LAUNCH_VARIABLES
from accelerate_core.state import DEVICE_ENV

from .target import Target

FEATURES, HIDDEN = 16, 32  # multiples of 16: fp8 kernels need them
SAMPLES, BATCH = 96, 8  # 12 batches: 6 per process on two, 3 accumulation cycles of 2
EPOCHS, ACCUMULATION, MAX_NORM, LR = 2, 2, 1.0, 1e-2
PROCESSES = 2
BAD_OPTION = "conformance_no_such_option"
BUILTIN_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Settings of the surrounding shell that must not leak into the checks (they choose everything).
SETTING_VARIABLES = (*LAUNCH_VARIABLES, CONFIG_FILE_ENV, DEVICE_ENV)


# --------------------------------------------------------------------------- the recipe


def build() -> tuple[torch.nn.Module, Any, Any, torch.Tensor, torch.Tensor]:
    """Model, optimizer, scheduler and data, the same in every process and every call."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(SAMPLES, FEATURES, generator=generator)
    weights = torch.randn(FEATURES, 1, generator=generator)
    targets = torch.tanh(inputs @ weights) + 0.05 * torch.randn(SAMPLES, 1, generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.GELU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU(),
        torch.nn.Linear(HIDDEN, 1),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
    return model, optimizer, scheduler, inputs, targets


def batches_of(rank: int, world: int) -> list[list[int]]:
    """The batches a process sees: batch k is samples 8k..8k+7, dealt round-robin."""
    every = [list(range(k * BATCH, (k + 1) * BATCH)) for k in range(SAMPLES // BATCH)]
    return every[rank::world]


def autocast_for(precision: str, device: torch.device, autocast_type: str | None = None) -> Any:
    """The hand-written loop's autocast: the core's fp16/bf16, nothing for other precisions."""
    dtype = BUILTIN_PRECISIONS.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(autocast_type or device.type, dtype=dtype)


def hand_written(
    precision: str,
    device: torch.device,
    autocast_type: str | None = None,
    ddp: bool = False,
    schedule_steps_per_process: bool = True,
) -> dict[str, torch.Tensor]:
    """The recipe written by hand: one process, or ``DistributedDataParallel`` when ``ddp``.

    Precisions other than the core's ``no``/``bf16``/``fp16`` are trained in fp32: that is the
    reference a precision plugin is compared with (within a tolerance). After each update the
    schedule steps once per process (HF's rule), or once when ``schedule_steps_per_process`` is
    False (an engine that steps its scheduler itself: ``BackendSpec.steps_schedulers``).
    """
    model, optimizer, scheduler, inputs, targets = build()
    model.to(device)
    inputs, targets = inputs.to(device), targets.to(device)
    network: torch.nn.Module = model
    rank, world = 0, 1
    if ddp:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        rank, world = dist.get_rank(), dist.get_world_size()
        ids = [device.index] if device.type != "cpu" and device.index is not None else None
        network = DistributedDataParallel(model, device_ids=ids)
    schedule_steps = world if schedule_steps_per_process else 1
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    batches = batches_of(rank, world)
    for _ in range(EPOCHS):
        for i, indices in enumerate(batches):
            sync = (i + 1) % ACCUMULATION == 0 or i + 1 == len(batches)
            no_sync = network.no_sync() if ddp and not sync else contextlib.nullcontext()
            with no_sync:
                with autocast_for(precision, device, autocast_type):
                    output = network(inputs[indices])
                loss = torch.nn.functional.mse_loss(output.float(), targets[indices])
                loss = loss / ACCUMULATION
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if not sync:
                continue
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), MAX_NORM)
            if scaler is not None:
                scale = scaler.get_scale()
                scaler.step(optimizer)
                scaler.update()
                if scaler.get_scale() >= scale:  # a skipped step does not advance the schedule
                    for _ in range(schedule_steps):
                        scheduler.step()
            else:
                optimizer.step()
                for _ in range(schedule_steps):
                    scheduler.step()
            optimizer.zero_grad()
    return plain(model.state_dict())


def plain(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict as plain fp32 CPU tensors (comparable, picklable)."""
    return {k: v.detach().float().cpu().clone() for k, v in state.items() if torch.is_tensor(v)}


def dataset_loss(model: torch.nn.Module, device: torch.device) -> float:
    """The loss over the whole dataset (an evaluation pass: it runs the model without grad)."""
    _, _, _, inputs, targets = build()
    with torch.no_grad():
        output = model(inputs.to(device))
    return float(torch.nn.functional.mse_loss(output.float(), targets.to(device)))


def compare(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How far ``ours`` is from ``reference``.

    ``identical``: bit for bit. ``relative``: ``||ours - reference|| / ||reference||`` over every
    tensor together (what tolerances bound). ``max_difference`` and ``where``: the largest
    element difference and its tensor, for the report.
    """
    mismatch = None
    if set(ours) != set(reference):
        mismatch = f"keys differ: {sorted(set(ours) ^ set(reference))}"
    else:
        for key in sorted(reference):
            if ours[key].shape != reference[key].shape:
                mismatch = f"{key}: shape {tuple(ours[key].shape)} vs {tuple(reference[key].shape)}"
                break
    if mismatch is not None:
        return {"identical": False, "relative": float("inf"), "max_difference": float("inf"),
                "where": mismatch}  # fmt: skip
    worst, where, squares, norm = 0.0, "", 0.0, 0.0
    for key in sorted(reference):
        difference = (ours[key] - reference[key]).abs()
        largest = float(difference.max()) if difference.numel() else 0.0
        if largest > worst or not where:
            worst, where = largest, key
        squares += float((difference**2).sum())
        norm += float((reference[key] ** 2).sum())
    return {
        "identical": all(torch.equal(ours[k], reference[k]) for k in reference),
        "relative": squares**0.5 / max(norm**0.5, 1e-30),
        "max_difference": worst,
        "where": where,
    }


def loss_of(state: dict[str, torch.Tensor], device: torch.device) -> float:
    """The dataset loss of the recipe's model holding the weights ``state``."""
    model = build()[0]
    model.load_state_dict(state)
    return dataset_loss(model.to(device), device)


# --------------------------------------------------------------------------- with accelerate-core


def clean_environment() -> None:
    """Forget accelerate-core settings inherited from the shell (the checks choose everything)."""
    for name in SETTING_VARIABLES:
        os.environ.pop(name, None)


def new_accelerator(target: Target, **kwargs: Any) -> Any:
    """A fresh ``Accelerator`` for ``target`` (the process group, if any, is kept)."""
    from accelerate_core import Accelerator, PartialState
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    cpu = target.device is None
    if target.device is not None:
        PartialState(device=target.device, backend=target.backend_name)
    kwargs.setdefault("gradient_accumulation_steps", ACCUMULATION)
    return Accelerator(
        backend=target.backend_name, mixed_precision=target.precision_name, cpu=cpu, **kwargs
    )


def prepared(accelerator: Any) -> tuple[Any, Any, Any, Any]:
    """The recipe's model, optimizer, scheduler and dataloader, prepared in one call."""
    from torch.utils.data import DataLoader, TensorDataset

    model, optimizer, scheduler, inputs, targets = build()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)
    return accelerator.prepare(model, optimizer, scheduler, loader)


def train_epoch(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, loader: Any) -> int:
    """The user's loop (clip, step and schedule on every batch; the core skips micro-steps)."""
    seen = 0
    for x, y in loader:
        seen += 1
        with accelerator.accumulate(model):
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), MAX_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return seen


def weights(accelerator: Any, model: Any) -> dict[str, torch.Tensor]:
    """The full weights (on the main process at least: sharded backends gather them there)."""
    return plain(accelerator.get_state_dict(model))


def probe(model: Any, device: torch.device) -> torch.Tensor:
    """The prepared model's output on fixed inputs: equal on every rank when ranks agree."""
    inputs = torch.linspace(-1, 1, 4 * FEATURES).reshape(4, FEATURES).to(device)
    with torch.no_grad():
        return model(inputs).detach().float().cpu().clone()


def failure(exc: BaseException) -> dict[str, str]:
    """An exception as picklable text, so a worker process can report it to the checks."""
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


@contextlib.contextmanager
def recorded(results: dict[str, Any], check: str) -> Iterator[None]:
    """Run one step of a scenario; an exception is recorded for ``check`` and the rest goes on."""
    try:
        yield
    except Exception as exc:
        results[check] = failure(exc)


def training_scenario(target_dict: dict[str, Any], directory: str) -> dict[str, Any]:
    """Train two epochs with a checkpoint between them, then round-trip the checkpoint.

    Returns the facts every training check needs, so one run (one process group, one engine)
    serves them all: the weights after each epoch, probe outputs, the checkpoint results and the
    hand-written reference trained in the same processes.
    """
    target = Target(**target_dict)
    clean_environment()
    results: dict[str, Any] = {}
    try:
        accelerator = new_accelerator(target)
        model, optimizer, scheduler, loader = prepared(accelerator)
        device = accelerator.device
        results["facts"] = {
            "num_processes": accelerator.num_processes,
            "rank": accelerator.process_index,
            "device": str(device),
            "initial_loss": dataset_loss(model, device),
        }
        batches = train_epoch(accelerator, model, optimizer, scheduler, loader)
        dataset_loss(model, device)  # evaluate, then save: the usual end of an epoch
        after_first = weights(accelerator, model)
        saved = False
        with recorded(results, "checkpoint"):
            accelerator.save_state(directory)
            saved = True
        batches += train_epoch(accelerator, model, optimizer, scheduler, loader)
        final = weights(accelerator, model)
        results["training"] = {
            "weights": final,
            "probe": probe(model, device),
            "batches": batches,
            "eval_loss": dataset_loss(model, device),  # through the prepared model
            "final_loss": loss_of(final, device) if final else None,  # as the reference's
        }
        if saved:
            with recorded(results, "checkpoint"):
                accelerator.load_state(directory)
                restored = weights(accelerator, model)
                train_epoch(accelerator, model, optimizer, scheduler, loader)
                results["checkpoint"] = {
                    "saved": after_first,
                    "restored": restored,
                    "resumed": weights(accelerator, model),
                    "expected": results["training"]["weights"],
                }
        autocast_type = getattr(accelerator.state.device_spec, "autocast_type", None)
        with recorded(results, "reference"):
            results["reference"] = hand_written(
                target.precision_name, device, autocast_type, ddp=accelerator.num_processes > 1,
                schedule_steps_per_process=not accelerator.state.backend_spec.steps_schedulers,
            )  # fmt: skip
            results["facts"]["reference_loss"] = loss_of(results["reference"], device)
        with recorded(results, "communication"):  # last: it trains on, changing the weights
            results["communication"] = communication_per_micro_step(accelerator, model, optimizer)
    except Exception as exc:
        results["error"] = failure(exc)
    return results


def reductions_in(profile: Any) -> int:
    """Reducing collectives (all-reduce, reduce-scatter, reduce) a profile recorded, counted at
    the ``c10d`` dispatcher: the same on gloo, NCCL or a vendor's process group."""
    return sum(
        1
        for event in profile.events()
        if event.name.startswith("c10d::") and "reduce" in event.name
    )


def communication_per_micro_step(accelerator: Any, model: Any, optimizer: Any) -> list[Any]:
    """``[sync_gradients, reductions in forward + backward]`` of each micro-step of one
    accumulation cycle (a cycle starts afresh after an epoch's last batch)."""
    _, _, _, inputs, targets = build()
    x, y = inputs[:BATCH].to(accelerator.device), targets[:BATCH].to(accelerator.device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    steps = []
    for _ in range(ACCUMULATION):
        with accelerator.accumulate(model):
            with torch.profiler.profile(activities=activities) as profile:
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
            steps.append([bool(accelerator.sync_gradients), reductions_in(profile)])
            optimizer.step()
            optimizer.zero_grad()
    return steps


def bad_option_scenario(target_dict: dict[str, Any], kind: str) -> dict[str, Any]:
    """Create an Accelerator with an option the plugin does not know and prepare a model.

    The plugin must refuse it with an accelerate-core error naming the option, on every rank
    (an error raised on one rank only leaves the others waiting in a collective).
    """
    from accelerate_core import AccelerateCoreError

    target = Target(**target_dict)
    clean_environment()
    if kind == "backend":
        options: dict[str, Any] = {"backend_options": {BAD_OPTION: True}}
    else:  # a precision plugin's own options live under its name
        options = {"precision_options": {target.precision_name: {BAD_OPTION: True}}}
    try:
        accelerator = new_accelerator(target, **options)
        model, optimizer, scheduler, loader = prepared(accelerator)
        train_epoch(accelerator, model, optimizer, scheduler, loader)
    except Exception as exc:
        return {
            "raised": True,
            "type": type(exc).__name__,
            "core_error": isinstance(exc, AccelerateCoreError),
            "message": str(exc),
        }
    return {"raised": False}


def run_scenario(
    function: Callable[..., dict[str, Any]],
    target: Target,
    *args: Any,
    processes: int,
    timeout: float,
) -> list[dict[str, Any]]:
    """Each process's result of ``function`` on ``processes`` torchrun processes (in this
    process for one). A process that raised reports ``{"error": ..., "traceback": ...}``; a run
    that does not finish within ``timeout`` seconds raises ``DistributedRunError``."""
    if processes == 1:
        return [function(target.as_dict(), *args)]
    from accelerate_core.testing import run_distributed

    ranks = run_distributed(
        function, target.as_dict(), *args, nprocs=processes, timeout=timeout, allow_errors=True
    )
    return [r.value if r.ok else {"error": r.error, "traceback": r.traceback} for r in ranks]

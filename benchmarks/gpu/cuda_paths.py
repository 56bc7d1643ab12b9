"""The CUDA paths that the CPU-only CI cannot run, checked on one GPU; JSON to ``$OUT``.

1. Training through the Accelerator on CUDA equals the hand-written loop bit for bit (no, bf16,
   fp16 with dynamic loss scaling; accumulation 1 and 4; clipping; a scheduler).
2. fp16: an injected overflow skips the step and halves the scale; with a prepared scheduler the
   skip check adds no device synchronisation (``torch.cuda.set_sync_debug_mode`` counts them).
3. save_state / load_state on CUDA (CUDA RNG included, dropout on): the resumed run equals the
   run that never stopped, bit for bit.
4. MemoryTracker on CUDA records the device's allocated/reserved/peak bytes.
5. Per-step overhead on CUDA: ours / hand-written for a small model (alternating rounds).

    PYTHONPATH=core/src python benchmarks/gpu/cuda_paths.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "core" / "tests"))
import recipes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a smoke run


def fresh(**kwargs):
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state()
    return Accelerator(**kwargs)


def hand_written(precision: str, accumulation: int) -> dict[str, torch.Tensor]:
    model, optimizer, scheduler, loader = recipes.build()
    model.to(DEVICE)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(DEVICE.type) if precision == "fp16" else None
    batches = list(loader)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(DEVICE), y.to(DEVICE)
        with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype is not None):
            output = model(x)
        loss = recipes.loss_fn(output.float(), y) / accumulation
        (scaler.scale(loss) if scaler else loss).backward()
        if (i + 1) % accumulation and i + 1 != len(batches):
            continue
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipes.MAX_GRAD_NORM)
        stepped = True
        if scaler:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            stepped = scaler.get_scale() >= scale
        else:
            optimizer.step()
        if stepped:
            scheduler.step()
        optimizer.zero_grad()
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def ours(precision: str, accumulation: int) -> dict[str, torch.Tensor]:
    accelerator = fresh(mixed_precision=precision, gradient_accumulation_steps=accumulation)
    model, optimizer, scheduler, loader = accelerator.prepare(*recipes.build())
    for x, y in loader:
        with accelerator.accumulate(model):
            accelerator.backward(recipes.loss_fn(model(x).float(), y))
            accelerator.clip_grad_norm_(model.parameters(), recipes.MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    assert accelerator.device.type == DEVICE.type
    return {k: v.detach().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}


def training_reference() -> dict[str, object]:
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    found = {}
    for precision in ("no", "bf16", "fp16"):
        for accumulation in (1, 4):
            a, b = ours(precision, accumulation), hand_written(precision, accumulation)
            found[f"{precision}-{accumulation}"] = {
                "identical": all(torch.equal(a[k], b[k]) for k in b),
                "max_difference": max(float((a[k] - b[k]).abs().max()) for k in b),
            }
    torch.use_deterministic_algorithms(False)
    return found


def fp16_skip_and_syncs() -> dict[str, object]:
    from accelerate_core import GradScalerKwargs

    accelerator = fresh(
        mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=1024.0)]
    )
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    x = torch.randn(32, 64, device=DEVICE)
    skipped, scales = [], []
    for step in range(3):
        accelerator.backward(model(x).pow(2).mean())
        if step == 1:
            model.weight.grad[0, 0] = float("inf")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        skipped.append(accelerator.optimizer_step_was_skipped)
        scales.append(accelerator.scaler.get_scale())
    # Device synchronisations made by the scheduler's check after a step (none expected).
    accelerator.backward(model(x).pow(2).mean())
    optimizer.step()
    if DEVICE.type != "cuda":
        return {"skipped": skipped, "scales": scales}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler.step()
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message)[:120] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"skipped": skipped, "scales": scales, "syncs_in_scheduler_step": syncs}


def resume_exact() -> dict[str, object]:
    def run(stop: int | None, directory: str) -> dict[str, torch.Tensor]:
        accelerator = fresh()
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 64), torch.nn.Dropout(0.3), torch.nn.Linear(64, 1)
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(64, 16, generator=generator), torch.randn(64, 1))
        loader = DataLoader(data, batch_size=8, shuffle=True)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if stop is None and os.path.exists(directory):
            accelerator.load_state(directory)
        step = 0
        for epoch in range(loader.iteration, 2):
            for x, y in loader:
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                if stop is not None and epoch == 0 and step == stop:
                    accelerator.save_state(directory)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "ckpt")
        full = run(5, directory)  # trains through, saving after 5 steps of epoch 0
        resumed = run(None, directory)
    return {"identical": all(torch.equal(full[k], resumed[k]) for k in full)}


def memory_tracking() -> dict[str, object]:
    accelerator = fresh()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = accelerator.track_memory(tmp, interval=0.01)
        block = torch.ones(256 * 2**20, dtype=torch.uint8, device=DEVICE)
        time.sleep(0.2)
        del block
        tracker.stop()
        record = json.loads(next(Path(tmp).glob("*.json")).read_text())
    keys = sorted(record)
    return {"keys": keys, "peak": record.get("peak", record.get("peaks"))}


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def overhead(steps: int = 200, rounds: int = 7) -> dict[str, float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    x, y = torch.randn(64, 256, device=DEVICE), torch.randn(64, 1, device=DEVICE)
    plain = model.to(DEVICE)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=1e-3)
    accelerator = fresh()
    ours_model = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)
    )
    ours_model, ours_opt = accelerator.prepare(
        ours_model, torch.optim.SGD(ours_model.parameters(), lr=1e-3)
    )

    def hand() -> None:
        loss = torch.nn.functional.mse_loss(plain(x), y)
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad()

    def lib() -> None:
        loss = torch.nn.functional.mse_loss(ours_model(x), y)
        accelerator.backward(loss)
        ours_opt.step()
        ours_opt.zero_grad()

    times: dict[str, list[float]] = {"hand": [], "ours": []}
    for r in range(rounds):
        order = [("hand", hand), ("ours", lib)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    hand_us, ours_us = statistics.median(times["hand"]), statistics.median(times["ours"])
    return {"hand_us": hand_us, "ours_us": ours_us, "ratio": ours_us / hand_us}


def main() -> None:
    result: dict[str, object] = {
        "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "none (cpu smoke run)",
        "torch": torch.__version__,
    }
    for name, check in (
        ("training_reference", training_reference),
        ("fp16", fp16_skip_and_syncs),
        ("resume", resume_exact),
        ("memory_tracker", memory_tracking),
        ("overhead", overhead),
    ):
        start = time.perf_counter()
        try:
            result[name] = check()
        except Exception as exc:
            import traceback

            result[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
        print(f"{name} ({time.perf_counter() - start:.1f} s): {result[name]}", flush=True)
    out = Path(os.environ.get("OUT", ".")) / "cuda_paths.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

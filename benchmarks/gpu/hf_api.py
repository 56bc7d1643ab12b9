"""The HF drop-in API's CUDA paths (issue 14), checked on one GPU; JSON to ``$OUT``.

1. ``find_executable_batch_size`` on a real CUDA out-of-memory error: the batch shrinks (x0.9)
   until it fits, and the failed tries' memory is released (allocated bytes back to the start).
2. ``Accelerator(dynamo_backend="inductor")`` on CUDA: the compiled model trains to the eager
   losses (within 1e-4) and ``get_state_dict`` / ``unwrap_model`` keep the user's keys.
3. ``accelerator.profile()`` with ``ProfileKwargs(activities=["cpu", "cuda"])`` writes a Chrome
   trace that holds CUDA kernels.
4. The HF-style parity script (``tests/hf_parity/parity_script.py``) under HF Accelerate and
   under accelerate-core with ``--mixed_precision fp16`` is not repeated here: its schedule and
   step counts do not depend on the device.

    PYTHONPATH=core/src python benchmarks/gpu/hf_api.py      (CPU: a smoke run of 2 and 3)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fresh(**kwargs):
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state()
    return Accelerator(**kwargs)


def oom_retry() -> dict[str, object]:
    from accelerate_core.utils import find_executable_batch_size

    if DEVICE.type != "cuda":
        return {"skipped": "no CUDA device"}
    free, _ = torch.cuda.mem_get_info()
    unit = free // 40  # batch 64 asks for 1.6x the free memory, batch 36 fits
    start = torch.cuda.memory_allocated()
    tried: list[int] = []

    @find_executable_batch_size(starting_batch_size=64)
    def train(batch_size: int) -> int:
        tried.append(batch_size)
        blocks = [torch.empty(unit, dtype=torch.uint8, device=DEVICE) for _ in range(batch_size)]
        return len(blocks)

    fitted = train()
    torch.cuda.synchronize()
    return {"tried": tried, "fitted": fitted, "allocated_after": torch.cuda.memory_allocated(),
            "allocated_before": start, "released": torch.cuda.memory_allocated() <= start,
            "ok": len(tried) > 1 and fitted < 64}  # fmt: skip


def compiled_training() -> dict[str, object]:
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1, keepdim=True)

    def run(dynamo_backend: str | None):
        accelerator = fresh(dynamo_backend=dynamo_backend)
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model, optimizer = accelerator.prepare(model, optimizer)
        losses = []
        for _ in range(5):
            loss = torch.nn.functional.mse_loss(model(x.to(DEVICE)), y.to(DEVICE))
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return (
            losses,
            sorted(accelerator.get_state_dict(model)),
            sorted(accelerator.unwrap_model(model).state_dict()),
        )

    eager, keys, _ = run(None)
    compiled, compiled_keys, unwrapped_keys = run("inductor" if DEVICE.type == "cuda" else "eager")
    close = all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(eager, compiled))
    return {"eager": eager, "compiled": compiled, "keys": compiled_keys,
            "ok": close and compiled_keys == keys == unwrapped_keys}  # fmt: skip


def profiled() -> dict[str, object]:
    from accelerate_core.utils import ProfileKwargs

    activities = ["cpu", "cuda"] if DEVICE.type == "cuda" else ["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        handler = ProfileKwargs(activities=activities, output_trace_dir=tmp)
        accelerator = fresh(kwargs_handlers=[handler])
        with accelerator.profile():
            a = torch.ones(256, 256, device=DEVICE)
            (a @ a).sum().item()
        trace = json.loads((Path(tmp) / "profile_0.json").read_text())
    kernels = [e for e in trace["traceEvents"] if e.get("cat") == "kernel"]
    return {"events": len(trace["traceEvents"]), "cuda_kernels": len(kernels),
            "ok": bool(kernels) or DEVICE.type != "cuda"}  # fmt: skip


def main() -> None:
    results = {"device": str(DEVICE), "oom_retry": oom_retry(),
               "compiled_training": compiled_training(), "profile": profiled()}  # fmt: skip
    results["ok"] = all(v.get("ok", True) for v in results.values() if isinstance(v, dict))
    text = json.dumps(results, indent=1, default=str)
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out, "hf_api_gpu.json").write_text(text)


if __name__ == "__main__":
    main()

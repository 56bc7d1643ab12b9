"""``save_state(async_save=True)`` under FSDP2: the shards go through DCP's ``async_save`` on the
core's background gloo group while training goes on (issue 17, item 9)."""

from __future__ import annotations

import json

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def async_sharded(directory: str) -> dict[str, object]:
    from accelerate_core import Accelerator

    accelerator = Accelerator(cpu=True, backend="fsdp")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 1))
    model, optimizer = accelerator.prepare(model, torch.optim.Adam(model.parameters(), lr=0.1))

    def step() -> None:
        accelerator.backward(model(torch.ones(4, 8)).sum())
        optimizer.step()
        optimizer.zero_grad()

    import torch.distributed.checkpoint as dcp

    calls = []
    real_async_save = dcp.async_save

    def counted(*args, **kwargs):  # the real function, counted: the backend's path was taken
        calls.append(kwargs.get("process_group"))
        return real_async_save(*args, **kwargs)

    dcp.async_save = counted
    step()
    saved = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}
    accelerator.save_state(directory, async_save=True)
    for _ in range(3):
        step()  # reduce-scatters on the default group while DCP coordinates on its own
    changed = accelerator.get_state_dict(model)
    accelerator.load_state(directory)
    restored = accelerator.get_state_dict(model)
    import torch.distributed as dist

    return {
        "dcp_async_save": [group is not None and group != dist.group.WORLD for group in calls],
        "changed": any(not torch.equal(changed[k], v) for k, v in saved.items()),
        "restored": all(torch.equal(restored[k], v) for k, v in saved.items()),
    }


def test_fsdp_saves_its_shards_in_the_background(tmp_path):
    results = run_distributed(async_sharded, str(tmp_path / "c"), timeout=240)
    # one DCP async_save per save, on the background group; full weights live on rank 0
    assert results[0] == {"dcp_async_save": [True], "changed": True, "restored": True}
    assert results[1]["dcp_async_save"] == [True]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["backend_objects"] == ["model_0", "optimizer_0"]
    assert "fsdp_sharded/.metadata" in manifest["files"]
    assert sum(name.startswith("fsdp_sharded/") for name in manifest["files"]) >= 3

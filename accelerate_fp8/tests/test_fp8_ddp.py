"""fp8 (torchao) under DDP on 2 real processes: converted before wrapping, in sync, resumable."""

from __future__ import annotations

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def fp8_under_ddp(directory: str) -> dict[str, object]:
    import fp8_testing_utils as utils

    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state
    from accelerate_fp8 import converted_layer_count

    def run(stop_after: int | None, resume: bool) -> dict[str, object]:
        reset_state(destroy_process_group=False)
        accelerator = Accelerator(cpu=True, mixed_precision="fp8")
        torch.manual_seed(0)
        model = utils.Net()
        optimizer = torch.optim.AdamW(model.parameters(), lr=utils.LR)
        inputs = torch.randn(8 * utils.BATCH, 32, generator=torch.Generator().manual_seed(1))
        targets = torch.randn(8 * utils.BATCH, 16, generator=torch.Generator().manual_seed(2))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(inputs, targets), batch_size=utils.BATCH, shuffle=True
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if resume:
            accelerator.load_state(directory)
        losses, steps = [], 0
        for _ in range(loader.iteration, 2):
            for x, y in loader:
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                steps += 1
                if stop_after is not None and steps == stop_after:
                    accelerator.save_state(directory)
                    return {}
        return {
            "backend": accelerator.backend,
            "converted": converted_layer_count(model),
            "losses": losses,
            "weights": {k: v.clone() for k, v in accelerator.get_state_dict(model).items()},
        }

    full = run(None, False)
    run(3, False)
    resumed = run(None, True)
    full["resumed_equal"] = all(
        torch.equal(resumed["weights"][k], v) for k, v in full["weights"].items()
    )
    return full


def test_fp8_under_ddp_converts_trains_in_sync_and_resumes_exactly(tmp_path):
    results = run_distributed(fp8_under_ddp, str(tmp_path), timeout=240)
    for result in results:
        assert result["backend"] == "ddp"
        assert result["converted"] == 4  # found through the DDP wrapper
        assert result["losses"][-1] < result["losses"][0]
        assert result["resumed_equal"]
    for name, tensor in results[0]["weights"].items():
        assert torch.equal(tensor, results[1]["weights"][name]), name

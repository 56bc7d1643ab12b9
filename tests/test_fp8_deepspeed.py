"""fp8 (torchao) under DeepSpeed ZeRO-2 on 2 processes: converted before the engine, trains, in
sync. The engine runs in fp32 around the fp8 matmuls (DeepSpeed owns precision)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from accelerate_core.testing import run_distributed

pytest.importorskip("accelerate_deepspeed")
pytest.importorskip("accelerate_fp8")
pytestmark = pytest.mark.multiprocess
FP8_TESTS = str(Path(__file__).resolve().parents[1] / "accelerate_fp8" / "tests")


def fp8_zero2() -> dict[str, object]:
    sys.path.insert(0, FP8_TESTS)
    import fp8_testing_utils as utils

    from accelerate_core import Accelerator
    from accelerate_fp8 import converted_layer_count

    accelerator = Accelerator(
        cpu=True, backend="deepspeed", mixed_precision="fp8", backend_options={"zero_stage": 2}
    )
    torch.manual_seed(0)
    model = utils.Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=utils.LR)
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(128, 32, generator=generator), torch.randn(128, 16)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, targets), batch_size=16
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses = []
    for _ in range(4):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    weights = accelerator.get_state_dict(model)
    return {
        "converted": converted_layer_count(model),
        "losses": losses,
        "weights": {k: v.clone() for k, v in weights.items()},
    }


@pytest.mark.timeout(420)  # DeepSpeed start-up on 2 busy cores: the run's own limit is 400 s
def test_fp8_under_deepspeed_zero2():
    results = run_distributed(fp8_zero2, timeout=400)
    for result in results:
        assert result["converted"] == 4
        assert result["losses"][-1] < result["losses"][0]
    assert results[0]["weights"], "the main process gathers the full weights"

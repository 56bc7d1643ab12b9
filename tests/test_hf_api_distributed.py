"""HF's API on 2 real processes (gloo on CPU): one run, shared by the assertions below.

Triggers, ``reduce`` max/min, the scheduler rule (``num_processes`` schedule steps per update,
one with ``split_batches``), ``LocalSGD`` averaging, ``DistributedDataParallelKwargs`` reaching
DDP, ``fsdp_plugin`` selecting FSDP, ``torch.compile`` under DDP, ``get_logger``.
"""

from __future__ import annotations

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def _fresh(**kwargs):
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    return Accelerator(cpu=True, **kwargs)


def _loader(samples: int = 16, batch_size: int = 2):
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=batch_size)


def _schedule_steps(**kwargs) -> dict:
    """Updates, and how far a StepLR went, for one epoch of 16 samples (8 batches of 2)."""
    accelerator = _fresh(**kwargs)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model, optimizer, scheduler, loader = accelerator.prepare(
        model, optimizer, scheduler, _loader()
    )
    updates = 0
    for x, y in loader:
        with accelerator.accumulate(model):
            accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
            updates += accelerator.sync_gradients
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return {"updates": updates, "last_epoch": scheduler.scheduler.last_epoch,
            "lr": scheduler.get_last_lr()[0]}  # fmt: skip


def _local_sgd() -> dict:
    from accelerate_core.local_sgd import LocalSGD

    accelerator = _fresh()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer, loader = accelerator.prepare(model, optimizer, _loader(8))
    out: dict = {"differ_before": [], "average": [], "after": []}
    with LocalSGD(accelerator=accelerator, model=model, local_sgd_steps=2) as local_sgd:
        for x, y in loader:
            accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
            optimizer.step()
            optimizer.zero_grad()
            weights = accelerator.gather(model.module.weight.detach().clone())  # (2, 3)
            out["differ_before"].append(not torch.equal(weights[0], weights[1]))
            out["average"].append(weights.mean(dim=0))
            local_sgd.step()
            out["after"].append(model.module.weight.detach().clone()[0])
    out["num_steps"] = local_sgd.num_steps
    return out


def _ddp_kwargs() -> dict:
    from accelerate_core.utils import DDPCommunicationHookType, DistributedDataParallelKwargs

    handler = DistributedDataParallelKwargs(
        find_unused_parameters=True, comm_hook=DDPCommunicationHookType.FP16
    )
    accelerator = _fresh(kwargs_handlers=[handler])
    model = accelerator.prepare(torch.nn.Linear(3, 1))
    model(torch.ones(2, 3)).sum().backward()
    return {
        "type": type(model).__name__,
        "find_unused_parameters": model.find_unused_parameters,
        "comm_hook": getattr(model, "_comm_hooks", [(None, None)])[0][0].__name__,
        "options": accelerator.plugin_context.backend_options,
    }


def _gradient_sync() -> dict:
    """Are the gradients equal on both ranks (synchronised) after each way of calling backward?"""
    from accelerate_core.utils import GradientAccumulationPlugin

    def synced(accelerator, model) -> bool:
        grads = accelerator.gather(model.module.weight.grad.detach().clone())
        return torch.equal(grads[0], grads[1])

    out = {}
    accelerator = _fresh()
    torch.manual_seed(0)
    model = accelerator.prepare(torch.nn.Linear(3, 1))
    x = torch.full((2, 3), accelerator.process_index + 1.0)  # different data on each rank
    with accelerator.no_sync(model):
        model(x).sum().backward()
    out["no_sync"] = synced(accelerator, model)
    with accelerator.no_sync(model):
        loss = model(x).sum()
        with accelerator.trigger_sync_in_backward(model):
            accelerator.backward(loss)
    out["triggered"] = synced(accelerator, model)

    plugin = GradientAccumulationPlugin(num_steps=2, sync_each_batch=True)
    for each_batch in (False, True):
        plugin.sync_each_batch = each_batch
        accelerator = _fresh(gradient_accumulation_plugin=plugin)
        model = accelerator.prepare(torch.nn.Linear(3, 1))
        with accelerator.accumulate(model):  # the first micro-step of two
            accelerator.backward(model(x).sum())
        out[f"micro_step_sync_each_batch={each_batch}"] = synced(accelerator, model)
    return out


def _compiled(dynamo_backend: str | None) -> dict:
    accelerator = _fresh(dynamo_backend=dynamo_backend)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer, loader = accelerator.prepare(model, optimizer, _loader(8))
    losses = []
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {
        "losses": losses,
        "compiled": getattr(accelerator.unwrap_model(model), "_compiled_call_impl", None)
        is not None,
        "type": type(model).__name__,
        "state_dict_keys": sorted(accelerator.get_state_dict(model)),
        "unwrapped_keys": sorted(accelerator.unwrap_model(model).state_dict()),
        "weights": {k: v.clone() for k, v in accelerator.get_state_dict(model).items()},
    }


def hf_behaviours() -> dict:
    import logging

    from accelerate_core.logging import get_logger
    from accelerate_core.utils import FullyShardedDataParallelPlugin

    accelerator = _fresh()
    rank = accelerator.process_index
    out: dict = {"distributed_type": accelerator.distributed_type.value}
    if rank == 1:
        accelerator.set_trigger()
    out["trigger"] = [accelerator.check_trigger(), accelerator.check_trigger()]
    value = torch.tensor([rank + 1.0, -rank])
    out["max"] = accelerator.reduce(value, "max").tolist()
    out["min"] = accelerator.reduce(value, "min").tolist()

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("hf_dist").addHandler(handler)
    logger = get_logger("hf_dist", log_level="INFO")
    logger.info("main only")
    logger.info("everyone", main_process_only=False)
    logger.info("ordered", in_order=True)
    out["logged"] = records

    out["schedule"] = _schedule_steps()
    out["schedule_accumulated"] = _schedule_steps(gradient_accumulation_steps=2)
    out["schedule_split"] = _schedule_steps(split_batches=True)
    out["local_sgd"] = _local_sgd()
    out["gradient_sync"] = _gradient_sync()
    out["ddp_kwargs"] = _ddp_kwargs()
    fsdp = _fresh(fsdp_plugin=FullyShardedDataParallelPlugin(sharding_strategy="SHARD_GRAD_OP"))
    out["fsdp"] = (fsdp.backend, fsdp.distributed_type.value,
                   fsdp.plugin_context.backend_options)  # fmt: skip
    out["eager"] = _compiled(None)
    out["compiled"] = _compiled("aot_eager")
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return run_distributed(hf_behaviours, nprocs=2, timeout=600)


def test_distributed_type_triggers_and_reductions(ranks):
    for out in ranks:
        assert out["distributed_type"] == "MULTI_CPU"
        assert out["trigger"] == [True, False]  # rank 1 set it; both see it once
        assert out["max"] == [2.0, 0.0] and out["min"] == [1.0, -1.0]
    assert ranks[0]["logged"] == ["[RANK 0] main only", "[RANK 0] everyone", "[RANK 0] ordered"]
    assert ranks[1]["logged"] == ["[RANK 1] everyone", "[RANK 1] ordered"]


def test_a_prepared_scheduler_steps_once_per_process_after_each_update(ranks):
    """HF's rule: 8 batches of 2 per epoch over 2 processes = 4 updates -> 8 schedule steps."""
    for out in ranks:
        assert out["schedule"] == {"updates": 4, "last_epoch": 8, "lr": 0.5**8}
        assert out["schedule_accumulated"] == {"updates": 2, "last_epoch": 4, "lr": 0.5**4}
        # split_batches: each batch of 2 is split, 8 updates of the global batch, one step each
        assert out["schedule_split"] == {"updates": 8, "last_epoch": 8, "lr": 0.5**8}


def test_local_sgd_trains_apart_and_averages_every_k_steps(ranks):
    for out in ranks:
        local = out["local_sgd"]
        assert local["num_steps"] == 2
        assert local["differ_before"] == [True, True]  # no gradient sync inside LocalSGD
        torch.testing.assert_close(local["after"][1], local["average"][1])  # averaged at 2
        assert not torch.equal(local["after"][0], local["average"][0])  # not at step 1
    torch.testing.assert_close(ranks[0]["local_sgd"]["after"][1], ranks[1]["local_sgd"]["after"][1])


def test_trigger_sync_in_backward_and_sync_each_batch(ranks):
    for out in ranks:
        assert out["gradient_sync"] == {
            "no_sync": False,
            "triggered": True,
            "micro_step_sync_each_batch=False": False,
            "micro_step_sync_each_batch=True": True,
        }


def test_ddp_kwargs_reach_ddp_and_fsdp_plugin_selects_fsdp(ranks):
    for out in ranks:
        assert out["ddp_kwargs"] == {
            "type": "DistributedDataParallel",
            "find_unused_parameters": True,
            "comm_hook": "fp16_compress_hook",
            "options": {"find_unused_parameters": True, "comm_hook": "fp16"},
        }
        assert out["fsdp"] == ("fsdp", "FSDP", {"reshard_after_forward": False})


def test_compile_under_ddp_gives_the_eager_loss_and_clean_keys(ranks):
    keys = ["0.bias", "0.weight", "2.bias", "2.weight"]
    for out in ranks:
        eager, compiled = out["eager"], out["compiled"]
        assert compiled["compiled"] and not eager["compiled"]
        assert compiled["type"] == "DistributedDataParallel"
        assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-5)
        assert compiled["state_dict_keys"] == keys == compiled["unwrapped_keys"]
        for name in keys:
            torch.testing.assert_close(compiled["weights"][name], eager["weights"][name])

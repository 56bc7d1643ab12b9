"""Silently wrong results become errors (issue 17, item 5), on one process and on two (DDP).

Collectives of non-tensors, a model prepared twice, an optimizer over parameters of no prepared
model, ``accumulate()`` of a model that was not prepared.
"""

from __future__ import annotations

import pytest
import torch

from accelerate_core.testing import run_distributed

GATHER_STR = (
    "gather() takes tensors (nested in lists, tuples, dicts or dataclasses), got str 'x'; "
    "gather other objects with gather_object()"
)


def collectives_of_non_tensors() -> dict[str, str]:
    from accelerate_core import Accelerator
    from accelerate_core.collectives import broadcast

    accelerator = Accelerator(cpu=True)
    calls = {
        "gather str": lambda: accelerator.gather("x"),
        "gather int": lambda: accelerator.gather(5),
        "gather mixed": lambda: accelerator.gather({"a": torch.ones(1), "b": ["s"]}),
        "reduce float": lambda: accelerator.reduce(3.0),
        "broadcast str": lambda: broadcast("x"),
        "pad None": lambda: accelerator.pad_across_processes([torch.ones(1), None]),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "no error"
        except TypeError as exc:
            out[name] = str(exc)
    # gather_for_metrics gathers anything that is not all tensors as objects, as HF does.
    rank = accelerator.process_index
    out["metrics mixed"] = repr(accelerator.gather_for_metrics([{"id": f"r{rank}"}]))
    with_tensor = {"id": f"r{rank}", "score": torch.tensor([rank])}  # a tensor among other data
    out["metrics with a tensor"] = repr(accelerator.gather_for_metrics(with_tensor))
    out["after"] = repr(accelerator.gather(torch.tensor([rank])).tolist())  # group still works
    return out


def check_collective_errors(results: list[dict[str, str]], world: int) -> None:
    for out in results:
        assert out["gather str"] == GATHER_STR
        assert (
            out["gather int"].startswith("gather() takes tensors")
            and "got int 5;" in out["gather int"]
        )
        assert (
            "got str 's' at ['b'][0]; gather other objects with gather_object()"
            in (out["gather mixed"])
        )
        assert out["reduce float"].startswith("reduce() takes tensors")
        assert "got float 3.0; put numbers in a tensor first" in out["reduce float"]
        assert out["broadcast str"].endswith(
            "got str 'x'; broadcast other objects with broadcast_object_list()"
        )
        assert "got NoneType None at [1]; pad tensors only" in out["pad None"]
        assert out["metrics mixed"] == repr([{"id": f"r{r}"} for r in range(world)])
        expected = [{"id": f"r{r}", "score": torch.tensor([r])} for r in range(world)]
        assert out["metrics with a tensor"] == repr(expected)
        assert out["after"] == repr(list(range(world)))


def test_collectives_of_non_tensors_raise_on_one_process():
    check_collective_errors([collectives_of_non_tensors()], 1)


@pytest.mark.multiprocess
def test_collectives_of_non_tensors_raise_on_every_rank():
    check_collective_errors(run_distributed(collectives_of_non_tensors), 2)


def misuses() -> dict[str, object]:
    from torch.nn.parallel import DistributedDataParallel

    from accelerate_core import Accelerator, ConfigurationError

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    out: dict[str, object] = {}
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    prepared = accelerator.prepare(model)
    again, inner_again = accelerator.prepare(prepared), accelerator.prepare(model)
    out["same object"] = again is prepared and inner_again is prepared
    out["wrapped once"] = not isinstance(
        accelerator.unwrap_model(prepared), DistributedDataParallel
    )
    out["models"] = len(accelerator._models)
    copy = torch.nn.Linear(3, 1)  # an optimizer built from another instance of the model
    for name, call in {
        "optimizer of another model": lambda: accelerator.prepare(
            torch.optim.SGD(copy.parameters(), lr=0.1)
        ),
        "optimizer with a free tensor": lambda: accelerator.prepare(
            torch.optim.SGD([*model.parameters(), torch.nn.Parameter(torch.ones(2))], lr=0.1)
        ),
        "accumulate raw model": lambda: accelerator.accumulate(copy),
        "accumulate inner module": lambda: accelerator.accumulate(
            accelerator.unwrap_model(prepared)
        ),
    }.items():
        try:
            call()
            out[name] = "no error"
        except ConfigurationError as exc:
            out[name] = str(exc)
    optimizer = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=0.1))
    out["optimizers"] = len(accelerator._optimizers)
    out["optimizer again"] = accelerator.prepare(optimizer.optimizer) is optimizer
    with accelerator.accumulate(prepared):  # the prepared model is accepted
        accelerator.backward(prepared(torch.ones(2, 3)).sum())
    return out


def check_misuses(results: list[dict[str, object]], world: int) -> None:
    for out in results:
        assert out["same object"] is True and out["wrapped once"] is True
        assert out["models"] == 1 and out["optimizer again"] is True
        assert out["optimizers"] == (2 if world == 1 else 1)  # the free-tensor one on 1 process
        assert out["optimizer of another model"] == (
            "prepare(): SGD holds 2 of its 2 parameter(s) outside every prepared model (shapes "
            "(1, 3), (1,)): it would update tensors the prepared models do not use, and train "
            "nothing. Build the optimizer from the parameters of the model you prepare "
            "(model.parameters()), and prepare that model first or in the same prepare() call"
        )
        free = out["optimizer with a free tensor"]
        if world == 1:
            assert free == "no error"  # one process may optimize free tensors, as in torch
        else:
            assert free.startswith("prepare(): SGD holds 1 of its 3 parameter(s) outside")
            assert "synchronised by no one and the processes would drift apart" in free
        assert out["accumulate raw model"].startswith(
            "accumulate() got a model that was not prepared (Linear): pass the object "
            "accelerator.prepare() returned for it"
        )
        inner = out["accumulate inner module"]
        if world == 1:  # with one process the prepared model is the module itself
            assert inner == "no error"
        else:
            assert "(Linear): it is the module inside a prepared model; pass the prepared" in inner


def test_misuses_on_one_process():
    check_misuses([misuses()], 1)


@pytest.mark.multiprocess
def test_misuses_raise_on_every_rank_under_ddp():
    check_misuses(run_distributed(misuses), 2)

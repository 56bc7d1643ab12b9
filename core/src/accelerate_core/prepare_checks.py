"""Checks that turn silently wrong training into errors at ``prepare`` / ``accumulate``.

* A model prepared twice is the same prepared object, never wrapped twice (a DDP inside a DDP
  synchronises twice and its state dict gains a ``module.`` prefix).
* An optimizer must hold parameters of the prepared models: one built from another copy of the
  model would step tensors the forward never uses; with several processes, parameters outside
  every prepared model have gradients no one synchronises.
* ``accumulate()`` must get the prepared models: a model the library does not know is not put in
  ``no_sync`` (or is synchronised by no one), and the processes drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from .errors import ConfigurationError


def find_prepared(
    obj: Any, models: Iterable[Any], optimizers: Iterable[Any], unwrap: Callable[[Any], Any]
) -> Any:
    """The prepared object ``obj`` already became (a model or a raw optimizer), else None."""
    if isinstance(obj, torch.nn.Module):
        for model in models:
            if obj is model or obj is unwrap(model):
                return model
    elif isinstance(obj, torch.optim.Optimizer):
        for optimizer in optimizers:
            if getattr(optimizer, "optimizer", None) is obj:
                return optimizer
    return None


def _describe(params: list[torch.Tensor]) -> str:
    shapes = ", ".join(str(tuple(p.shape)) for p in params[:3])
    return shapes + (f" and {len(params) - 3} more" if len(params) > 3 else "")


def check_optimizer_parameters(
    optimizers: Iterable[Any], models: list[Any], distributed: bool
) -> None:
    """Refuse an optimizer that would train nothing, or let the processes drift apart.

    With models prepared, an optimizer holding none of their parameters trains nothing they
    use. With several processes, any parameter outside the prepared models has gradients no one
    synchronises. (One process may still optimize free tensors, as with plain torch.)
    """
    known = {id(p) for model in models for p in model.parameters()}
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Optimizer):
            continue  # a backend's placeholder (an optimizer the engine builds from a config)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        outside = [p for p in params if id(p) not in known]
        if not outside:
            continue
        if models and len(outside) == len(params):
            why = "it would update tensors the prepared models do not use, and train nothing"
        elif distributed:
            why = (
                "their gradients would be synchronised by no one and the processes would drift "
                "apart"
            )
        else:
            continue
        raise ConfigurationError(
            f"prepare(): {type(optimizer).__name__} holds {len(outside)} of its {len(params)} "
            f"parameter(s) outside every prepared model (shapes {_describe(outside)}): {why}. "
            "Build the optimizer from the parameters of the model you prepare "
            "(model.parameters()), and prepare that model first or in the same prepare() call"
        )


def check_prepared(
    models: Iterable[Any], prepared: list[Any], unwrap: Callable[[Any], Any]
) -> None:
    """``accumulate()``'s check, on every micro-step: no allocation, identity tests only."""
    for model in models:
        for known in prepared:
            if model is known:
                break
        else:
            raise not_prepared_error(model, prepared, unwrap)


def not_prepared_error(model: Any, prepared: Iterable[Any], unwrap: Callable[[Any], Any]) -> Any:
    """The error for ``accumulate()`` given a model that ``prepare`` did not return."""
    inside = any(model is unwrap(m) for m in prepared)
    why = (
        "it is the module inside a prepared model; pass the prepared model itself"
        if inside
        else "pass the object accelerator.prepare() returned for it"
    )
    return ConfigurationError(
        f"accumulate() got a model that was not prepared ({type(model).__name__}): {why}. "
        "Otherwise its gradients are synchronised on every micro-step, or by no one, and the "
        "processes drift apart"
    )

"""2 real processes (torchrun, gloo, DeepSpeed's CPU accelerator): ZeRO 0-3 train like DDP.

Each launch batches several checks: starting DeepSpeed costs seconds per process.
"""

from __future__ import annotations

import deepspeed_recipes as R
import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]
TOLERANCE = 1e-5


def zero_stages_against_ddp() -> dict[str, object]:
    """ZeRO 0/1/2/3 (fp32, accumulation 5, clipping) next to hand-written DDP, one process group."""
    out: dict[str, dict] = {}
    weights = {}
    for stage in (0, 1, 2, 3):
        # Tiny parameters stay whole under ZeRO-3 unless the persistence threshold is 0.
        config = {"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
        accelerator = R.new_accelerator(backend_options={"config": config})
        model, optimizer, scheduler, inputs, targets = R.build()
        data = R.loader(inputs, targets)
        model, optimizer, scheduler, data = accelerator.prepare(model, optimizer, scheduler, data)
        run = R.train(accelerator, model, optimizer, scheduler, data)
        ours = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}
        facts = {
            "wrapped": type(model).__name__,
            "zero_stage": model.zero_optimization_stage(),
            "batches": run["batches"],
            "updates": model.global_steps,
            "lr": scheduler.get_last_lr()[0],
            "norms": run["norms"],
            "optimizer_bytes": R.optimizer_state_bytes(model),
            "parameter_bytes": R.parameter_bytes(model),
            "no_autocast": accelerator._autocast is None and accelerator.scaler is None,
        }
        weights[str(stage)] = ours
        out[str(stage)] = facts
    reference, norms = R.hand_written_ddp()  # in the process group the Accelerators started
    for stage, ours in weights.items():
        out[stage]["reference_norms"] = norms
        if accelerator.is_main_process:
            out[stage]["max_difference"] = R.max_difference(ours, reference)
    return out


def test_zero_stages_match_hand_written_ddp_and_partition_state():
    results = run_distributed(zero_stages_against_ddp, timeout=600)
    main = results[0]
    updates = R.EPOCHS * 3  # 12 batches per rank and epoch, accumulation 5: steps at 5, 10, 12
    for rank_results in results:
        for stage, facts in rank_results.items():
            assert facts["wrapped"] == "DeepSpeedEngine" and facts["zero_stage"] == int(stage)
            assert facts["batches"] == R.EPOCHS * 12 and facts["updates"] == updates, facts
            # clip_grad_norm_ gives the global pre-clipping norm of each update, as torch does
            assert facts["norms"] == pytest.approx(facts["reference_norms"], rel=1e-5)
            assert len(facts["norms"]) == updates  # one per update, none on micro-steps
            assert facts["lr"] == pytest.approx(R.LR * R.GAMMA ** (updates // R.STEP_SIZE))
            assert facts["no_autocast"]
    for stage in "0123":
        assert main[stage]["max_difference"] < TOLERANCE, (stage, main[stage])
    print("max |w - w_ddp| by stage:", {s: main[s]["max_difference"] for s in "0123"})
    print("optimizer-state bytes vs stage 0:", {
        s: main[s]["optimizer_bytes"] / main["0"]["optimizer_bytes"] for s in "123"
    }, "parameter bytes vs stage 0:", {
        s: main[s]["parameter_bytes"] / main["0"]["parameter_bytes"] for s in "123"
    })  # fmt: skip
    for rank_results in results:
        base = rank_results["0"]
        for stage in "12":  # optimizer state partitioned over the 2 ranks
            ratio = rank_results[stage]["optimizer_bytes"] / base["optimizer_bytes"]
            assert 0.45 < ratio < 0.56, (stage, ratio)
        assert rank_results["1"]["parameter_bytes"] == base["parameter_bytes"]
        ratio = rank_results["3"]["parameter_bytes"] / base["parameter_bytes"]
        assert 0.45 < ratio < 0.56, ratio  # parameters partitioned under ZeRO-3
        ratio = rank_results["3"]["optimizer_bytes"] / base["optimizer_bytes"]
        assert 0.45 < ratio < 0.56, ratio


def config_objects_precision_and_clipping() -> dict[str, object]:
    """Optimizer/scheduler from the DeepSpeed config ("auto" filled), bf16, clipping errors."""
    import contextlib
    import io

    from accelerate_core import ConfigurationError
    from accelerate_deepspeed import DummyOptim, DummyScheduler, resolved_config

    out: dict[str, object] = {}
    # 1. The config's AdamW and StepLR, every value the library knows left "auto".
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "weight_decay": "auto", "torch_adam": True},
        },
        "scheduler": {"type": "StepLR", "params": {"step_size": "auto", "gamma": R.GAMMA}},
    }
    accelerator = R.new_accelerator(
        backend_options={"config": config, "gradient_clipping": R.MAX_NORM, "print_config": True}
    )
    model, _, _, inputs, targets = R.build()
    optimizer = DummyOptim(model.parameters(), lr=R.LR, weight_decay=0.01)
    scheduler = DummyScheduler(optimizer, step_size=R.STEP_SIZE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model, optimizer, scheduler, data = accelerator.prepare(
            model, optimizer, scheduler, R.loader(inputs, targets)
        )
    out["printed"] = printed.getvalue()
    out["resolved"] = resolved_config(model)
    out["optimizer"] = type(model.optimizer.optimizer).__name__
    R.train(accelerator, model, optimizer, scheduler, data)
    out["lr"] = scheduler.get_last_lr()[0]
    config_weights = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}

    # 2. A DeepSpeed scheduler (WarmupLR) whose warmup comes from DummyScheduler.
    warmup = {
        "zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": 0.1, "torch_adam": True}},
        "scheduler": {
            "type": "WarmupLR",
            "params": {"warmup_max_lr": "auto", "warmup_min_lr": "auto",
                       "warmup_num_steps": "auto", "warmup_type": "linear"},
        },
    }  # fmt: skip
    accelerator = R.new_accelerator(backend_options={"config": warmup})
    model, _, _, inputs, targets = R.build()
    optimizer = DummyOptim(model.parameters())
    scheduler = DummyScheduler(optimizer, warmup_num_steps=4)
    model, optimizer, scheduler, data = accelerator.prepare(
        model, optimizer, scheduler, R.loader(inputs, targets)
    )
    lrs = []
    for x, y in data:
        with accelerator.accumulate(model):
            accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
            optimizer.step()
            scheduler.step()
            if accelerator.sync_gradients:
                lrs.append(scheduler.get_last_lr()[0])
    out["warmup_lrs"] = lrs

    # 3. bf16 belongs to the engine: no autocast, no scaler of the core; parameters in bf16.
    accelerator = R.new_accelerator(mixed_precision="bf16", backend_options={"zero_stage": 1})
    model, optimizer, scheduler, inputs, targets = R.build()
    model, optimizer, scheduler, data = accelerator.prepare(
        model, optimizer, scheduler, R.loader(inputs, targets)
    )
    losses = []
    for _ in range(3):
        for x, y in data:
            with accelerator.accumulate(model):
                output = model(x)  # fp32 in, fp32 out: the script is the fp32 one
                out["bf16_output"] = str(output.dtype)
                loss = torch.nn.functional.mse_loss(output, y)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss))
    out["bf16"] = {
        "autocast": accelerator._autocast, "scaler": accelerator.scaler,
        "param_dtype": str(next(model.parameters()).dtype), "bf16": model.bfloat16_enabled(),
        "first_loss": sum(losses[:12]) / 12, "last_loss": sum(losses[-12:]) / 12,
        "saved_dtype": str(next(iter(accelerator.get_state_dict(model).values())).dtype),
    }  # fmt: skip

    # 4. Clipping: the first clip_grad_norm_ sets it; contradictions and by-value are errors.
    accelerator = R.new_accelerator(gradient_accumulation_steps=1)
    model, optimizer, _, inputs, targets = R.build()
    model, optimizer, _ = accelerator.prepare(model, optimizer, R.loader(inputs, targets))
    errors: dict[str, str] = {}

    def attempt(name: str, call) -> None:
        try:
            call()
        except (ConfigurationError, RuntimeError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"

    accelerator.backward(torch.nn.functional.mse_loss(model(inputs), targets))
    norm = accelerator.clip_grad_norm_(model.parameters(), 1.0)
    attempt("read_early", lambda: float(norm))
    attempt("other_max_norm", lambda: accelerator.clip_grad_norm_(model.parameters(), 2.0))
    attempt("norm_type", lambda: accelerator.clip_grad_norm_(model.parameters(), 1.0, 1.0))
    attempt("by_value", lambda: accelerator.clip_grad_value_(model.parameters(), 0.1))
    optimizer.step()
    out["engine_clipping"] = model.gradient_clipping()
    out["norm"] = float(norm)
    accelerator = R.new_accelerator(backend_options={"gradient_clipping": 0.5})
    model, optimizer, _, inputs, targets = R.build()
    model, optimizer, _ = accelerator.prepare(model, optimizer, R.loader(inputs, targets))
    accelerator.backward(torch.nn.functional.mse_loss(model(inputs), targets))
    attempt("against_option", lambda: accelerator.clip_grad_norm_(model.parameters(), 1.0))
    out["errors"] = errors
    out["reference"] = R.hand_written_ddp()[0]
    out["config_weights"] = config_weights
    return out


def test_config_optimizer_scheduler_bf16_and_clipping_rules():
    results = run_distributed(config_objects_precision_and_clipping, timeout=600)
    for rank, out in enumerate(results):
        # 1. the config's optimizer and scheduler train exactly like the hand-written recipe
        assert out["optimizer"] == "AdamW"
        assert R.max_difference(out["config_weights"], out["reference"]) < TOLERANCE
        resolved = out["resolved"]
        assert resolved["train_micro_batch_size_per_gpu"] == R.BATCH
        assert resolved["gradient_accumulation_steps"] == R.ACCUMULATION
        assert resolved["train_batch_size"] == R.BATCH * R.ACCUMULATION * 2
        assert resolved["gradient_clipping"] == R.MAX_NORM
        assert resolved["optimizer"]["params"] == {
            "lr": R.LR, "weight_decay": 0.01, "torch_adam": True
        }  # fmt: skip
        assert resolved["scheduler"]["params"] == {"step_size": R.STEP_SIZE, "gamma": R.GAMMA}
        assert resolved["zero_optimization"]["reduce_bucket_size"] == 512  # the model's, aligned
        assert resolved["bf16"] == {"enabled": False} and resolved["fp16"] == {"enabled": False}
        assert out["lr"] == pytest.approx(R.LR * R.GAMMA**3)
        assert ('"train_batch_size": 40' in out["printed"]) == (rank == 0)
        # 2. WarmupLR: linear from 0 to the optimizer's lr (0.1) in 4 updates (DeepSpeed's count)
        assert out["warmup_lrs"] == pytest.approx([0.0, 0.025, 0.05])
        # 3. bf16 by the engine only
        bf16 = out["bf16"]
        assert bf16["autocast"] is None and bf16["scaler"] is None and bf16["bf16"]
        assert bf16["param_dtype"] == "torch.bfloat16" == bf16["saved_dtype"]
        assert out["bf16_output"] == "torch.float32"
        assert bf16["last_loss"] < 0.9 * bf16["first_loss"]  # it trains
        # 4. clipping
        assert out["engine_clipping"] == 1.0 and out["norm"] > 0
        errors = out["errors"]
        assert (
            "read the value returned by clip_grad_norm_ after optimizer.step()"
            in (errors["read_early"])
        )
        assert (
            "clip_grad_norm_(max_norm=2.0) contradicts gradient_clipping=1.0 set by an "
            in (errors["other_max_norm"])
        )
        assert "L2 norm" in errors["norm_type"]
        assert "cannot clip gradients by value" in errors["by_value"]
        assert "contradicts gradient_clipping=0.5 set by" in errors["against_option"]


def one_process_and_other_models() -> dict[str, object]:
    """One process (DeepSpeed still needs a process group), models without an optimizer."""
    import torch.distributed as dist

    from accelerate_core import ConfigurationError

    out: dict[str, object] = {}
    accelerator = R.new_accelerator(gradient_accumulation_steps=1)
    try:
        accelerator.backward(torch.ones((), requires_grad=True))
    except ConfigurationError as exc:
        out["backward_first"] = str(exc)
    model, optimizer, _, inputs, targets = R.build()
    teacher = torch.nn.Linear(8, 1)
    model, teacher, optimizer, data = accelerator.prepare(
        model, teacher, optimizer, R.loader(inputs, targets)
    )
    evaluated = accelerator.prepare(torch.nn.Linear(8, 1))
    before = [p.detach().clone() for p in model.parameters()]
    R.train(accelerator, model, optimizer, None, data, epochs=1)
    out.update(
        engine=type(model).__name__, teacher=type(teacher).__name__,
        evaluated=type(evaluated).__name__, world=dist.get_world_size(),
        stage=model.zero_optimization_stage(), updates=model.global_steps,
        trained=all(not torch.equal(b, p) for b, p in zip(before, model.parameters())),
        unwrapped=type(accelerator.unwrap_model(model)).__name__,
    )  # fmt: skip
    try:
        accelerator.prepare(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=1.0))
    except ConfigurationError as exc:
        out["second_engine"] = str(exc)
    return out


def test_one_process_and_models_without_optimizer():
    (out,) = run_distributed(one_process_and_other_models, nprocs=1, timeout=300)
    assert "needs the engine: prepare the model and its optimizer first" in out["backward_first"]
    assert out["engine"] == "DeepSpeedEngine" and out["world"] == 1 and out["stage"] == 2
    assert out["teacher"] == out["evaluated"] == "Linear"  # not DeepSpeed's: no optimizer
    assert out["updates"] == 23 and out["trained"] and out["unwrapped"] == "Sequential"
    assert "trains one model (with one optimizer) per Accelerator" in out["second_engine"]

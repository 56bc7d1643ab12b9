"""Hugging Face Accelerate's API at HF's import paths, on one process.

Each behaviour is compared with a hand-written PyTorch loop or with exact expected values; the
multi-process behaviours (triggers, LocalSGD, the scheduler rule, DDP options, compile under DDP)
are in ``tests/test_hf_api_distributed.py``.
"""

from __future__ import annotations

import importlib
import json
import logging
import weakref
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from accelerate_core import Accelerator, ConfigurationError, PluginNotInstalledError

# --------------------------------------------------------------------------- import paths


# The names HF's examples and docs import, by module (``accelerate`` -> ``accelerate_core``).
HF_IMPORTS = {
    "accelerate_core": "Accelerator DataLoaderConfiguration DDPCommunicationHookType "
    "DeepSpeedPlugin DistributedDataParallelKwargs DistributedType FullyShardedDataParallelPlugin "
    "GradScalerKwargs InitProcessGroupKwargs PartialState ProfileKwargs AutocastKwargs "
    "find_executable_batch_size notebook_launcher skip_first_batches synchronize_rng_states",
    "accelerate_core.data_loader": "DataLoaderShard DataLoaderDispatcher skip_first_batches",
    "accelerate_core.local_sgd": "LocalSGD",
    "accelerate_core.logging": "get_logger MultiProcessAdapter",
    "accelerate_core.state": "AcceleratorState GradientState PartialState",
    "accelerate_core.utils": "AutocastKwargs DataLoaderConfiguration DDPCommunicationHookType "
    "DeepSpeedPlugin DistributedDataParallelKwargs DistributedType DummyOptim DummyScheduler "
    "FullyShardedDataParallelPlugin GradientAccumulationPlugin GradScalerKwargs "
    "InitProcessGroupKwargs KwargsHandler PrecisionType ProfileKwargs ProjectConfiguration "
    "RNGType TorchDynamoPlugin DynamoBackend broadcast broadcast_object_list "
    "extract_model_from_parallel find_executable_batch_size gather gather_object "
    "is_deepspeed_available is_xpu_available is_torch_version pad_across_processes reduce "
    "release_memory save send_to_device set_seed wait_for_everyone write_basic_config",
}


@pytest.mark.parametrize("module", sorted(HF_IMPORTS))
def test_hf_import_lines_work_after_renaming_the_module(module):
    imported = importlib.import_module(module)
    missing = [name for name in HF_IMPORTS[module].split() if not hasattr(imported, name)]
    assert missing == []


def test_backend_names_come_from_the_backend_packages():
    from accelerate_core.utils import DDPCommunicationHookType, DeepSpeedPlugin, DummyOptim
    from accelerate_core.utils import FullyShardedDataParallelPlugin as FSDPPlugin

    assert DDPCommunicationHookType.__module__ == "accelerate_ddp.hf_names"
    assert FSDPPlugin.__module__ == "accelerate_fsdp.hf_plugin"
    assert DeepSpeedPlugin.__module__ == "accelerate_deepspeed.hf_plugin"
    assert DummyOptim.__module__ == "accelerate_deepspeed.placeholders"


def test_a_backend_name_imports_without_its_backend_and_says_what_to_install():
    from accelerate_core.plugins import PluginManager, set_plugin_manager

    set_plugin_manager(PluginManager(load_entry_points=False))  # only the core is installed
    from accelerate_core import FullyShardedDataParallelPlugin
    from accelerate_core.utils import DDPCommunicationHookType, DeepSpeedPlugin

    with pytest.raises(PluginNotInstalledError) as error:
        FullyShardedDataParallelPlugin(fsdp_version=2)
    assert str(error.value).startswith(
        "FullyShardedDataParallelPlugin is defined by the 'fsdp' backend: backend 'fsdp' is not "
        "installed; pip install accelerate-fsdp"
    )
    with pytest.raises(PluginNotInstalledError, match="pip install accelerate-deepspeed"):
        DeepSpeedPlugin()
    with pytest.raises(PluginNotInstalledError, match="pip install accelerate-ddp"):
        DDPCommunicationHookType.FP16  # noqa: B018 - using the name is what raises


def test_an_unknown_name_is_an_attribute_error():
    import accelerate_core.utils as utils

    with pytest.raises(AttributeError):
        utils.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        from accelerate_core import NoSuchThing  # noqa: F401


# --------------------------------------------------------------------------- distributed_type


def test_distributed_type_comes_from_the_backend_record():
    from accelerate_core.distributed_type import DistributedType, distributed_type_for

    accelerator = Accelerator(cpu=True)
    assert accelerator.distributed_type is DistributedType.NO
    assert accelerator.state.distributed_type == "NO"
    assert distributed_type_for("", True, 2, "cuda") == "MULTI_GPU"
    assert distributed_type_for("", True, 2, "cpu") == "MULTI_CPU"
    assert distributed_type_for("", True, 1, "cpu") == "NO"
    assert distributed_type_for("FSDP", True, 2, "cuda") == "FSDP"
    assert distributed_type_for("MULTI_{device}", True, 4, "xpu") == "MULTI_XPU"
    made_up = DistributedType("MULTI_EXAMPLE")  # a third-party backend's own kind
    assert made_up == "MULTI_EXAMPLE" and made_up is DistributedType("MULTI_EXAMPLE")


# --------------------------------------------------------------------------- accumulation


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _hand_written(accumulation: int) -> torch.Tensor:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    for i in range(8):
        loss = torch.nn.functional.mse_loss(model(x[i : i + 1]), y[i : i + 1])
        (loss / accumulation).backward()
        if (i + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
    return model.weight.detach().clone()


def test_settable_gradient_accumulation_steps_trains_like_a_hand_written_loop():
    accelerator = Accelerator(cpu=True)
    accelerator.gradient_accumulation_steps = 4  # as HF's automatic_gradient_accumulation.py
    assert accelerator.gradient_accumulation_steps == 4
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, DataLoader(TensorDataset(x, y))
    )
    updates = 0
    for xb, yb in loader:
        with accelerator.accumulate(model):
            accelerator.backward(torch.nn.functional.mse_loss(model(xb), yb))
            updates += accelerator.sync_gradients
            optimizer.step()
            optimizer.zero_grad()
    assert updates == 2
    torch.testing.assert_close(model.weight, _hand_written(4), rtol=0, atol=0)
    with pytest.raises(ConfigurationError, match="integer >= 1"):
        accelerator.gradient_accumulation_steps = 0


def test_gradient_accumulation_plugin_and_steps_together_are_refused():
    from accelerate_core.utils import GradientAccumulationPlugin

    with pytest.raises(ConfigurationError, match="only pass one of"):
        Accelerator(
            cpu=True,
            gradient_accumulation_steps=2,
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=2),
        )
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=3)
    )
    assert accelerator.gradient_accumulation_steps == 3


# --------------------------------------------------------------------------- batch size search


def test_find_executable_batch_size_retries_on_out_of_memory_and_frees_the_failed_try():
    from accelerate_core.utils import find_executable_batch_size

    tried, leftovers = [], []

    @find_executable_batch_size(starting_batch_size=128)
    def train(batch_size: int, scale: int) -> int:
        tried.append(batch_size)
        held = torch.ones(batch_size)
        leftovers.append(weakref.ref(held))
        cycle = {"activations": held}
        cycle["self"] = cycle  # only the garbage collector frees what a failed try kept in a cycle
        if batch_size > 60:
            # What the CUDA caching allocator raises (a RuntimeError subclass).
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if batch_size > 50:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
        return batch_size * scale

    assert train(10) == 46 * 10
    assert tried == [128, 115, 103, 92, 82, 73, 65, 58, 52, 46]  # int(b * 0.9), HF's factor
    # every failed try's memory was released (collected) before the next try
    assert all(ref() is None for ref in leftovers[:-1])


def test_find_executable_batch_size_retries_on_a_real_cpu_allocation_failure():
    """No injection: the CPU allocator itself refuses 2**62, 2**55 and 2**49 bytes (more than any
    address space), then a smaller try goes through (``torch.empty`` touches no page)."""
    from accelerate_core.utils import find_executable_batch_size

    tried = []

    @find_executable_batch_size(starting_batch_size=62)
    def allocate(batch_size: int) -> int:
        tried.append(batch_size)
        torch.empty(2**batch_size, dtype=torch.uint8)
        return batch_size

    fitted = allocate()
    assert tried[:3] == [62, 55, 49] and fitted <= 44 and tried[-1] == fitted


def test_find_executable_batch_size_lets_other_errors_through_and_stops_at_zero():
    from accelerate_core.utils import find_executable_batch_size

    @find_executable_batch_size(starting_batch_size=4)
    def broken(batch_size: int) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        broken()

    @find_executable_batch_size(starting_batch_size=2)
    def never_fits(batch_size: int) -> None:
        raise RuntimeError("XPU out of memory. Tried to allocate")

    with pytest.raises(RuntimeError, match="No executable batch size found"):
        never_fits()

    @find_executable_batch_size(starting_batch_size=8)
    def takes_batch(batch_size: int) -> int:
        return batch_size

    with pytest.raises(TypeError, match="Batch size was passed into `takes_batch`"):
        takes_batch(8)


# --------------------------------------------------------------------------- profile, save, logger


def test_profile_writes_a_chrome_trace_of_the_block(tmp_path):
    from accelerate_core.utils import ProfileKwargs

    accelerator = Accelerator(
        cpu=True,
        kwargs_handlers=[ProfileKwargs(record_shapes=True, output_trace_dir=str(tmp_path))],
    )
    with accelerator.profile() as prof:
        torch.mm(torch.ones(8, 8), torch.ones(8, 8))
    assert "aten::mm" in prof.key_averages().table()
    trace = json.loads((tmp_path / "profile_0.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "aten::mm" in names


def test_save_writes_once_with_torch_or_safetensors(tmp_path):
    from safetensors.torch import load_file

    accelerator = Accelerator(cpu=True)
    accelerator.save({"a": [1, 2]}, tmp_path / "obj.pt")
    assert torch.load(tmp_path / "obj.pt", weights_only=True) == {"a": [1, 2]}
    weight = torch.ones(2, 2)
    accelerator.save({"w": weight, "alias": weight}, tmp_path / "w.safetensors", True)
    assert list(load_file(tmp_path / "w.safetensors")) == ["w"]  # the alias is dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.pt", "w.safetensors"]


def test_get_logger_logs_on_the_main_process_and_needs_a_state(caplog):
    from accelerate_core.logging import get_logger

    logger = get_logger("hf_api_test", log_level="INFO")
    with pytest.raises(ConfigurationError, match="initialize the accelerate state"):
        logger.info("too early")
    Accelerator(cpu=True)
    with caplog.at_level(logging.INFO, logger="hf_api_test"):
        logger.info("hello", main_process_only=True)
        logger.info("ordered", in_order=True)
    assert [r.getMessage() for r in caplog.records] == ["[RANK 0] hello", "[RANK 0] ordered"]


# --------------------------------------------------------------------------- kwargs handlers


def test_kwargs_handlers_map_to_settings_and_refuse_what_cannot_be_honoured():
    from accelerate_core.utils import (
        DistributedDataParallelKwargs,
        GradScalerKwargs,
        InitProcessGroupKwargs,
    )

    accelerator = Accelerator(
        cpu=True,
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=42)),
            DistributedDataParallelKwargs(find_unused_parameters=True),  # one process: ignored
            GradScalerKwargs(init_scale=1024.0),
        ],
    )
    assert accelerator.state.timeout == timedelta(seconds=42)
    assert accelerator.plugin_context.backend_options == {}
    assert accelerator.plugin_context.precision_options == {"grad_scaler": {"init_scale": 1024.0}}
    for handlers, message in [
        ([InitProcessGroupKwargs(backend="gloo")], "process-group backend is the device's"),
        ([InitProcessGroupKwargs(init_method="tcp://x:1")], "init_method"),
        ([GradScalerKwargs(), GradScalerKwargs()], "only pass one"),
        (["not a handler"], "kwargs_handlers takes KwargsHandler objects"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            Accelerator(cpu=True, kwargs_handlers=handlers)


def test_dataloader_config_and_rng_types():
    from accelerate_core.utils import DataLoaderConfiguration

    config = DataLoaderConfiguration(even_batches=False)
    accelerator = Accelerator(cpu=True, dataloader_config=config, rng_types=["torch", "generator"])
    assert accelerator.dataloader_config is config and accelerator.even_batches is False
    assert accelerator.rng_types == ["torch", "generator"]
    with pytest.raises(ConfigurationError, match=r"contradicts dataloader_config\.split_batches"):
        Accelerator(cpu=True, dataloader_config=config, split_batches=True)
    with pytest.raises(ConfigurationError, match="unknown rng_types entry 'dice'"):
        Accelerator(cpu=True, rng_types=["dice"])


def test_fsdp_plugin_selects_fsdp_and_its_settings_become_checked_options():
    from accelerate_core.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(
        sharding_strategy="SHARD_GRAD_OP",
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["Block"],
        state_dict_type="FULL_STATE_DICT",
        mixed_precision_policy={"param_dtype": torch.bfloat16},
    )
    assert plugin.backend_options() == {
        "reshard_after_forward": False,
        "wrap_classes": ["Block"],
        "state_dict_type": "full",
        "param_dtype": "bfloat16",
    }
    # fsdp needs 2 processes: the plugin selected it (the error is fsdp's own).
    with pytest.raises(ConfigurationError, match="backend 'fsdp' needs at least 2 processes"):
        Accelerator(cpu=True, fsdp_plugin=plugin)
    with pytest.raises(ConfigurationError, match="replicates the model: use the ddp backend"):
        FullyShardedDataParallelPlugin(sharding_strategy="NO_SHARD").backend_options()
    with pytest.raises(TypeError, match="`fsdp_plugin` must be a FullyShardedDataParallelPlugin"):
        Accelerator(cpu=True, fsdp_plugin={"reshard_after_forward": True})


def test_deepspeed_plugin_maps_onto_deepspeed_options():
    from accelerate_core.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(
        zero_stage=3, offload_optimizer_device="cpu", gradient_clipping=1.0,
        gradient_accumulation_steps=4,
    )  # fmt: skip
    assert plugin.backend_options() == {
        "zero_stage": 3, "offload_optimizer_device": "cpu", "gradient_clipping": 1.0,
    }  # fmt: skip
    assert plugin.accumulation_steps() == 4
    assert plugin.deepspeed_config == {"zero_optimization": {"stage": 3}}


# --------------------------------------------------------------------------- scheduler, reduce


def test_one_cycle_schedule_is_never_stepped_past_its_end():
    accelerator = Accelerator(cpu=True)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=3)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for _ in range(5):  # torch raises on the 4th step of a 3-step OneCycleLR
        optimizer.step()
        scheduler.step()
    assert scheduler.scheduler.last_epoch == 3


def test_reduce_takes_hf_reductions_on_one_process():
    accelerator = Accelerator(cpu=True)
    value = torch.tensor([1.0, 5.0])
    for reduction in ("sum", "mean", "max", "min", "none"):
        torch.testing.assert_close(accelerator.reduce(value, reduction), value)
    with pytest.raises(ValueError, match="reduction must be one of sum, mean, max, min, none"):
        accelerator.reduce(value, "product")


# --------------------------------------------------------------------------- checkpoint hooks


def test_save_and_load_state_pre_hooks(tmp_path):
    calls = []

    def on_save(models, weights, output_dir):
        calls.append(("save", len(models), sorted(weights[0]), output_dir))
        with open(f"{output_dir}/extra.json", "w") as f:
            json.dump({"note": 1}, f)

    def on_load(models, input_dir):
        with open(f"{input_dir}/extra.json") as f:
            calls.append(("load", len(models), json.load(f)))

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(_model())
    handle = accelerator.register_save_state_pre_hook(on_save)
    accelerator.register_load_state_pre_hook(on_load)
    saved = accelerator.save_state(tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert "extra.json" in manifest["files"]  # the hook's file is verified like the others
    accelerator.load_state(saved)
    assert calls[0][:3] == ("save", 1, ["bias", "weight"])
    assert calls[1] == ("load", 1, {"note": 1})
    handle.remove()
    accelerator.save_state(tmp_path / "again")
    assert not (tmp_path / "again" / "extra.json").exists()

    accelerator.register_save_state_pre_hook(lambda models, weights, d: weights.clear())
    with pytest.raises(Exception, match="removed models or weights"):
        accelerator.save_state(tmp_path / "third")
    del model


def test_save_state_takes_hf_safe_serialization_and_always_writes_safetensors(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(_model())
    accelerator.save_state(tmp_path / "safe", True)  # HF's positional second argument
    with pytest.warns(UserWarning, match=r"safe_serialization=False.*safetensors regardless"):
        accelerator.save_state(tmp_path / "unsafe", safe_serialization=False)
    for name in ("safe", "unsafe"):
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert "model_0.safetensors" in files and not [
            f for f in files if f.endswith(".bin") and f.startswith("pytorch_model")
        ]
    with pytest.raises(TypeError):
        accelerator.save_state(tmp_path / "x", True, True)  # async_save is keyword-only
    del model


# --------------------------------------------------------------------------- compile


def test_compiled_model_trains_like_eager_and_keeps_clean_keys(tmp_path):
    """``dynamo_backend`` compiles the prepared model in place (aot_eager: no C++ compiler)."""
    from safetensors.torch import load_file

    x, y = _data()

    def run(**kwargs):
        from accelerate_core.state import reset_state

        reset_state()
        accelerator = Accelerator(cpu=True, **kwargs)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        torch.manual_seed(0)
        for p in model.parameters():
            torch.nn.init.normal_(p)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        model, optimizer = accelerator.prepare(model, optimizer)
        losses = []
        for _ in range(3):
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return accelerator, model, losses

    _, _, eager = run()
    accelerator, model, compiled = run(dynamo_backend="aot_eager")
    assert accelerator.dynamo_plugin.backend.value == "AOT_EAGER"
    assert getattr(model, "_compiled_call_impl", None) is not None  # it really was compiled
    assert compiled == pytest.approx(eager, rel=1e-5)
    keys = ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert sorted(accelerator.get_state_dict(model)) == keys
    assert sorted(accelerator.unwrap_model(model).state_dict()) == keys
    accelerator.save_model(model, tmp_path)
    assert sorted(load_file(tmp_path / "model.safetensors")) == keys
    with pytest.raises(ConfigurationError, match="both `dynamo_plugin` and `dynamo_backend`"):
        from accelerate_core.utils import TorchDynamoPlugin

        Accelerator(cpu=True, dynamo_backend="eager", dynamo_plugin=TorchDynamoPlugin())


def test_a_model_compiled_before_prepare_unwraps_to_clean_keys():
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.compile(_model(), backend="eager"))
    assert sorted(accelerator.unwrap_model(model).state_dict()) == ["bias", "weight"]
    assert sorted(accelerator.get_state_dict(model)) == ["bias", "weight"]
    from accelerate_core.utils import extract_model_from_parallel, is_compiled_module

    assert is_compiled_module(model) and not is_compiled_module(extract_model_from_parallel(model))

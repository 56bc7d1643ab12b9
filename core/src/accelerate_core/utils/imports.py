"""``is_*_available()``: whether an optional library or a device is there (HF's names).

A library counts as available when it can be found: nothing is imported to answer, so asking is
cheap and never drags a heavy library into the process.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch


@cache
def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import
        return False


def _library(*modules: str):
    def available() -> bool:
        return any(_found(m) for m in modules)

    available.__doc__ = f"True when {' or '.join(modules)} can be imported."
    return available


is_aim_available = _library("aim")
is_boto3_available = _library("boto3")
is_clearml_available = _library("clearml")
is_comet_ml_available = _library("comet_ml")
is_datasets_available = _library("datasets")
is_deepspeed_available = _library("deepspeed")
is_dvclive_available = _library("dvclive")
is_import_timer_available = _library("import_timer")
is_lomo_available = _library("lomo_optim")
is_matplotlib_available = _library("matplotlib")
is_megatron_lm_available = _library("megatron")
is_mlflow_available = _library("mlflow")
is_msamp_available = _library("msamp")
is_pandas_available = _library("pandas")
is_peft_available = _library("peft")
is_pippy_available = _library("pippy")
is_pynvml_available = _library("pynvml")
is_amdsmi_available = _library("amdsmi")
is_pytest_available = _library("pytest")
is_rich_available = _library("rich")
is_sagemaker_available = _library("sagemaker")
is_schedulefree_available = _library("schedulefree")
is_swanlab_available = _library("swanlab")
is_tensorboard_available = _library("tensorboard", "tensorboardX")
is_timm_available = _library("timm")
is_torchao_available = _library("torchao")
is_torchdata_available = _library("torchdata")
is_torchvision_available = _library("torchvision")
is_tqdm_available = _library("tqdm")
is_trackio_available = _library("trackio")
is_transformer_engine_available = _library("transformer_engine")
is_transformers_available = _library("transformers")
is_triton_available = _library("triton")
is_wandb_available = _library("wandb")
is_bnb_available = _library("bitsandbytes")
is_4bit_bnb_available = _library("bitsandbytes")
is_8bit_bnb_available = _library("bitsandbytes")


def is_torch_distributed_available() -> bool:
    return torch.distributed.is_available()


def is_torchdata_stateful_dataloader_available() -> bool:
    return _found("torchdata.stateful_dataloader")


def is_transformer_engine_mxfp8_available() -> bool:
    return False  # needs Blackwell GPUs and TransformerEngine's MXFP8 recipe


def is_bitsandbytes_multi_backend_available() -> bool:
    return is_bnb_available()


def is_weights_only_available() -> bool:
    return True  # torch.load(weights_only=True) exists in every torch this core supports


def is_cuda_available() -> bool:
    return torch.cuda.is_available()


def _device_module(name: str) -> bool:
    module = getattr(torch, name, None)
    is_available = getattr(module, "is_available", None)
    return bool(is_available is not None and is_available())


def is_xpu_available(check_device: bool = False) -> bool:
    return _device_module("xpu")


def is_mps_available(min_version: str = "1.12") -> bool:
    return torch.backends.mps.is_available()


def is_npu_available(check_device: bool = False) -> bool:
    return _device_module("npu")


def is_mlu_available(check_device: bool = False) -> bool:
    return _device_module("mlu")


def is_musa_available(check_device: bool = False) -> bool:
    return _device_module("musa")


def is_sdaa_available(check_device: bool = False) -> bool:
    return _device_module("sdaa")


def is_hpu_available(init_hccl: bool = False) -> bool:
    return _device_module("hpu")


def is_neuron_available(check_device: bool = False) -> bool:
    return _device_module("neuron")


def is_habana_gaudi1() -> bool:
    return False


def is_rocm_available() -> bool:
    return torch.version.hip is not None


def is_xccl_available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_backend_available("xccl")


def is_torch_xla_available(check_is_tpu: bool = False, check_is_gpu: bool = False) -> bool:
    return _found("torch_xla")


def is_bf16_available(ignore_tpu: bool = False) -> bool:
    """Whether the device this process would use supports bf16 (CPU always does)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True


def is_fp16_available() -> bool:
    return True


def is_fp8_available() -> bool:
    """An fp8 library is installed (torchao, TransformerEngine or MS-AMP)."""
    return is_torchao_available() or is_transformer_engine_available() or is_msamp_available()


__all__ = [name for name in dir() if name.startswith("is_")]

"""Hugging Face Accelerate's ``accelerate.utils`` names, re-exported from focused modules.

Each block below re-exports one module's names (add yours as its own block: merges stay simple).
Names that belong to one backend (``FullyShardedDataParallelPlugin``, ``DeepSpeedPlugin``,
``DummyOptim``, ``DummyScheduler``, ``DDPCommunicationHookType``) are defined by the backend's
package and looked up on first use (``__getattr__`` below, ``exported_names.py``).
"""

# ruff: noqa: F401 - this module only re-exports

from __future__ import annotations

from typing import Any

# Project configuration (checkpoint.py).
from ..checkpoint import ProjectConfiguration

# Backend-specific names, resolved through the plugins (exported_names.py).
from ..exported_names import known_names as _known_names
from ..exported_names import resolve as _resolve

# Experiment tracking records (logger_type.py).
from ..logger_type import LoggerType

# Device-mesh layouts for N-D parallelism (parallelism_config.py).
from ..parallelism_config import (
    ParallelismConfig,
    TorchContextParallelConfig,
    TorchTensorParallelConfig,
)

# Constants under HF's names (constants.py).
from .constants import (
    MODEL_NAME,
    OPTIMIZER_NAME,
    PROFILE_PATTERN_NAME,
    RNG_STATE_NAME,
    SAFE_MODEL_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_PATTERN_NAME,
    SAMPLER_NAME,
    SCALER_NAME,
    SCHEDULER_NAME,
    TORCH_DISTRIBUTED_OPERATION_TYPES,
    TORCH_LAUNCH_PARAMS,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    WEIGHTS_PATTERN_NAME,
)

# Configuration records and enums (dataclasses.py).
from .dataclasses import (
    AutocastKwargs,
    BaseEnum,
    ComputeEnvironment,
    CustomDtype,
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    DynamoBackend,
    GradientAccumulationPlugin,
    GradScalerKwargs,
    InitProcessGroupKwargs,
    KwargsHandler,
    PrecisionType,
    ProfileKwargs,
    RNGType,
    SageMakerDistributedType,
    TensorInformation,
    TorchDynamoPlugin,
)

# Device maps for big-model inference (device_map.py).
from .device_map import (
    check_device_map,
    clean_device_map,
    fallback_allocate,
    get_balanced_memory,
    get_max_memory,
    get_module_leaves,
    get_module_size_with_ties,
    infer_auto_device_map,
)

# Environment variables (environment.py).
from .environment import (
    clear_environment,
    convert_dict_to_env_variables,
    get_int_from_env,
    parse_choice_from_env,
    parse_flag_from_env,
    patch_environment,
    purge_accelerate_environment,
    str_to_bool,
)

# Optional libraries and devices (imports.py).
from .imports import (
    is_4bit_bnb_available,
    is_8bit_bnb_available,
    is_aim_available,
    is_amdsmi_available,
    is_bf16_available,
    is_bitsandbytes_multi_backend_available,
    is_bnb_available,
    is_boto3_available,
    is_clearml_available,
    is_comet_ml_available,
    is_cuda_available,
    is_datasets_available,
    is_deepspeed_available,
    is_dvclive_available,
    is_fp8_available,
    is_fp16_available,
    is_habana_gaudi1,
    is_hpu_available,
    is_import_timer_available,
    is_lomo_available,
    is_matplotlib_available,
    is_megatron_lm_available,
    is_mlflow_available,
    is_mlu_available,
    is_mps_available,
    is_msamp_available,
    is_musa_available,
    is_neuron_available,
    is_npu_available,
    is_pandas_available,
    is_peft_available,
    is_pippy_available,
    is_pynvml_available,
    is_pytest_available,
    is_rich_available,
    is_rocm_available,
    is_sagemaker_available,
    is_schedulefree_available,
    is_sdaa_available,
    is_swanlab_available,
    is_tensorboard_available,
    is_timm_available,
    is_torch_distributed_available,
    is_torch_xla_available,
    is_torchao_available,
    is_torchdata_available,
    is_torchdata_stateful_dataloader_available,
    is_torchvision_available,
    is_tqdm_available,
    is_trackio_available,
    is_transformer_engine_available,
    is_transformer_engine_mxfp8_available,
    is_transformers_available,
    is_triton_available,
    is_wandb_available,
    is_weights_only_available,
    is_xccl_available,
    is_xpu_available,
)

# Loading checkpoints into (dispatched) models (loading.py).
from .loading import load_checkpoint_in_model, load_offloaded_weights, load_state_dict

# Out-of-memory helpers (memory.py).
from .memory import (
    clear_device_cache,
    find_executable_batch_size,
    release_memory,
    should_reduce_batch_size,
)

# Module sizes, tied parameters, moving tensors (modeling.py).
from .modeling import (
    align_module_device,
    calculate_maximum_sizes,
    check_tied_parameters_on_same_device,
    compute_module_sizes,
    compute_module_total_buffer_size,
    convert_file_size_to_int,
    dtype_byte_size,
    find_tied_parameters,
    get_max_layer_size,
    get_non_persistent_buffers,
    has_offloaded_params,
    id_tensor_storage,
    named_module_tensors,
    retie_parameters,
    set_module_tensor_to_device,
)

# Offloaded weights on disk (offload.py).
from .offload import (
    OffloadedWeightsLoader,
    PrefixedDataset,
    extract_submodules_state_dict,
    load_offloaded_weight,
    offload_state_dict,
    offload_weight,
    save_offload_index,
)

# Tensor operations and collectives (operations.py).
from .operations import (
    CannotPadNestedTensorWarning,
    ConvertOutputsToFp32,
    DistributedOperationException,
    broadcast,
    broadcast_object_list,
    concatenate,
    convert_outputs_to_fp32,
    convert_to_fp32,
    find_batch_size,
    find_device,
    gather,
    gather_object,
    get_data_structure,
    honor_type,
    ignorant_find_batch_size,
    initialize_tensors,
    is_namedtuple,
    is_tensor_information,
    is_torch_tensor,
    listify,
    pad_across_processes,
    pad_input_tensors,
    recursively_apply,
    reduce,
    send_to_device,
    slice_tensors,
)

# Unwrapping, saving, configs (other.py).
from .other import (
    check_os_kernel,
    clean_state_dict_for_safetensors,
    compile_regions,
    convert_bytes,
    extract_model_from_parallel,
    get_pretty_name,
    has_compiled_regions,
    is_compiled_module,
    is_port_in_use,
    load,
    merge_dicts,
    recursive_getattr,
    save,
    wait_for_everyone,
    write_basic_config,
)

# Seeding and RNG synchronisation (random.py).
from .random import set_seed, synchronize_rng_state, synchronize_rng_states

# Progress bars on the main process (tqdm.py).
from .tqdm import tqdm

# Version checks (versions.py).
from .versions import compare_versions, is_torch_version

__all__ = sorted(n for n in globals() if not n.startswith("_") and n not in ("Any", "annotations"))


def __getattr__(name: str) -> Any:
    return _resolve(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_known_names()))

"""Write ``docs/compatibility.md``: every public name of Hugging Face Accelerate 1.15, and ours.

``python scripts/compatibility_table.py`` (HF Accelerate installed: it is a test dependency)
lists the public names of ``accelerate``, ``accelerate.utils``, the ``Accelerator``'s arguments
and members and HF's other public modules, and looks each up at the same path in
``accelerate_core``. A name found there is *supported*, or *supported differently* when
``DIFFERENTLY`` explains how; a name not found is *not supported* (``RULES`` say why, or which
issue brings it). ``tests/test_compatibility_table.py`` fails when the file is out of date.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "compatibility.md"
MODULES = ["state", "data_loader", "logging", "local_sgd", "launchers", "optimizer", "scheduler",
           "checkpointing", "tracking", "big_modeling", "hooks", "inference",
           "parallelism_config"]  # fmt: skip

# Names we have, that behave differently from HF on purpose (key: "section name").
DIFFERENTLY = {
    "accelerate DistributedType": "values come from the selected backend's record; a "
    "third-party backend may add its own value",
    "accelerate FullyShardedDataParallelPlugin": "defined by accelerate-fsdp (importable "
    "without it; using it says `pip install accelerate-fsdp`); FSDP2 only: fsdp_version=1 runs "
    "FSDP2, FSDP1-only knobs (backward_prefetch, limit_all_gathers, use_orig_params, "
    "sync_module_states, forward_prefetch) have no effect; NO_SHARD, HYBRID_SHARD, callable "
    "auto_wrap_policy, ignored_modules, param_init_fn, LOCAL_STATE_DICT are errors naming the "
    "alternative",
    "accelerate DeepSpeedPlugin": "defined by accelerate-deepspeed; fields map onto its options; "
    "several plugins (dict) and enable_msamp are refused (fp8 is mixed_precision='fp8')",
    "accelerate DDPCommunicationHookType": "defined by accelerate-ddp",
    "accelerate DistributedDataParallelKwargs": "options of the ddp backend (checked by its "
    "plugin); ignored by other backends and on one process, as in HF",
    "accelerate InitProcessGroupKwargs": "timeout is used; backend and init_method are errors: "
    "the device plugin chooses the process-group backend, the launcher the rendezvous",
    "accelerate DataLoaderConfiguration": "use_seedable_sampler and use_stateful_dataloader are "
    "what prepared loaders always are (library-owned saved shuffle seed, saved position)",
    "accelerate notebook_launcher": "takes this core's launch settings (cpu, mixed_precision, "
    "backend, ...); HF's rendezvous options (use_port, master_addr, node_rank, num_nodes) are "
    "not taken: one machine",
    "accelerate debug_launcher": "notebook_launcher on CPU processes",
    "accelerate skip_first_batches": "a prepared loader resumes by itself after load_state; "
    "skipping the same batches again keeps the same position",
    "accelerate find_executable_batch_size": "same retry rule (x0.9 per out-of-memory); memory is "
    "released after the failed try's traceback is gone",
    "accelerate.Accelerator unwrap_model": "torch.compile wrappers are always removed (clean "
    "state-dict keys); keep_torch_compile is accepted",
    "accelerate.Accelerator get_state_dict": "clean keys also for compiled models (HF keeps "
    "`_orig_mod.` / `module.` prefixes when compiled after prepare)",
    "accelerate.Accelerator clip_grad_norm_": "returns None on accumulation micro-steps: nothing "
    "is clipped before the gradients are complete",
    "accelerate.Accelerator clip_grad_value_": "does nothing on accumulation micro-steps",
    "accelerate.Accelerator reduce": "also 'min'; 'none' returns the input unreduced; scale "
    "applies on every device (HF: on XLA only)",
    "accelerate.Accelerator save_state": "atomic and verified: written under a temporary name "
    "with a manifest of checksums, safetensors weights; this core's layout, not HF's files",
    "accelerate.Accelerator load_state": "every file verified before any live object changes; "
    "prepared loaders resume at the next unseen batch by themselves",
    "accelerate.Accelerator register_save_state_pre_hook": "a hook may write files (they join "
    "the manifest); removing models or weights from its lists is refused",
    "accelerate.Accelerator register_load_state_pre_hook": "called after every file was verified; "
    "removing models from its list is refused",
    "accelerate.Accelerator rng_types": "accepted and checked; not needed: prepared loaders "
    "shuffle with a library-owned, saved seed (exact resume)",
    "accelerate.Accelerator gradient_accumulation_steps": "settable; the backend is asked again "
    "(an engine built with the old value needs prepare again)",
    "accelerate.Accelerator prepare_scheduler": "the scheduler steps once per process after each "
    "update (HF's rule) without advancing _step_count on micro-steps",
    "accelerate.Accelerator save": "written to a temporary name and renamed",
    "accelerate.Accelerator profile": "same; traces are profile_<rank>.json",
    "accelerate.Accelerator join_uneven_inputs": "even_batches=False without it is refused on "
    "every rank instead of hanging",
    "accelerate.Accelerator gather_for_metrics": "exact for uneven last batches on every backend",
    "accelerate.Accelerator free_memory": "also forgets prepared dataloaders and schedulers",
    "accelerate.Accelerator dataloader_config": "the given DataLoaderConfiguration (or one built "
    "from split_batches/even_batches/dispatch_batches arguments, which this core still takes)",
    "accelerate.Accelerator multi_device": "from the backend's distributed type",
    "accelerate.Accelerator deepspeed_plugin": "the DeepSpeedPlugin given to the Accelerator; "
    "None when DeepSpeed was selected by name or by accel launch (its options are then "
    "backend_options)",
    "accelerate.Accelerator should_save_model": "always True: save_model gathers itself",
    "accelerate.utils GradientAccumulationPlugin": "adjust_scheduler has no effect: prepared "
    "schedulers never step on micro-steps",
    "accelerate.utils TorchDynamoPlugin": "the user's module inside the backend's wrapper is "
    "compiled in place (Module.compile): parameter names never change",
    "accelerate.utils ProjectConfiguration": "automatic_checkpoint_naming defaults to True; "
    "iteration is informational (names continue after the last complete checkpoint)",
    "accelerate.utils extract_model_from_parallel": "asks the selected backend's plugin; always "
    "removes torch.compile wrappers",
    "accelerate.utils DummyOptim": "defined by accelerate-deepspeed; unset hyperparameters are "
    "None (filled from the DeepSpeed config) instead of lr=0.001",
    "accelerate.utils DummyScheduler": "defined by accelerate-deepspeed",
    "accelerate.utils write_basic_config": "writes accel's YAML (mixed_precision, num_processes, "
    "cpu) at accel's default path",
    "accelerate.utils save": "written to a temporary name and renamed",
    "accelerate.utils reduce": "also 'min'; 'none' returns the input; scale applies everywhere",
    "accelerate.utils is_bf16_available": "by torch's answer for the device (no XLA)",
    "accelerate.utils compile_regions": "compiles each child of the model's ModuleLists in place",
    "accelerate.utils synchronize_rng_state": "not needed for data order here (see rng_types)",
    "accelerate.local_sgd LocalSGD": "switches gradient sync off through the backend's no_sync; "
    "refused (clear error) with sharding backends",
    "accelerate.scheduler AcceleratedScheduler": "HF's rule; a OneCycleLR is never stepped past "
    "total_steps, and _step_count is not advanced on micro-steps",
    "accelerate.logging get_logger": "same",
}
DIFFERENTLY = {k: v for k, v in DIFFERENTLY.items() if v != "same"}

# Why a name is missing: first matching pattern wins (matched against "section name").
RULES = [
    (r"[Mm]egatron|TrainStep|avg_losses|MEGATRON", "no Megatron-LM backend"),
    (r"[Bb]nb|bnb_|quantiz|BnbQuantization", "bitsandbytes quantisation is not ported"),
    (r"xla|XLA|tpu|TPU", "no XLA/TPU backend"),
    (r"[Pp]ippy|accelerate\.inference", "PiPPy pipeline inference is not ported"),
    (r"lomo", "LOMO optimizers are not supported"),
    (
        r"Tracker|tracker|LoggerType|tqdm| log$| init_trackers| get_tracker| logging_dir|"
        r"log_with|accelerate\.tracking",
        "tracker internals, not ported (trackers: accelerate_core.tracking)",
    ),
    (
        r"ParallelismConfig|ParallelConfig|TensorParallel|torch_tp_plugin|parallel_(shard_)?rank|"
        r"context_parallel|composable_parallelism|torch_device_mesh|get_model_tp_size|"
        r"model_has_dtensor|parallelism_config",
        "not ported: N-D parallelism is ParallelismConfig and the Accelerator's mesh API",
    ),
    (
        r"accelerate\.(big_modeling|hooks)|[Oo]ffload|extract_submodules|dispatch_model|init_empty_weights|init_on_device|"
        r"device_map|tied_param|module_size|compute_module|max_memory|balanced_memory|layer_size|"
        r"dtype_byte_size|named_module_tensors|set_module_tensor|load_checkpoint|load_state_dict|"
        r"id_tensor_storage|align_module_device|retie_parameters|file_size_to_int|"
        r"calculate_maximum_sizes|PrefixedDataset|ensure_weights_retied|is_peft_model",
        "transformers/PEFT-specific big-model helper, not ported",
    ),
    (
        r"GatheredParameters|DeepSpeed(Engine|Optimizer|Scheduler)Wrapper|HfDeepSpeedConfig|deepspeed_required|"
        r"active_deepspeed|map_pytorch_optim|compile_regions_deepspeed|DeepSpeedSequence|ulysses",
        "DeepSpeed internals live in accelerate-deepspeed",
    ),
    (r"fsdp", "FSDP internals live in accelerate-fsdp (FSDP2 only)"),
    (
        r"RecipeKwargs|fp8|_ao|first_and_last_linear|ao_layers|transformer_engine|convert_model|torchao_required",
        "fp8 is accelerate-fp8's (mixed_precision='fp8', precision_options); HF's recipe objects "
        "are not ported",
    ),
    (
        r"accelerate\.checkpointing",
        "supported differently: checkpoint.save_state/load_state (this core's atomic "
        "layout); HF checkpoints: accel convert-checkpoint",
    ),
    (
        r"[Ll]aunch|prepare_.*(env|args|tpu)|numa|gpu_info|p2p_ib|cpu_distributed_information|"
        r"libraries_initialized|current_device_type",
        "launcher internals: `accel launch` has its own and accepts HF's flags and config files",
    ),
    (r"fp8_backend|grad_scaler|mixed_precision_context", "chosen by the precision plugin"),
    (r"PROFILING_AVAILABLE", "torch version gates HF needs and this core does not"),
]
FALLBACK = "internal helper, not ported"


def public(module_name: str, own: bool) -> list[str]:
    module = importlib.import_module(module_name)
    names = []
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if isinstance(value, types.ModuleType):
            continue
        defined_in = getattr(value, "__module__", None)
        if own and defined_in != module_name:
            continue
        if defined_in is None and not isinstance(value, (str, int, float, list, dict, tuple)):
            continue
        if defined_in is not None and not defined_in.startswith("accelerate"):
            continue
        names.append(name)
    return sorted(names)


def sections() -> dict[str, list[str]]:
    import accelerate

    found = {"accelerate": public("accelerate", own=False),
             "accelerate.utils": public("accelerate.utils", own=False)}  # fmt: skip
    signature = inspect.signature(accelerate.Accelerator.__init__)
    found["accelerate.Accelerator()"] = [p for p in signature.parameters if p != "self"]
    found["accelerate.Accelerator"] = sorted(
        n for n in dir(accelerate.Accelerator) if not n.startswith("_")
    )
    for name in MODULES:
        found[f"accelerate.{name}"] = public(f"accelerate.{name}", own=True)
    return found


def ours(section: str, name: str) -> bool:
    import accelerate_core

    if section == "accelerate.Accelerator()":
        return name in inspect.signature(accelerate_core.Accelerator.__init__).parameters
    if section == "accelerate.Accelerator":
        return hasattr(accelerate_core.Accelerator, name)
    try:
        module = importlib.import_module(section.replace("accelerate", "accelerate_core", 1))
    except ImportError:
        return False
    return hasattr(module, name)


def status(section: str, name: str) -> tuple[str, str]:
    key = f"{section} {name}"
    if ours(section, name):
        if key in DIFFERENTLY:
            return "supported differently", DIFFERENTLY[key]
        return "supported", ""
    for pattern, reason in RULES:
        if re.search(pattern, key):
            return "not supported", reason
    return "not supported", FALLBACK


def render() -> str:
    import accelerate

    rows = {section: [(n, *status(section, n)) for n in names]
            for section, names in sections().items()}  # fmt: skip
    every = [row for section in rows.values() for row in section]
    counts = {kind: sum(1 for row in every if row[1] == kind)
              for kind in ("supported", "supported differently", "not supported")}  # fmt: skip
    lines = [
        "# Compatibility with Hugging Face Accelerate",
        "",
        f"Every public name of Hugging Face Accelerate {accelerate.__version__} (its top-level "
        "and `accelerate.utils` exports, the `Accelerator`'s arguments and members, and its "
        "other public modules), looked up at the same path in `accelerate_core`. Generated by "
        "`python scripts/compatibility_table.py`; `tests/test_compatibility_table.py` checks it "
        "is current.",
        "",
        f"**{len(every)} names: {counts['supported']} supported, "
        f"{counts['supported differently']} supported differently, "
        f"{counts['not supported']} not supported.**",
        "",
    ]
    for section, section_rows in rows.items():
        lines += [f"## `{section}`", "", "| name | status | how / why |", "|---|---|---|"]
        lines += [f"| `{name}` | {kind} | {note} |" for name, kind, note in section_rows]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if OUTPUT.exists() and OUTPUT.read_text() == text else 1)
    OUTPUT.write_text(text)
    print(text.splitlines()[4])

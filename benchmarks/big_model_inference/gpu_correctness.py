"""Correctness of big-model inference on an accelerator, ours beside HF Accelerate.

Run by ``gpu_check.sh``; writes ``gpu_correctness.json`` (every check, passed or not) into the
folder given. With ``--cpu-only`` the accelerator's part of each map is the CPU, so the script
can be tried on a machine without one.

    PYTHONPATH=core/src python3 benchmarks/big_model_inference/gpu_correctness.py OUT_DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHECKS: list[dict] = []


def check(name: str, ok: bool, **details: object) -> None:
    CHECKS.append({"check": name, "passed": bool(ok), **details})
    print(f"{'ok  ' if ok else 'FAIL'} {name} {details if details else ''}", flush=True)


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-4) -> tuple[bool, float]:
    difference = (a.float().cpu() - b.float().cpu()).abs().max().item()
    return difference <= tolerance * max(1.0, b.float().abs().max().item()), difference


def tiny_decoder():
    from models import Decoder

    torch.manual_seed(0)
    return Decoder(width=64, layers=4, vocab=128).eval()


def tiny_gpt2():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    config = transformers.GPT2Config(
        n_layer=4,
        n_embd=64,
        n_head=4,
        vocab_size=128,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def save(model, folder: Path) -> None:
    from safetensors.torch import save_file

    seen, state = set(), {}
    for key, tensor in model.state_dict().items():
        if tensor.untyped_storage().data_ptr() not in seen:
            seen.add(tensor.untyped_storage().data_ptr())
            state[key] = tensor.detach().cpu().contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def run(cpu_only: bool, work: Path) -> None:
    import accelerate
    import accelerate.utils as hf

    import accelerate_core
    from accelerate_core import cpu_offload, disk_offload, dispatch_model
    from accelerate_core.utils import get_max_memory, infer_auto_device_map

    acc = "cpu" if cpu_only else 0
    device = torch.device("cpu") if cpu_only else torch.device("cuda", 0)

    ours_memory, hf_memory = get_max_memory(), hf.get_max_memory()
    same_keys = list(ours_memory) == list(hf_memory)
    near = all(abs(ours_memory[k] - hf_memory[k]) <= 0.05 * hf_memory[k] for k in hf_memory)
    check(
        "get_max_memory: same devices and free memory as HF (5 %)",
        same_keys and near,
        ours={str(k): v for k, v in ours_memory.items()},
        hf={str(k): v for k, v in hf_memory.items()},
    )

    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    reference = tiny_decoder().to(device)
    expected = reference(ids.to(device))
    maps = {
        "accelerator only": {"": acc},
        "accelerator+cpu+disk": {
            "embed": acc,
            "blocks.0": acc,
            "blocks.1": "cpu",
            "blocks.2": "disk",
            "blocks.3": "cpu",
            "norm": "disk",
            "head": acc,
        },
        "cpu+disk (run on the accelerator)": {
            "embed": "cpu",
            "blocks": "disk",
            "norm": "cpu",
            "head": "cpu",
        },
    }
    for label, device_map in maps.items():
        main = acc if "(" in label else None
        model = dispatch_model(
            tiny_decoder(),
            device_map,
            offload_dir=work / f"d-{len(label)}",
            main_device=main,
            force_hooks=True,
        )
        before = 0 if cpu_only else torch.cuda.memory_allocated(0)
        out = model(ids)  # inputs on the CPU
        kept = 0 if cpu_only else torch.cuda.memory_allocated(0) - before
        ok, difference = close(out, expected)
        check(
            f"dispatch {label}: outputs equal the full model, returned on the inputs' device",
            ok and out.device.type == "cpu",
            max_difference=difference,
        )
        offloaded = [n for n, p in model.named_parameters() if p.device.type == "meta"]
        expect = any(v == "disk" or (v == "cpu" and not cpu_only) for v in device_map.values())
        check(
            f"dispatch {label}: offloaded weights released after the forward",
            bool(offloaded) == expect and kept <= 2**20,
            offloaded=len(offloaded),
            accelerator_bytes_kept_after_forward=kept,
        )

    for label, apply in (
        ("cpu_offload", lambda m: cpu_offload(m, execution_device=device)),
        ("disk_offload", lambda m: disk_offload(m, work / "disk_offload", execution_device=device)),
    ):
        model = apply(tiny_decoder())
        ok, difference = close(model(ids.to(device)), expected)
        check(f"{label} on the accelerator equals the full model", ok, max_difference=difference)

    gpt2 = tiny_gpt2()
    save(gpt2, work / "gpt2")
    full = copy.deepcopy(gpt2).to(device)
    prompt = torch.tensor([[3, 7, 11, 5]], device=device)
    tokens = full.generate(prompt, max_new_tokens=8, do_sample=False)
    size = sum(p.numel() * p.element_size() for p in gpt2.parameters())
    budget = {0: size // 3, "cpu": size // 3} if not cpu_only else {"cpu": size // 2}
    loaded = {}
    for name, library in (("ours", accelerate_core), ("hf", accelerate)):
        with library.init_empty_weights():
            model = tiny_gpt2()
        model.tie_weights()
        model = library.load_checkpoint_and_dispatch(
            model,
            str(work / "gpt2"),
            device_map="auto",
            max_memory=dict(budget),
            no_split_module_classes=["GPT2Block"],
            offload_folder=str(work / f"off-{name}"),
        )
        loaded[name] = model
        generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
        check(
            f"{name}: gpt2 over {sorted(set(map(str, model.hf_device_map.values())))} "
            "generates the full model's tokens",
            torch.equal(generated.cpu(), tokens.cpu()),
            device_map={k: str(v) for k, v in model.hf_device_map.items()},
        )
    check("same device map as HF", loaded["ours"].hf_device_map == loaded["hf"].hf_device_map)
    with accelerate_core.init_empty_weights():
        meta = tiny_gpt2()
    meta.tie_weights()
    for memory in ({0: size // 2, "cpu": size}, {0: size // 4, "cpu": size // 4}):
        memory = memory if not cpu_only else {"cpu": memory["cpu"]}
        ours = infer_auto_device_map(meta, dict(memory), no_split_module_classes=["GPT2Block"])
        theirs = hf.infer_auto_device_map(meta, dict(memory), no_split_module_classes=["GPT2Block"])
        check(f"infer_auto_device_map equals HF's for {memory}", dict(ours) == dict(theirs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.cpu_only and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-only", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        try:
            run(args.cpu_only, Path(work))
        except Exception:
            check("script ran to the end", False, error=traceback.format_exc()[-3000:])
    passed = all(c["passed"] for c in CHECKS)
    report = {
        "passed": passed,
        "cpu_only": args.cpu_only,
        "torch": torch.__version__,
        "device": None if args.cpu_only else torch.cuda.get_device_name(0),
        "checks": CHECKS,
    }
    (args.out / "gpu_correctness.json").write_text(json.dumps(report, indent=1))
    print(
        f"{sum(c['passed'] for c in CHECKS)} passed, {sum(not c['passed'] for c in CHECKS)} failed"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

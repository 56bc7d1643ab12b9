"""Memory probes run in a fresh process by test_big_model_memory.py (python big_model_probe.py CMD).

``write DIR``: a ~1.1 GB checkpoint of ``Decoder(width=2048, layers=8)`` in shards of one block,
written block by block. ``load DIR BUDGET``: load it under ``max_memory={"cpu": BUDGET}`` and
report memory. ``meta``: build 10 GB of models under ``init_empty_weights`` and report memory.
Each prints one JSON line; memory figures are bytes.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).parent))
from big_models import Decoder

WIDTH, LAYERS, VOCAB = 2048, 8, 256


def rss() -> int:
    return psutil.Process().memory_info().rss


def kernel_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class Sampler:
    """The resident memory's maximum, sampled by a thread (the kernel's peak is read beside it)."""

    def __init__(self) -> None:
        self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return max(self.peak, rss())


def write(folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = Decoder(WIDTH, LAYERS, VOCAB).state_dict()
    groups: dict[str, list[str]] = {}
    for name in shapes:
        if name == "head.weight":
            continue  # tied to embed.weight
        key = ".".join(name.split(".")[:2]) if name.startswith("blocks.") else "rest"
        groups.setdefault(key, []).append(name)
    weight_map, sizes = {}, []
    for number, names in enumerate(groups.values(), start=1):
        file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: torch.full(shapes[n].shape, 0.01 * number) for n in names}
        save_file(tensors, folder / file, metadata={"format": "pt"})
        sizes.append((folder / file).stat().st_size)
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    print(json.dumps({"total": sum(sizes), "largest_shard": max(sizes)}))


def load(folder: Path, budget: int, library: str) -> None:
    if library == "hf":
        import accelerate as lib
    else:
        import accelerate_core as lib
    with lib.init_empty_weights():
        model = Decoder(WIDTH, LAYERS, VOCAB)
    model.head.weight = model.embed.weight
    largest_tensor = max(t.numel() * t.element_size() for t in model.state_dict().values())
    before, peak_before = rss(), kernel_peak()
    sampler = Sampler()
    start = time.perf_counter()
    model = lib.load_checkpoint_and_dispatch(
        model,
        str(folder),
        device_map="auto",
        max_memory={"cpu": budget},
        no_split_module_classes=["Block"],
        offload_folder=str(folder / f"offload-{library}"),
    )
    seconds = time.perf_counter() - start
    sampled = sampler.stop()
    resident = {k: v for k, v in model.hf_device_map.items() if v == "cpu"}
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()] if t.device.type == "cpu"}
    resident_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    sampler = Sampler()
    with torch.no_grad():
        logits = model(torch.arange(8)[None])
    forward_peak = sampler.stop()
    print(
        json.dumps(
            {
                "rss_before": before,
                "kernel_peak_before": peak_before,
                "sampled_peak": sampled,
                "kernel_peak": kernel_peak(),
                "rss_after": rss(),
                "seconds": seconds,
                "devices": sorted(set(map(str, model.hf_device_map.values()))),
                "cpu_modules": len(resident),
                "resident_bytes": resident_bytes,
                "largest_tensor": largest_tensor,
                "forward_sampled_peak": forward_peak,
                "logits_finite": bool(torch.isfinite(logits).all()),
            }
        )
    )


def meta() -> None:
    from accelerate_core import init_empty_weights

    with init_empty_weights():  # torch sets up its meta kernels once (~70 MB): not the model's
        Decoder(8, 1, 4)
    before, peak_before = rss(), kernel_peak()
    with init_empty_weights():
        big = Decoder(width=4096, layers=9, vocab=1000)  # 4.8 GB of float32
        bigger = Decoder(width=8192, layers=1, vocab=1000)  # 2.2 GB in one block
    size = sum(p.numel() * p.element_size() for m in (big, bigger) for p in m.parameters())
    on_meta = all(p.device.type == "meta" for m in (big, bigger) for p in m.parameters())
    print(
        json.dumps(
            {
                "parameter_bytes": size,
                "all_meta": on_meta,
                "tied": big.head.weight is big.embed.weight,
                "rss_growth": rss() - before,
                "kernel_peak_growth": kernel_peak() - max(before, peak_before),
            }
        )
    )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "write":
        write(Path(args[0]))
    elif command == "load":
        load(Path(args[0]), int(args[1]), args[2] if len(args) > 2 else "ours")
    else:
        meta()

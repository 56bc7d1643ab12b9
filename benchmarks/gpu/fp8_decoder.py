"""fp8 (torchao, through accelerate-fp8) against bf16: tokens/s of a 1.3B decoder on one GPU.

The same decoder (pre-norm attention + GELU MLP, RMSNorm, 24 layers of width 2048), the same
random-token batches and the same AdamW, trained through ``Accelerator(mixed_precision=...)``
with every block compiled (torch.compile of each block after ``prepare``: fp8 pays off compiled).
Reports step time, tokens/s, the speed-up, the final losses and how many Linear layers became
fp8, as JSON into ``$OUT/fp8_decoder.json`` (or ``--output``).

    python benchmarks/gpu/fp8_decoder.py [--layers 24 --width 2048 --batch 8 --seq 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight)


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(width), RMSNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
        self.out = torch.nn.Linear(width, width, bias=False)
        self.up = torch.nn.Linear(width, 4 * width, bias=False)
        self.down = torch.nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, -1).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.out(attn.transpose(1, 2).reshape(b, s, w))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Decoder(torch.nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = RMSNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def train(mixed_precision: str, args: argparse.Namespace) -> dict[str, float]:
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state()
    torch.manual_seed(0)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    with torch.device(args.device):
        model = Decoder(args.vocab, args.width, args.layers, args.heads)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=args.device == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    converted = 0
    if mixed_precision == "fp8":
        from accelerate_fp8 import converted_layer_count

        converted = converted_layer_count(model)
    inner = accelerator.unwrap_model(model)
    if not args.no_compile:
        for block in inner.blocks:
            block.compile()
    generator = torch.Generator(device=args.device).manual_seed(1)
    batches = torch.randint(
        0, args.vocab, (args.steps, args.batch, args.seq + 1), device=args.device,
        generator=generator,
    )  # fmt: skip
    times, losses = [], []
    for tokens in batches:
        synchronize(args.device)
        start = time.perf_counter()
        with accelerator.autocast():
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        synchronize(args.device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    step = statistics.median(times[args.warmup :])
    result = {
        "parameters": parameters,
        "step_ms": step * 1e3,
        "tokens_per_s": args.batch * args.seq / step,
        "first_step_s": times[0],
        "final_loss": statistics.mean(losses[-5:]),
        "converted_linear_layers": converted,
    }
    if args.device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        del model, optimizer, inner
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


SHAPE = ("layers", "width", "heads", "vocab", "batch", "seq", "steps", "warmup")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on this machine's device")
    args = parser.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.layers, args.width, args.heads, args.vocab = 2, 64, 4, 256
        args.batch, args.seq, args.steps, args.warmup, args.no_compile = 2, 32, 4, 1, True
    output = args.output or Path(os.environ.get("OUT", ".")) / "fp8_decoder.json"
    import torchao

    result: dict[str, object] = {
        "benchmark": "fp8_decoder",
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "none (cpu)",
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "shape": {k: getattr(args, k) for k in SHAPE},
    }
    for precision in ("bf16", "fp8"):
        try:
            result[precision] = train(precision, args)
        except Exception as exc:  # report and go on: the other row is still worth having
            result[precision] = {"error": f"{type(exc).__name__}: {exc}"}
        print(precision, result[precision], flush=True)
    bf16, fp8 = result["bf16"], result["fp8"]
    if "step_ms" in bf16 and "step_ms" in fp8:
        result["speedup"] = bf16["step_ms"] / fp8["step_ms"]
        result["loss_difference"] = (fp8["final_loss"] - bf16["final_loss"]) / bf16["final_loss"]
        print(f"fp8 / bf16 speed-up {result['speedup']:.2f}x, loss difference "
              f"{100 * result['loss_difference']:+.2f}%")  # fmt: skip
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

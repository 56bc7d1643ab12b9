"""The benchmark's models, built from configs (nothing is downloaded), and their checkpoints.

``gpt2-medium`` and ``opt-350m`` are transformers models with those published configurations
(random weights); ``decoder`` is a plain torch decoder (no transformers) used by the quick run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

# name -> (kind, config, no_split_module_classes)
MODELS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "gpt2-medium": (
        "gpt2",
        {"n_layer": 24, "n_embd": 1024, "n_head": 16, "vocab_size": 50257, "n_positions": 1024},
        ["GPT2Block"],
    ),
    "gpt2-large": (
        "gpt2",
        {"n_layer": 36, "n_embd": 1280, "n_head": 20, "vocab_size": 50257, "n_positions": 1024},
        ["GPT2Block"],
    ),
    "opt-350m": (
        "opt",
        {
            "num_hidden_layers": 24,
            "hidden_size": 1024,
            "ffn_dim": 4096,
            "num_attention_heads": 16,
            "word_embed_proj_dim": 512,
            "vocab_size": 50272,
            "max_position_embeddings": 2048,
        },
        ["OPTDecoderLayer"],
    ),
    "opt-1.3b": (
        "opt",
        {
            "num_hidden_layers": 24,
            "hidden_size": 2048,
            "ffn_dim": 8192,
            "num_attention_heads": 32,
            "word_embed_proj_dim": 2048,
            "vocab_size": 50272,
            "max_position_embeddings": 2048,
        },
        ["OPTDecoderLayer"],
    ),
    "decoder": ("decoder", {"width": 256, "layers": 6, "vocab": 512}, ["Block"]),
    "decoder-1g": ("decoder", {"width": 2048, "layers": 8, "vocab": 4096}, ["Block"]),
}


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class Decoder(nn.Module):
    """Embedding, residual MLP blocks, a head tied to the embedding (no attention: the point is
    weights moving between devices, not the architecture)."""

    def __init__(self, width: int, layers: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build(name: str) -> nn.Module:
    """The model ``name`` (under ``init_empty_weights`` when called inside one)."""
    kind, config, _ = MODELS[name]
    if kind == "decoder":
        return Decoder(**config).eval()
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    else:
        model = transformers.OPTForCausalLM(transformers.OPTConfig(**config))
    model.tie_weights()
    return model.eval()


def is_transformers(name: str) -> bool:
    return MODELS[name][0] != "decoder"


def no_split(name: str) -> list[str]:
    return MODELS[name][2]


def write_checkpoint(name: str, folder: Path, dtype: torch.dtype, shard_bytes: int) -> dict:
    """Random weights for ``name`` saved as safetensors shards with their index."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build(name).to(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    seen, state = set(), {}
    for key, tensor in model.state_dict().items():
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in seen:  # one copy of tied weights, as transformers saves them
            seen.add(pointer)
            state[key] = tensor.contiguous()
    shards: list[list[str]] = [[]]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    weight_map, sizes = {}, []
    for number, keys in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k] for k in keys}, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file))
        sizes.append((folder / file).stat().st_size)
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return {
        "bytes": sum(sizes),
        "largest_shard_bytes": max(sizes),
        "shards": len(sizes),
        "parameters": sum(p.numel() for p in model.parameters()),
    }

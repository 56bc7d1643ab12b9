"""Small models and checkpoints shared by the big-model inference tests.

``Decoder`` is a plain torch decoder (embedding, residual blocks, a head tied to the embedding,
a persistent and a non-persistent buffer); ``gpt2``/``opt`` build transformers models from a
config (no download). ``save_sharded`` writes a checkpoint as ``transformers`` does: safetensors
shards plus ``model.safetensors.index.json``, written with the ``safetensors`` library itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Decoder(nn.Module):
    def __init__(self, width: int = 32, layers: int = 4, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.full((width,), 0.5))
        self.register_buffer("positions", torch.arange(64), persistent=False)

    def forward(self, ids: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids) * self.scale + self.positions[: ids.shape[-1], None] * 0.01
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x) + (0 if bias is None else bias)


def decoder(seed: int = 0, **sizes: int) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(**sizes)
    with torch.no_grad():  # non-trivial buffer values, so a lost buffer shows in the outputs
        model.scale.uniform_(0.5, 1.5)
    return model.eval()


def gpt2(**overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = dict(
        n_layer=3,
        n_embd=32,
        n_head=4,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    config.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**config)).eval()


def opt(**overrides):
    from transformers import OPTConfig, OPTForCausalLM

    config = dict(
        num_hidden_layers=3,
        hidden_size=32,
        ffn_dim=64,
        num_attention_heads=4,
        vocab_size=64,
        max_position_embeddings=32,
        word_embed_proj_dim=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    config.update(overrides)
    return OPTForCausalLM(OPTConfig(**config)).eval()


def without_ties(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with one name per tied weight (safetensors refuses shared tensors)."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        storage = tensor.untyped_storage().data_ptr()
        if storage not in seen:
            seen.add(storage)
            state[name] = tensor.detach().clone().contiguous()
    return state


def save_sharded(state: dict[str, torch.Tensor], folder: Path, shard_bytes: int) -> Path:
    """Safetensors shards of about ``shard_bytes`` and their index; returns the index path."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index

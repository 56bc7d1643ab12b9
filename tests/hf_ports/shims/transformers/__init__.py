"""Offline stand-in for the parts of transformers HF Accelerate's examples use (tests only).

A word-level tokenizer over a fixed vocabulary, a tiny bag-of-embeddings classifier and a tiny
causal language model stand in for the pretrained checkpoints the examples download.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from . import utils  # noqa: F401

VOCABULARY = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"] + [f"w{i}" for i in range(60)]


class BatchEncoding(dict):
    """A dict of tensors with ``.to(device)``, like transformers' ``BatchEncoding``."""

    def to(self, device, non_blocking=False):
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device, non_blocking=non_blocking)
        return self

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Pretrained:
    """``save_pretrained`` as the examples call it (weights through ``save_function``)."""

    def save_pretrained(self, directory, is_main_process=True, save_function=torch.save,
                        state_dict=None, **kwargs):  # fmt: skip
        os.makedirs(directory, exist_ok=True)
        if is_main_process:
            save_function(state_dict or self.state_dict(), os.path.join(directory, "model.bin"))


class Tokenizer:
    model_max_length = 64

    def save_pretrained(self, directory, **kwargs):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "vocab.json"), "w") as f:
            json.dump(self.ids, f)

    def __init__(self):
        self.ids = {word: index for index, word in enumerate(VOCABULARY)}
        self.pad_token, self.eos_token = "[PAD]", "[SEP]"

    @property
    def pad_token_id(self):
        return self.ids[self.pad_token]

    def __len__(self):
        return len(VOCABULARY)

    def encode(self, text):
        return [self.ids.get(word, 3) for word in text.split()]

    def __call__(self, first, second=None, truncation=True, max_length=None,
                 return_attention_mask=True, **kwargs):  # fmt: skip
        if second is None:
            input_ids = [self.encode(text) for text in first]
        else:
            input_ids = [[1, *self.encode(a), 2, *self.encode(b), 2] for a, b in zip(first, second)]
        out = {"input_ids": input_ids}
        if return_attention_mask:
            out["attention_mask"] = [[1] * len(i) for i in input_ids]
        return out

    def pad(self, examples, padding="longest", max_length=None, pad_to_multiple_of=None,
            return_tensors="pt"):  # fmt: skip
        longest = max(len(e["input_ids"]) for e in examples)
        if max_length is not None and (padding == "max_length" or longest < max_length):
            longest = max(longest, max_length) if padding == "max_length" else longest
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        keys = [k for k in examples[0] if k in ("input_ids", "attention_mask")]
        batch = {key: [] for key in keys}
        for example in examples:
            missing = longest - len(example["input_ids"])
            for key in keys:
                fill = self.pad_token_id if key == "input_ids" else 0
                batch[key].append(list(example[key]) + [fill] * missing)
        if "labels" in examples[0]:
            batch["labels"] = [e["labels"] for e in examples]
        return BatchEncoding({key: torch.tensor(value) for key, value in batch.items()})


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return Tokenizer()


@dataclass
class ModelOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor

    def __getitem__(self, index):
        return (self.loss, self.logits)[index]


class TinyClassifier(Pretrained, torch.nn.Module):
    """Mean of token embeddings -> two logits (a stand-in for BERT's classifier)."""

    def __init__(self):
        super().__init__()
        self.embeddings = torch.nn.Embedding(len(VOCABULARY), 16, padding_idx=0)
        self.classifier = torch.nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask, labels=None, token_type_ids=None):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embeddings(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.classifier(pooled)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return ModelOutput(loss, logits)


class TinyCausalLM(Pretrained, torch.nn.Module):
    """Embedding -> one GRU layer -> vocabulary logits (a stand-in for a causal LM)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(len(VOCABULARY), 16)
        self.rnn = torch.nn.GRU(16, 16, batch_first=True)
        self.head = torch.nn.Linear(16, len(VOCABULARY))

    def forward(self, input_ids, attention_mask=None, labels=None, use_cache=None,
                num_items_in_batch=None, **kwargs):  # fmt: skip
        hidden, _ = self.rnn(self.embed(input_ids))
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            flat = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                reduction="sum" if num_items_in_batch is not None else "mean",
            )  # fmt: skip
            loss = flat / num_items_in_batch if num_items_in_batch is not None else flat
        return ModelOutput(loss, logits)

    def get_input_embeddings(self):
        return self.embed

    def resize_token_embeddings(self, size):
        return self.embed


class TinyConfig:
    model_type = "tiny"


class AutoConfig:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return TinyConfig()


CONFIG_MAPPING = {"tiny": TinyConfig}
MODEL_MAPPING = {TinyConfig: TinyCausalLM}


class AutoModelForSequenceClassification:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return TinyClassifier()


class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return TinyCausalLM()

    @staticmethod
    def from_config(config, **kwargs):
        return TinyCausalLM()


class SchedulerType(str, enum.Enum):
    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps):
    def factor(step):
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def get_constant_schedule(optimizer, last_epoch=-1):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0, last_epoch=last_epoch)


def get_scheduler(name, optimizer, num_warmup_steps=0, num_training_steps=None):
    name = SchedulerType(name)
    if name == SchedulerType.COSINE:

        def factor(step):
            if step < num_warmup_steps:
                return step / max(1, num_warmup_steps)
            progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if name in (SchedulerType.CONSTANT, SchedulerType.CONSTANT_WITH_WARMUP):
        return get_constant_schedule(optimizer)
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)


def default_data_collator(features):
    batch = {}
    for key in features[0]:
        batch[key] = torch.tensor([f[key] for f in features])
    return BatchEncoding(batch)


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

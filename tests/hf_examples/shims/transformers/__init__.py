"""Offline stand-in for the parts of transformers the tracking examples use (tests only)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

VOCABULARY = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"] + [f"w{i}" for i in range(60)]


class BatchEncoding(dict):
    """A dict of tensors with ``.to(device)``, like transformers' ``BatchEncoding``."""

    def to(self, device, non_blocking=False):
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device, non_blocking=non_blocking)
        return self


class Tokenizer:
    def __init__(self):
        self.ids = {word: index for index, word in enumerate(VOCABULARY)}

    def encode(self, text):
        return [self.ids.get(word, 3) for word in text.split()]

    def __call__(self, first, second, truncation=True, max_length=None):
        input_ids = [[1, *self.encode(a), 2, *self.encode(b), 2] for a, b in zip(first, second)]
        return {"input_ids": input_ids, "attention_mask": [[1] * len(i) for i in input_ids]}

    def pad(self, examples, padding="longest", max_length=None, pad_to_multiple_of=None,
            return_tensors="pt"):  # fmt: skip
        longest = max(len(e["input_ids"]) for e in examples)
        if max_length is not None:
            longest = max(longest, max_length)
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for example in examples:
            missing = longest - len(example["input_ids"])
            batch["input_ids"].append(list(example["input_ids"]) + [0] * missing)
            batch["attention_mask"].append(list(example["attention_mask"]) + [0] * missing)
            batch["labels"].append(example["labels"])
        return BatchEncoding({key: torch.tensor(value) for key, value in batch.items()})


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return Tokenizer()


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class TinyClassifier(torch.nn.Module):
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
        return SequenceClassifierOutput(loss, logits)


class AutoModelForSequenceClassification:
    @staticmethod
    def from_pretrained(name, **kwargs):
        return TinyClassifier()


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps):
    def factor(step):
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

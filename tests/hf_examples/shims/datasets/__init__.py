"""Offline stand-in for ``datasets.load_dataset("nyu-mll/glue", "mrpc")`` (tests only)."""

from __future__ import annotations

import random


class Dataset:
    def __init__(self, columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index):
        return {name: values[index] for name, values in self.columns.items()}

    def map(self, function, batched=True, remove_columns=()):
        added = function(self.columns)
        kept = {k: v for k, v in self.columns.items() if k not in remove_columns}
        return Dataset({**kept, **added})

    def rename_column(self, old, new):
        return Dataset({new if k == old else k: v for k, v in self.columns.items()})


class DatasetDict(dict):
    def map(self, function, **kwargs):
        return DatasetDict({split: data.map(function, **kwargs) for split, data in self.items()})

    def rename_column(self, old, new):
        return DatasetDict({split: data.rename_column(old, new) for split, data in self.items()})


def _pairs(count, generator):
    columns = {"sentence1": [], "sentence2": [], "label": [], "idx": []}
    for index in range(count):
        words = [f"w{generator.randrange(60)}" for _ in range(generator.randint(5, 9))]
        label = generator.random() < 0.5
        other = list(words)
        if label:  # a paraphrase: one word changed
            other[generator.randrange(len(other))] = f"w{generator.randrange(60)}"
        else:
            other = [f"w{generator.randrange(60)}" for _ in range(len(words))]
        columns["sentence1"].append(" ".join(words))
        columns["sentence2"].append(" ".join(other))
        columns["label"].append(int(label))
        columns["idx"].append(index)
    return Dataset(columns)


def load_dataset(path, name=None, **kwargs):
    if (path, name) not in {("nyu-mll/glue", "mrpc"), ("glue", "mrpc")}:
        raise ValueError(f"the offline stand-in has only GLUE/MRPC, not {path} {name}")
    generator = random.Random(1234)
    return DatasetDict({"train": _pairs(160, generator), "validation": _pairs(48, generator)})

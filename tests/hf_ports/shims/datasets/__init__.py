"""Offline stand-in for ``datasets.load_dataset`` on GLUE/MRPC and WikiText-2 (tests only).

Generated data: sentence pairs (label 1 when the second sentence is the first with one word
changed) and short word sequences, with the ``Dataset`` methods the examples call.
"""

from __future__ import annotations

import random

from . import utils  # noqa: F401


class Dataset:
    def __init__(self, columns):
        self.columns = {k: list(v) for k, v in columns.items()}

    def __len__(self):
        return len(next(iter(self.columns.values())))

    @property
    def num_rows(self):
        return len(self)

    @property
    def column_names(self):
        return list(self.columns)

    def __getitem__(self, index):
        if isinstance(index, str):
            return self.columns[index]
        return {name: values[index] for name, values in self.columns.items()}

    def map(self, function, batched=True, remove_columns=(), **kwargs):
        added = function(self.columns)
        kept = {k: v for k, v in self.columns.items() if k not in (remove_columns or ())}
        return Dataset({**kept, **added})

    def filter(self, function, input_columns=None, **kwargs):
        keep = []
        for i in range(len(self)):
            row = self[i]
            value = row[input_columns] if isinstance(input_columns, str) else row
            if function(value):
                keep.append(i)
        return self.select(keep)

    def select(self, indices):
        indices = [int(i) for i in indices]
        return Dataset({k: [v[i] for i in indices] for k, v in self.columns.items()})

    def rename_column(self, old, new):
        return Dataset({new if k == old else k: v for k, v in self.columns.items()})


class DatasetDict(dict):
    def map(self, function, **kwargs):
        return DatasetDict({split: data.map(function, **kwargs) for split, data in self.items()})

    def filter(self, function, **kwargs):
        return DatasetDict({split: data.filter(function, **kwargs) for split, data in self.items()})

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


def _text(count, generator):
    lines = []
    for _ in range(count):
        length = generator.choice([0, 4, 6, 8])  # WikiText has empty lines
        start = generator.randrange(50)
        lines.append(" ".join(f"w{(start + j) % 60}" for j in range(length)))
    return Dataset({"text": lines})


def load_dataset(path, name=None, split=None, **kwargs):
    generator = random.Random(1234)
    if (path, name) in {("nyu-mll/glue", "mrpc"), ("glue", "mrpc")}:
        found = DatasetDict({"train": _pairs(160, generator), "validation": _pairs(48, generator)})
    elif path in ("Salesforce/wikitext", "wikitext"):
        found = DatasetDict({"train": _text(510, generator), "validation": _text(40, generator),
                             "test": _text(40, generator)})  # fmt: skip
    else:
        raise ValueError(f"the offline stand-in has no dataset {path} {name}")
    return found if split is None else found[split.split("[")[0]]

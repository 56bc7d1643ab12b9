"""Offline stand-in for ``evaluate.load("glue", "mrpc")``: accuracy and F1 (tests only)."""

from __future__ import annotations


class GlueMrpc:
    def __init__(self):
        self.predictions, self.references = [], []

    def add_batch(self, predictions, references):
        self.predictions += [int(p) for p in predictions]
        self.references += [int(r) for r in references]

    def compute(self, predictions=None, references=None):
        if predictions is not None:
            self.add_batch(predictions, references)
        pairs = list(zip(self.predictions, self.references))
        self.predictions, self.references = [], []
        true_positive = sum(1 for p, r in pairs if p == r == 1)
        predicted, actual = sum(p for p, _ in pairs), sum(r for _, r in pairs)
        f1 = 2 * true_positive / (predicted + actual) if predicted + actual else 0.0
        return {"accuracy": sum(p == r for p, r in pairs) / len(pairs), "f1": f1}


def load(path, config_name=None, **kwargs):
    return GlueMrpc()

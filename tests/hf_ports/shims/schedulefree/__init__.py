"""Offline stand-in for ``schedulefree.AdamWScheduleFree`` (tests only): AdamW with the
``train()``/``eval()`` switches a schedule-free optimizer has."""

from __future__ import annotations

import torch


class AdamWScheduleFree(torch.optim.AdamW):
    def __init__(self, params, lr=0.0025, warmup_steps=0, **kwargs):
        super().__init__(params, lr=lr, **kwargs)
        self.mode = "train"

    def train(self):
        self.mode = "train"

    def eval(self):
        self.mode = "eval"

"""Offline stand-in for ``timm.create_model`` (tests only): a tiny convolutional classifier."""

from __future__ import annotations

import torch


class TinyConvNet(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.default_cfg = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
        )
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))

    def get_classifier(self):
        return self.fc


def create_model(name, pretrained=False, num_classes=1000, **kwargs):
    return TinyConvNet(num_classes)

"""``Compose``, ``RandomResizedCrop``, ``Resize``, ``ToTensor`` over PIL images (tests only)."""

from __future__ import annotations

import random

import numpy as np
import PIL.Image  # noqa: F401 - torchvision imports it; HF's image examples rely on that
import torch


def _size(size):
    return (size, size) if isinstance(size, int) else tuple(size)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image


class Resize:
    def __init__(self, size):
        self.size = _size(size)

    def __call__(self, image):
        return image.resize((self.size[1], self.size[0]))


class RandomResizedCrop:
    def __init__(self, size, scale=(0.08, 1.0)):
        self.size, self.scale = _size(size), scale

    def __call__(self, image):
        width, height = image.size
        fraction = random.uniform(*self.scale) ** 0.5
        w, h = max(1, int(width * fraction)), max(1, int(height * fraction))
        left, top = random.randint(0, width - w), random.randint(0, height - h)
        return image.crop((left, top, left + w, top + h)).resize((self.size[1], self.size[0]))


class ToTensor:
    def __call__(self, image):
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

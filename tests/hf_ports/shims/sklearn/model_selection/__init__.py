"""Offline stand-in for ``sklearn.model_selection.StratifiedKFold`` (tests only)."""

from __future__ import annotations

import numpy as np


class StratifiedKFold:
    def __init__(self, n_splits=5):
        self.n_splits = n_splits

    def split(self, X, y):
        y = np.asarray(y)
        folds = [[] for _ in range(self.n_splits)]
        for label in np.unique(y):
            for position, index in enumerate(np.flatnonzero(y == label)):
                folds[position % self.n_splits].append(int(index))
        everything = np.arange(len(y))
        for fold in folds:
            test = np.array(sorted(fold))
            yield np.setdiff1d(everything, test), test

"""Model-side input transforms.

The space encodes a choice parameter as one column holding the index of its value, which is
what BoTorch's mixed optimiser searches exactly. A GP, however, should not see an index: its
order and distances mean nothing. ``OneHotCategories`` expands each index column into one-hot
columns inside the model, so the optimiser keeps the compact exact encoding while the GP is
a plain ``SingleTaskGP`` over ``[0, 1]`` columns (the one-hot encoding BayBE and EDBO use).

Why not ``MixedSingleTaskGP``: its sum-and-product categorical kernel needed ~450 L-BFGS
steps (about 2 s) to fit 20 points of the flow-reactor campaign, against 0.1 s for a
``SingleTaskGP`` on one-hot columns of the same data, with equally good proposals.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from botorch.models.transforms.input import InputTransform
from torch import Tensor


class OneHotCategories(InputTransform):
    """Replace each categorical index column by ``k`` one-hot columns (appended at the end).

    Args:
        dim: number of encoded columns ``d`` of the space.
        categories: column index -> number of categories ``k`` of that column.
    """

    def __init__(self, dim: int, categories: Mapping[int, int]) -> None:
        super().__init__()
        self.transform_on_train = True
        self.transform_on_eval = True
        self.transform_on_fantasize = True
        self.categories = dict(sorted(categories.items()))
        self.keep = [i for i in range(dim) if i not in self.categories]

    @property
    def transformed_dim(self) -> int:
        """Columns the model sees: ordinal ones plus one per category."""
        return len(self.keep) + sum(self.categories.values())

    def transform(self, X: Tensor) -> Tensor:
        """``batch x n x d`` index encoding -> ``batch x n x d'`` one-hot encoding."""
        parts = [X[..., self.keep]]
        for column, k in self.categories.items():
            index = X[..., column].round().clamp(0, k - 1).long()
            parts.append(torch.nn.functional.one_hot(index, k).to(X))
        return torch.cat(parts, dim=-1)

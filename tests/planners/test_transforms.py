"""The one-hot view of categorical index columns that the GP sees."""

from __future__ import annotations

import torch

from planners._transforms import OneHotCategories


def test_index_columns_become_one_hot_and_ordinal_ones_stay() -> None:
    t = OneHotCategories(3, {1: 3})
    X = torch.tensor([[0.25, 2.0, 0.5], [0.75, 0.0, 1.0]], dtype=torch.float64)
    assert t.transformed_dim == 5
    assert torch.equal(
        t.transform(X),
        torch.tensor([[0.25, 0.5, 0, 0, 1], [0.75, 1.0, 1, 0, 0]], dtype=torch.float64),
    )


def test_batched_inputs_keep_their_batch_shape() -> None:
    t = OneHotCategories(2, {0: 2, 1: 4})
    X = torch.zeros(7, 3, 2, dtype=torch.float64)
    assert t.transform(X).shape == (7, 3, 6)

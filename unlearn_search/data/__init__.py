"""Datasets by name, kept in memory as tensors.

A dataset is a `Dataset`: train and test tensors of shape ``(N, C, H, W)`` with values in ``[0, 1]`` (the raw input
space in which poisons are applied) and int64 labels. Loaders are registered in `DATASETS`; a loader takes no data
at construction and returns a `Dataset` when called (``load_dataset(name)``). Larger datasets (torchvision's
CIFAR-10, a user's own arrays) plug in as further loaders returning the same type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..registry import Registry


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    def __post_init__(self) -> None:
        if self.x_train.shape[0] != self.y_train.shape[0] or self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(f"dataset {self.name!r}: inputs and labels differ in length")


DATASETS: Registry[Callable[[], Dataset]] = Registry("dataset")


def load_dataset(name: str) -> Dataset:
    return DATASETS.get(name)()


from . import digits as _digits  # noqa: E402,F401  (registers "digits")

__all__ = ["DATASETS", "Dataset", "load_dataset"]

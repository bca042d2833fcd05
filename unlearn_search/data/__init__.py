"""Datasets by name, kept in memory as tensors.

A dataset is a `Dataset`: train and test tensors of shape ``(N, C, H, W)`` with values in ``[0, 1]`` (the raw input
space in which poisons are applied) and int64 labels; a text dataset (`text`) holds int64 rows of token ids instead,
tokenised for the scenario's model. Loaders are registered in `DATASETS`; a loader takes no data
at construction and returns a `Dataset` when called (``load_dataset(name)``).

Dataset names (``check_dataset_name`` validates one without loading it):

- a registered name: ``digits`` (embedded), ``cifar10`` (torchvision's, downloaded on first use into the data
  directory: ``$UNLEARN_SEARCH_DATA``, default ``~/.cache/unlearn_search/data``; see `cifar10`);
- a source prefix and a path, like ``timm:`` models: ``npz:<file.npz>`` (arrays ``x_train``, ``y_train``, ``x_test``,
  ``y_test``) or ``folder:<dir>`` (``<dir>/train/<class>/*.png`` and ``<dir>/test/<class>/*.png``); see `files`;
- a text dataset: ``sentiment`` (embedded, generated), ``imdb`` (Hugging Face ``datasets``) or ``text:<file>``
  (CSV / JSONL), see `text`; loading one needs the model it is tokenised for;
- either, followed by ``@<n_train>,<n_test>``: a class-stratified subset of that many train and test points, drawn
  with a fixed seed (`SUBSET_SEED`, the same for every scenario seed), e.g. ``cifar10@2000,500``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..registry import Registry


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    vocab_size: int = 0  # text: the tokenizer's vocabulary (0 for images)
    tokenizer: Any = field(default=None, compare=False, repr=False)  # text: what tokenised it (`models.text`)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of an image, (max_length + 2,) of a text row (`text`)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def is_text(self) -> bool:
        return self.vocab_size > 0

    def __post_init__(self) -> None:
        if self.x_train.shape[0] != self.y_train.shape[0] or self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(f"dataset {self.name!r}: inputs and labels differ in length")


DATASETS: Registry[Callable[[], Dataset]] = Registry("dataset")
#: Sources named by a prefix: ``<prefix>:<path>``; the loader takes the path.
DATASET_SOURCES: Registry[Callable[[str], Dataset]] = Registry("dataset source")

SUBSET_SEED = 0
_SUBSET = re.compile(r"^(?P<base>.+)@(?P<n_train>\d+),(?P<n_test>\d+)$")


def _parse(name: str) -> tuple[str, str | None, str, tuple[int, int] | None]:
    """``[<prefix>:]<base>[@<n_train>,<n_test>]`` -> (base name, prefix or None, path or name, subset sizes)."""
    m = _SUBSET.match(name)
    base, sizes = (m["base"], (int(m["n_train"]), int(m["n_test"]))) if m else (name, None)
    prefix, sep, rest = base.partition(":")
    if sep and prefix in DATASET_SOURCES:
        return base, prefix, rest, sizes
    return base, None, base, sizes


def _valid_names() -> str:
    from .text import TEXT_DATASETS, TEXT_PREFIX

    sources = ", ".join([*(f"{p}:<path>" for p in DATASET_SOURCES.names()), f"{TEXT_PREFIX}<file>"])
    return (f"{', '.join([*DATASETS.names(), *TEXT_DATASETS.names()])}, {sources}, each optionally followed by "
            "@<n_train>,<n_test>")


def check_dataset_name(name: str) -> None:
    """Raise `UsageError` for a bad dataset name, without loading any data (a source's path must exist)."""
    from .text import TEXT_DATASETS, TEXT_PREFIX

    base, prefix, rest, sizes = _parse(name)
    if base.startswith(TEXT_PREFIX):
        path = base[len(TEXT_PREFIX):]
        if not path or not Path(path).expanduser().is_file():
            raise UsageError(f"dataset {name!r}: text file {path!r} does not exist")
    elif base in TEXT_DATASETS:
        pass
    elif prefix is not None:
        if not rest or not Path(rest).expanduser().exists():
            raise UsageError(f"dataset {name!r}: {prefix} path {rest!r} does not exist")
    elif base not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; valid: {_valid_names()}")
    if sizes is not None and min(sizes) < 1:
        raise UsageError(f"dataset {name!r}: subset sizes must be >= 1 (@<n_train>,<n_test>)")


def dataset_fingerprint(name: str) -> str:
    """For a user's files (``npz:`` / ``folder:``), a digest of their contents (the npz bytes; for a folder, every
    file's relative path, size and modification time), so that edited data changes the scenario hash; ``""`` for
    built-in datasets, whose contents are fixed by the package."""
    from .text import TEXT_PREFIX

    base, prefix, rest, _ = _parse(name)
    if base.startswith(TEXT_PREFIX):
        rest = base[len(TEXT_PREFIX):]
    elif prefix is None:
        return ""
    path = Path(rest).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    else:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                digest.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_dataset(name: str, model: str | None = None, max_length: int = 128) -> Dataset:
    """The dataset called ``name`` (see the module docstring for the name forms). A text dataset is tokenised for
    ``model`` (required then) with rows of ``max_length`` tokens; an image dataset ignores both."""
    from .text import is_text_dataset, load_corpus, subset_corpus, tokenise

    check_dataset_name(name)
    base, prefix, rest, sizes = _parse(name)
    if is_text_dataset(name):
        from .text import _TOKENISED

        if model is None:
            raise UsageError(f"text dataset {name!r} is tokenised for a model; none was given")
        key = (name, model, max_length, dataset_fingerprint(name))
        if key not in _TOKENISED:
            corpus = load_corpus(base)
            if sizes is not None:
                corpus = subset_corpus(corpus, *sizes, seed=SUBSET_SEED)
            _TOKENISED.clear()  # one dataset kept
            _TOKENISED[key] = replace(tokenise(corpus, model, max_length), name=name)
        return _TOKENISED[key]
    data = DATASET_SOURCES.get(prefix)(str(Path(rest).expanduser())) if prefix else DATASETS.get(base)()
    if sizes is not None:
        data = stratified_subset(data, *sizes)
    return replace(data, name=name)


def stratified_subset(data: Dataset, n_train: int, n_test: int, seed: int = SUBSET_SEED) -> Dataset:
    """A seeded subset of exactly ``n_train`` train and ``n_test`` test points with the class proportions kept.

    Each class gets its proportional share, rounded by largest remainder so the totals are exact; points within a
    class are drawn uniformly from a generator seeded with ``seed``; the kept points stay in their original order.
    """
    g = torch.Generator().manual_seed(seed)
    keep_train = _stratified_indices(data.y_train, n_train, g, f"{data.name} train")
    keep_test = _stratified_indices(data.y_test, n_test, g, f"{data.name} test")
    return replace(data, name=f"{data.name}@{n_train},{n_test}",
                   x_train=data.x_train[keep_train], y_train=data.y_train[keep_train],
                   x_test=data.x_test[keep_test], y_test=data.y_test[keep_test])


def _stratified_indices(y: torch.Tensor, n: int, g: torch.Generator, what: str) -> torch.Tensor:
    if not 1 <= n <= len(y):
        raise UsageError(f"subset of {n} points from {what} ({len(y)} points); valid: 1..{len(y)}")
    classes, counts = torch.unique(y, return_counts=True)
    share = counts.double() * n / len(y)
    quota = share.floor().long()
    rest = n - int(quota.sum())
    # Largest remainders first; ties go to the lower class label (stable sort on the negated remainder).
    order = torch.sort(-(share - quota), stable=True).indices
    quota[order[:rest]] += 1
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (y == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.cat(picked).sort().values


from . import cifar10 as _cifar10  # noqa: E402,F401  (registers "cifar10")
from . import digits as _digits  # noqa: E402,F401  (registers "digits")
from . import files as _files  # noqa: E402,F401  (registers the sources "npz:", "folder:")
from . import text as _text  # noqa: E402,F401  (registers "sentiment", "imdb")

__all__ = ["DATASETS", "DATASET_SOURCES", "Dataset", "check_dataset_name", "load_dataset", "stratified_subset"]

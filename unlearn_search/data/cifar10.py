"""CIFAR-10 (Krizhevsky 2009): 50,000 train and 10,000 test 32x32 colour images in 10 classes, the paper's dataset.

Kept in the data directory: ``$UNLEARN_SEARCH_DATA`` if set, else ``~/.cache/unlearn_search/data``. The first use
downloads and extracts it there through ``torchvision.datasets.CIFAR10(root, download=True)`` (which verifies the
archive's checksum); set ``UNLEARN_SEARCH_DOWNLOAD=0`` to never try. Offline, place the extracted
``cifar-10-batches-py`` folder (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) in the data directory;
if it is absent and cannot be downloaded, loading fails with one line naming the directory.

The batches are read here, not through torchvision's dataset object: one uint8 array, converted once to float32
``(N, 3, 32, 32)`` in [0, 1] (torchvision would also build a per-image HWC copy). The batch files are Python
pickles, and unpickling runs whatever code a crafted file names. So each file is first checked against the
published MD5 of the CIFAR-10 release (the list torchvision checks downloads with), and a file that differs is
refused with one line before it is opened. Your own data in CIFAR-10's format (e.g. a synthetic test set) can be
read with ``UNLEARN_SEARCH_CIFAR10_VERIFY=0``; every batch, checked or not, is unpickled by `_ArraysOnly`, which
rebuilds only numpy arrays, dicts, lists, numbers and strings and refuses any other object.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from . import DATASETS, Dataset

DATA_DIR_ENV = "UNLEARN_SEARCH_DATA"
DOWNLOAD_ENV = "UNLEARN_SEARCH_DOWNLOAD"  # "0" (or "false", "no") = never download
DEFAULT_DATA_DIR = "~/.cache/unlearn_search/data"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
SOURCE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
VERIFY_ENV = "UNLEARN_SEARCH_CIFAR10_VERIFY"  # "0" (or "false", "no") = read files that are not the published ones


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR-10 batches: numpy arrays and plain containers only; any other global is refused."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _published_md5() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    return {name: md5 for name, md5 in (*CIFAR10.train_list, *CIFAR10.test_list)}


def _check_published(path: Path) -> None:
    """Refuse (one line) a batch file that is not the published one, unless verification is off."""
    if os.environ.get(VERIFY_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(str(path), _published_md5()[path.name]):
        raise UsageError(f"{path}: not the published CIFAR-10 batch (MD5 differs), refused before unpickling it "
                         f"(a pickle can run code); valid: the files of {SOURCE_URL}, or your own CIFAR-format files "
                         f"with {VERIFY_ENV}=0")


def data_dir() -> Path:
    """Where datasets that are downloaded on first use are kept."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


@DATASETS.register("cifar10")
def cifar10() -> Dataset:
    root = data_dir()
    folder = root / FOLDER
    if not all((folder / f).is_file() for f in (*TRAIN_FILES, *TEST_FILES)):
        _download(root)
    x_train, y_train = _read_batches(folder, TRAIN_FILES)
    x_test, y_test = _read_batches(folder, TEST_FILES)
    return Dataset(name="cifar10", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=10)


def _download(root: Path) -> None:
    fix = (f"place the extracted {FOLDER!r} folder ({SOURCE_URL}) in {root} "
           f"or set {DATA_DIR_ENV} to a directory that holds it")
    if os.environ.get(DOWNLOAD_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        raise UsageError(f"CIFAR-10 not found in {root / FOLDER} and downloads are off ({DOWNLOAD_ENV}); {fix}")
    from torchvision.datasets import CIFAR10

    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=False, download=True)  # downloads, checks and extracts all batches
    except (OSError, RuntimeError) as e:  # URLError and socket errors are OSErrors; a bad checksum a RuntimeError
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UsageError(f"CIFAR-10 not found in {root / FOLDER} and the download failed ({reason}); {fix}") from None


def _read_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate pickled batches ``{"data": uint8 (n, 3072), "labels": [n ints]}`` -> (N,3,32,32) float, (N,)."""
    data, labels = [], []
    for name in names:
        _check_published(folder / name)
        try:
            with open(folder / name, "rb") as f:
                entry: dict[Any, Any] = _ArraysOnly(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise UsageError(f"{folder / name}: not a CIFAR-10 batch ({e})") from None
        x = np.asarray(_field(entry, "data"))
        y = np.asarray(_field(entry, "labels"), dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
            raise UsageError(f"{folder / name}: not a CIFAR-10 batch (data {x.dtype} {x.shape}, labels {y.shape}); "
                             f"expected uint8 (N, 3072) and N labels")
        data.append(x)
        labels.append(y)
    x_all = np.concatenate(data).reshape(-1, 3, 32, 32)  # each row is the R, G, B planes, row-major
    y_all = np.concatenate(labels)
    if y_all.size and not (y_all.min() >= 0 and y_all.max() < 10):
        raise UsageError(f"{folder}: CIFAR-10 labels outside 0..9")
    return torch.from_numpy(x_all).float().div_(255.0), torch.from_numpy(y_all)


def _field(entry: dict[Any, Any], key: str) -> Any:
    """Batches pickled by Python 2 may have bytes keys."""
    if key in entry:
        return entry[key]
    if key.encode() in entry:
        return entry[key.encode()]
    raise UsageError(f"CIFAR-10 batch without {key!r} (keys: {sorted(map(str, entry))})")

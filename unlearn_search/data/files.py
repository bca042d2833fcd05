"""A user's own data: ``npz:<file>`` and ``folder:<dir>``.

``npz:<file>``: a NumPy ``.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``. Images may be
``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H, W)`` with C <= 4 (the channel axis is the one of size <= 4;
the other must be larger), either ``uint8`` (0..255, scaled to [0, 1]), ``bool``, or floats already in [0, 1].
Labels are integers 0..K-1 (K = the number of classes = largest label + 1).

``folder:<dir>``: ``<dir>/train/<class>/<image>`` and ``<dir>/test/<class>/<image>`` (PNG, JPEG, ... anything PIL
reads). Classes are the sub-folder names of ``train``, sorted by name (label i = i-th name); every test class must be
a train class. All images must have one size. Grey images (PIL modes ``1``/``L``) give one channel if all images are
grey, otherwise every image is converted to RGB (alpha dropped).

Bad input raises `UsageError` with one line naming the file, key or shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from . import DATASET_SOURCES, Dataset

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MAX_CHANNELS = 4


@DATASET_SOURCES.register("npz")
def npz(path: str) -> Dataset:
    import zipfile

    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise UsageError(f"npz:{path}: not a .npz file (not a zip archive); expected numpy.savez output with "
                         f"{', '.join(NPZ_KEYS)}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise UsageError(f"npz:{path}: missing array(s) {', '.join(missing)} "
                                 f"(has: {', '.join(f.files) or 'none'}; needs: {', '.join(NPZ_KEYS)})")
            arrays = {k: f[k] for k in NPZ_KEYS}
    except UsageError:
        raise
    except (OSError, ValueError) as e:  # not a zip / object arrays (pickles are refused)
        reason = " ".join(str(e).split())
        raise UsageError(f"npz:{path}: cannot read it as a .npz of numeric arrays ({reason})") from None
    return _dataset(f"npz:{path}", arrays)


@DATASET_SOURCES.register("folder")
def folder(path: str) -> Dataset:
    root = Path(path)
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise UsageError(f"folder:{path}: no {d.name}/ sub-folder (expected {d.name}/<class>/<image files>)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UsageError(f"folder:{path}: train/ has no class sub-folders")
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise UsageError(f"folder:{path}: test classes {', '.join(extra)} are not train classes")
    x_train, y_train = _read_split(train_dir, classes)
    x_test, y_test = _read_split(test_dir, classes)
    if x_train.shape[1:] != x_test.shape[1:]:  # sizes differ between the splits, or grey vs colour
        gray = x_train.ndim == 3
        if gray == (x_test.ndim == 3):
            raise UsageError(f"folder:{path}: train images are {x_train.shape[1:3]} but test images "
                             f"{x_test.shape[1:3]}; all images must have one size")
        x_train, x_test = _to_rgb(x_train), _to_rgb(x_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _dataset(f"folder:{path}", arrays, n_classes=len(classes))


def _read_split(split_dir: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All images of one split as uint8 (N, H, W) if all are grey, else (N, H, W, 3); labels (N,)."""
    from PIL import Image

    images, labels, size, first = [], [], None, None
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for file in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as img:
                    img.load()
                    arr = np.asarray(img.convert("L") if img.mode in ("1", "L") else img.convert("RGB"))
            except OSError as e:
                raise UsageError(f"{file}: cannot read the image ({' '.join(str(e).split())})") from None
            if size is None:
                size, first = arr.shape[:2], file
            elif arr.shape[:2] != size:
                raise UsageError(f"{file}: image is {arr.shape[0]}x{arr.shape[1]} (HxW) but {first} is "
                                 f"{size[0]}x{size[1]}; all images must have one size")
            images.append(arr)
            labels.append(label)
    if not images:
        raise UsageError(f"{split_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class sub-folders")
    if any(a.ndim == 3 for a in images):
        images = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in images]
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _to_rgb(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 4 else np.repeat(x[..., None], 3, axis=-1)


def _dataset(name: str, arrays: dict[str, np.ndarray], n_classes: int | None = None) -> Dataset:
    x_train, x_test = _images(arrays["x_train"], name, "x_train"), _images(arrays["x_test"], name, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(f"{name}: x_train images are {tuple(x_train.shape[1:])} (C, H, W) but x_test images "
                         f"{tuple(x_test.shape[1:])}")
    y_train = _labels(arrays["y_train"], len(x_train), name, "y_train")
    y_test = _labels(arrays["y_test"], len(x_test), name, "y_test")
    if n_classes is None:
        n_classes = int(max(y_train.max(), y_test.max())) + 1  # both non-empty
    present = torch.unique(y_train).tolist()
    if len(present) < 2:
        raise UsageError(f"{name}: y_train has a single class ({present[0]}); a classifier needs at least 2")
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, n_classes=n_classes)


def _images(x: np.ndarray, name: str, key: str) -> torch.Tensor:
    """uint8 / bool / float images in any supported layout -> float32 (N, C, H, W) in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        channels_first = x.shape[1] <= _MAX_CHANNELS < min(x.shape[2], x.shape[3])
        channels_last = x.shape[3] <= _MAX_CHANNELS < min(x.shape[1], x.shape[2])
        if channels_first == channels_last:
            raise UsageError(f"{name}: {key} has shape {x.shape}: cannot tell the channel axis; expected "
                             f"(N, H, W), (N, H, W, C) or (N, C, H, W) with C <= {_MAX_CHANNELS} < H, W")
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
    else:
        raise UsageError(f"{name}: {key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if len(x) == 0:
        raise UsageError(f"{name}: {key} is empty")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise UsageError(f"{name}: {key} has {n_bad} NaN or infinite value(s); images must be finite, in [0, 1]")
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise UsageError(f"{name}: {key} values span [{float(t.min()):g}, {float(t.max()):g}]; "
                             f"float images must lie in [0, 1] (or store uint8 0..255)")
        return t
    raise UsageError(f"{name}: {key} has dtype {x.dtype}; expected uint8 (0..255), bool or float in [0, 1]")


def _labels(y: np.ndarray, n: int, name: str, key: str) -> torch.Tensor:
    if y.shape != (n,):
        raise UsageError(f"{name}: {key} has shape {y.shape}; expected ({n},), one label per image")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise UsageError(f"{name}: {key} has dtype {y.dtype}; expected integer class labels 0..K-1")
    if n and int(y.min()) < 0:
        raise UsageError(f"{name}: {key} has negative labels (min {int(y.min())}); expected 0..K-1")
    return torch.from_numpy(y.astype(np.int64))

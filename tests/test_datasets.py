"""Dataset names and loaders: CIFAR-10 from its on-disk format, npz files, image folders, stratified subsets."""

from __future__ import annotations

import pickle
import re
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from unlearn_search.data import Dataset, check_dataset_name, load_dataset, stratified_subset
from unlearn_search.errors import UsageError

# --- CIFAR-10 -------------------------------------------------------------------------------------------------------


def _write_cifar(root: Path, n_per_batch: int = 3, n_test: int = 4) -> tuple[np.ndarray, list[int], np.ndarray]:
    """A tiny CIFAR-10 in torchvision's layout (pickled dicts, uint8 rows of R, G, B planes); returns what it wrote."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": x, "labels": y}, f)
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_x[0, :] = 0
    test_x[0, 1024 + 5 * 32 + 7] = 255  # green plane, row 5, column 7
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test_x, "labels": [i % 10 for i in range(n_test)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    return np.concatenate(train_x), train_y, test_x


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails as it does offline, and is recorded."""
    import torchvision.datasets.cifar

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    monkeypatch.delenv("UNLEARN_SEARCH_DOWNLOAD", raising=False)
    return calls


class _Payload:
    """What a crafted batch file can carry: unpickling it calls ``pathlib.Path.touch`` on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("verify", ["1", "0"])
def test_cifar10_crafted_batch_never_runs_code(tmp_path, monkeypatch, no_network, verify):
    """A batch file that is not the published one is refused before unpickling (MD5); with verification off for
    one's own CIFAR-format files, the unpickler still rebuilds arrays only and refuses the payload."""
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f)
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path))
    monkeypatch.setenv("UNLEARN_SEARCH_CIFAR10_VERIFY", verify)
    expected = "not the published CIFAR-10 batch (MD5 differs)" if verify == "1" else "refusing to load"
    with pytest.raises(UsageError, match=re.escape(expected)) as e:
        load_dataset("cifar10")
    assert "\n" not in str(e.value) and "data_batch_1" in str(e.value)
    assert not marker.exists()


def test_cifar10_reads_torchvision_layout(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("UNLEARN_SEARCH_CIFAR10_VERIFY", "0")  # synthetic files, not the published ones
    train_x, train_y, _ = _write_cifar(tmp_path)
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path))
    data = load_dataset("cifar10")
    assert no_network == []  # present on disk: no download attempted
    assert data.name == "cifar10" and data.n_classes == 10
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert torch.equal(data.x_train, torch.from_numpy(train_x.reshape(-1, 3, 32, 32)).float() / 255)
    assert data.y_train.tolist() == train_y and data.y_test.tolist() == [0, 1, 2, 3]
    assert data.x_test[0, 1, 5, 7] == 1.0 and float(data.x_test[0].sum()) == 1.0  # channel, row, column order


def test_cifar10_absent_offline_is_one_line_naming_the_directory(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path / "data"))
    with pytest.raises(UsageError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert len(no_network) == 1  # the download was tried, through torchvision
    assert "\n" not in msg
    assert str(tmp_path / "data" / "cifar-10-batches-py") in msg and "download failed" in msg
    assert "place the extracted 'cifar-10-batches-py' folder" in msg


def test_cifar10_downloads_off(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path))
    monkeypatch.setenv("UNLEARN_SEARCH_DOWNLOAD", "0")
    with pytest.raises(UsageError, match=r"CIFAR-10 not found in .*cifar-10-batches-py and downloads are off"):
        load_dataset("cifar10")
    assert no_network == []


def test_cifar10_incomplete_folder_is_not_read(tmp_path, monkeypatch, no_network):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path))
    with pytest.raises(UsageError, match="download failed"):
        load_dataset("cifar10")


# --- npz ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw_float"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(1)
    c = 1 if layout == "nhw" else 3
    chw = rng.integers(0, 256, (10, c, 6, 5), dtype=np.uint8)  # the expected (N, C, H, W) content
    test_chw = rng.integers(0, 256, (4, c, 6, 5), dtype=np.uint8)
    if layout == "nhw":
        store, store_test = chw[:, 0], test_chw[:, 0]
    elif layout == "nhwc":
        store, store_test = chw.transpose(0, 2, 3, 1), test_chw.transpose(0, 2, 3, 1)
    else:
        store, store_test = chw / 255.0, test_chw.astype(np.float32) / 255
    y, y_test = rng.integers(0, 7, 10), np.array([6, 0, 1, 2])
    path = tmp_path / "d.npz"
    np.savez(path, x_train=store, y_train=y, x_test=store_test, y_test=y_test)
    data = load_dataset(f"npz:{path}")
    assert data.name == f"npz:{path}"
    assert data.input_shape == (c, 6, 5) and data.x_train.dtype == torch.float32
    torch.testing.assert_close(data.x_train, torch.from_numpy(chw).float() / 255)
    torch.testing.assert_close(data.x_test, torch.from_numpy(test_chw).float() / 255)
    assert data.y_train.tolist() == y.tolist() and data.y_test.dtype == torch.int64
    assert data.n_classes == 7


def _arrays(**override):
    rng = np.random.default_rng(2)
    arrays = {"x_train": rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), "y_train": np.arange(8) % 2,
              "x_test": rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), "y_test": np.array([0, 1, 1])}
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(("override", "match"), [
    ({"y_test": None}, r"missing array\(s\) y_test \(has: x_train, y_train, x_test; needs:"),
    ({"x_train": np.zeros((8, 64), np.uint8)}, r"x_train has shape \(8, 64\); expected \(N, H, W\)"),
    ({"x_train": np.zeros((8, 3, 3, 8), np.uint8)}, "cannot tell the channel axis"),
    ({"x_train": np.full((8, 8, 8), 2.0)}, r"x_train values span \[2, 2\]; float images must lie in \[0, 1\]"),
    ({"x_test": np.zeros((3, 8, 8), np.int32)}, "x_test has dtype int32; expected uint8"),
    ({"x_test": np.zeros((3, 1, 7, 8), np.uint8)}, r"x_train images are \(1, 8, 8\) .* but x_test images"),
    ({"y_train": np.arange(7)}, r"y_train has shape \(7,\); expected \(8,\)"),
    ({"y_train": np.arange(8) * 0.5}, "y_train has dtype float64; expected integer"),
    ({"y_test": np.array([0, -1, 1])}, "y_test has negative labels"),
    ({"x_train": np.where(np.eye(8, dtype=bool)[:, :, None], np.nan, 0.5) * np.ones((8, 8, 8))},
     r"x_train has 64 NaN or infinite value\(s\); images must be finite"),
    ({"y_train": np.zeros(8, np.int64)}, r"y_train has a single class \(0\); a classifier needs at least 2"),
])
def test_bad_npz_is_one_line_usage_error(tmp_path, override, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **_arrays(**override))
    with pytest.raises(UsageError, match=match) as e:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_npz_not_a_zip_and_pickles_refused(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(UsageError, match=r"not a \.npz file \(not a zip archive\)"):
        load_dataset(f"npz:{junk}")
    objs = tmp_path / "objs.npz"
    np.savez(objs, **_arrays(y_train=np.array([object()] * 8)))
    with pytest.raises(UsageError, match=r"cannot read it as a \.npz"):
        load_dataset(f"npz:{objs}")


# --- image folders --------------------------------------------------------------------------------------------------


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_classes_sorted_values_exact(tmp_path):
    rng = np.random.default_rng(3)
    written: dict[str, list[np.ndarray]] = {}
    for split, classes in (("train", ["cat", "ant", "bee"]), ("test", ["cat", "ant"])):
        for cls in classes:
            for i in range(2):
                arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # H=6, W=5, RGB
                _write_png(tmp_path / split / cls / f"{i}.png", arr)
                written.setdefault(f"{split}/{cls}", []).append(arr)
    (tmp_path / "train" / "bee" / "notes.txt").write_text("ignored: not an image")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.n_classes == 3 and data.input_shape == (3, 6, 5)
    assert data.y_train.tolist() == [0, 0, 1, 1, 2, 2]  # ant, bee, cat: sorted by name
    assert data.y_test.tolist() == [0, 0, 2, 2]
    expected = np.stack(written["train/ant"] + written["train/bee"] + written["train/cat"]).transpose(0, 3, 1, 2)
    assert torch.equal(data.x_train, torch.from_numpy(expected).float() / 255)
    assert torch.equal(data.x_test[2], torch.from_numpy(written["test/cat"][0].transpose(2, 0, 1)).float() / 255)


def test_image_folder_grey_gives_one_channel(tmp_path):
    for split in ("train", "test"):
        for cls in ("0", "1"):
            _write_png(tmp_path / split / cls / "a.png", np.full((4, 4), 51 * int(cls), np.uint8))
    data = load_dataset(f"folder:{tmp_path}")
    assert data.input_shape == (1, 4, 4)
    assert data.x_train[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2])


def test_image_folder_errors(tmp_path):
    _write_png(tmp_path / "train" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UsageError, match="no test/ sub-folder"):
        load_dataset(f"folder:{tmp_path}")
    _write_png(tmp_path / "test" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _write_png(tmp_path / "train" / "a" / "2.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(UsageError, match=r"2.png: image is 5x4 \(HxW\) but .*1.png is 4x4"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "train" / "a" / "2.png").unlink()
    _write_png(tmp_path / "test" / "z" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UsageError, match="test classes z are not train classes"):
        load_dataset(f"folder:{tmp_path}")


# --- names and subsets ----------------------------------------------------------------------------------------------


def test_check_dataset_name():
    check_dataset_name("digits")
    check_dataset_name("cifar10@2000,500")  # syntax only: nothing is loaded
    with pytest.raises(UsageError, match=r"unknown dataset 'cifar10@2000'; valid: cifar10, digits, imdb, sentiment, "
                                         r"folder:<path>, npz:<path>, text:<file>, each optionally followed by "
                                         r"@<n_train>,<n_test>"):
        check_dataset_name("cifar10@2000")
    with pytest.raises(UsageError, match=r"npz path '/no/such\.npz' does not exist"):
        check_dataset_name("npz:/no/such.npz")
    with pytest.raises(UsageError, match="subset sizes must be >= 1"):
        check_dataset_name("digits@0,10")


def _toy(counts: tuple[int, ...]) -> Dataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1)  # x identifies the row
    return Dataset("toy", x, y, x.clone(), y.clone(), n_classes=len(counts))


def test_stratified_subset_exact_and_proportional():
    data = _toy((60, 30, 10))
    sub = stratified_subset(data, 7, 10)
    assert Counter(sub.y_train.tolist()) == {0: 4, 1: 2, 2: 1}  # 4.2, 2.1, 0.7 -> largest remainder to class 2
    assert Counter(sub.y_test.tolist()) == {0: 6, 1: 3, 2: 1}
    rows = sub.x_train.flatten().long()
    assert torch.equal(data.y_train[rows], sub.y_train) and bool((rows.diff() > 0).all())  # real rows, in order
    assert sub.name == "toy@7,10" and sub.n_classes == 3
    assert torch.equal(stratified_subset(data, 7, 10).x_train, sub.x_train)  # seeded
    assert not torch.equal(stratified_subset(data, 50, 10, seed=1).x_train, stratified_subset(data, 50, 10).x_train)
    assert torch.equal(stratified_subset(data, 100, 100).x_train, data.x_train)
    with pytest.raises(UsageError, match=r"subset of 101 points from toy train \(100 points\); valid: 1..100"):
        stratified_subset(data, 101, 5)


def test_subset_by_name():
    full = load_dataset("digits")
    sub = load_dataset("digits@200,50")
    assert sub.name == "digits@200,50" and len(sub.x_train) == 200 and len(sub.x_test) == 50
    assert set(sub.y_train.tolist()) == set(range(10))
    assert torch.equal(sub.x_train, stratified_subset(full, 200, 50).x_train)

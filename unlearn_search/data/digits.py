"""scikit-learn's bundled 8x8 handwritten digits: the embedded default (no network).

1,797 grey-scale images, pixel values 0..16 scaled to [0, 1], shape (N, 1, 8, 8). A fixed, seeded, stratified
80/20 split (`SPLIT_SEED`), the same for every scenario seed, so that test sets are comparable across scenarios.
"""

from __future__ import annotations

import torch

from . import DATASETS, Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@DATASETS.register("digits")
def digits() -> Dataset:
    # scikit-learn here, not at the top: `data` imports without it (benchmarks/gpu_check.py, on a bare GPU machine)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype("float32").reshape(-1, 1, 8, 8)
    y = bunch.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        n_classes=10,
    )

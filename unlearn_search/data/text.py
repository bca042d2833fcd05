"""Text classification data: raw texts by name, tokenised for a model into the tensors every method uses.

Names (``data.check_dataset_name`` accepts them next to the image datasets):

- ``sentiment``: the embedded language task, generated (no network, fixed seed): short "reviews" of 8-19 filler
  words with one or two sentiment words of their class (positive / negative) and, in half of them, one word of the
  other class. A text with one cue of each class is ambiguous, so a model reaches about 0.8-0.85 test accuracy and
  must memorise part of its training set, as the image models must on digits: what Gaussian poisoning needs to
  show (with clear-cut texts the poisons were fitted without their noise being memorised, GUS z about 0-2).
  1,200 train and 400 test texts.
- ``imdb``: the IMDb review sentiment task (25,000 / 25,000 texts) through Hugging Face ``datasets``, downloaded on
  first use into ``$UNLEARN_SEARCH_DATA/hf`` (default ``~/.cache/unlearn_search/data/hf``) and read from there
  after; ``UNLEARN_SEARCH_DOWNLOAD=0`` never tries the network (as for CIFAR-10).
- ``text:<file>``: the user's own texts, a ``.csv`` or ``.jsonl`` file with columns ``text`` and ``label`` (integers,
  or strings mapped to 0..C-1 in sorted order) and optionally ``split`` (``train`` / ``test``); without ``split``, a
  fixed stratified 80/20 split.

Any of them with ``@<n_train>,<n_test>``: a class-stratified subset, as for images.

**The rows every method sees.** A text dataset is tokenised for the scenario's model (`tokenise`, the tokenizer
from `models.text.tokenizer_for`) into int64 rows of ``max_length + 2`` columns: the token ids, right-padded with
`PAD` (-1) and truncated at ``max_length``; then a noise seed and a noise scale in units of 1e-9 (`NOISE_SEED`,
`NOISE_SCALE`; seed -1 = no noise). A clean text has no noise; a Gaussian poison (`attacks.gaussian`) carries the
seed of its fixed noise, which the model (`models.text.TextClassifier`) regenerates and adds to the token
embeddings right after the lookup (`embedding_noise`). So a text batch is a plain tensor: indexing, ``len``,
``torch.cat`` and ``.to(device)`` work as for images, and no unlearning method needs a case for text.

Compute is counted in example-passes as for images: one pass of one padded sequence of ``max_length`` tokens; the
sequence length is the same for retraining and for every method, so it cancels out of the budget fractions.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..registry import Registry

PAD = -1  # token id of padding in the rows (the model looks up its own pad token there, masked out)
NOISE_SEED = -2  # column of the noise seed (-1: no noise)
NOISE_SCALE = -1  # column of the noise scale, in units of 1e-9
SCALE_UNIT = 1e-9
TEXT_PREFIX = "text:"
GENERATED_SEED = 0


@dataclass(frozen=True)
class Corpus:
    """Raw labelled texts, before tokenisation."""

    name: str
    texts_train: tuple[str, ...]
    y_train: torch.Tensor  # (N,) int64
    texts_test: tuple[str, ...]
    y_test: torch.Tensor
    n_classes: int


TEXT_DATASETS: Registry[Callable[[], Corpus]] = Registry("text dataset")


def is_text_dataset(name: str) -> bool:
    """Whether ``name`` (with or without ``@n_train,n_test``) names a text dataset."""
    from . import _parse

    base = _parse(name)[0]
    return base in TEXT_DATASETS or base.startswith(TEXT_PREFIX)


def load_corpus(base: str) -> Corpus:
    """The corpus called ``base`` (no subset suffix)."""
    if base.startswith(TEXT_PREFIX):
        return read_text_file(Path(base[len(TEXT_PREFIX):]).expanduser())
    return TEXT_DATASETS.get(base)()


# ---- the rows --------------------------------------------------------------------------------------------------


def encode_rows(ids: list[list[int]], max_length: int) -> torch.Tensor:
    """Token id lists -> int64 rows (N, max_length + 2): ids truncated and padded with `PAD`, no noise."""
    rows = torch.full((len(ids), max_length + 2), PAD, dtype=torch.int64)
    for i, seq in enumerate(ids):
        seq = seq[:max_length]
        rows[i, :len(seq)] = torch.tensor(seq, dtype=torch.int64)
    rows[:, NOISE_SEED] = -1
    rows[:, NOISE_SCALE] = 0
    return rows


def split_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows -> (token ids (B, L) with padding at `PAD`, attention mask (B, L) bool, noise seeds (B,), scales (B,))."""
    ids = x[:, :NOISE_SEED]
    return ids, ids != PAD, x[:, NOISE_SEED], x[:, NOISE_SCALE].double() * SCALE_UNIT


def with_noise(x: torch.Tensor, seeds: torch.Tensor, eps: float) -> torch.Tensor:
    """A copy of rows ``x`` whose row i carries noise seed ``seeds[i]`` at scale ``eps``."""
    out = x.clone()
    out[:, NOISE_SEED] = seeds
    out[:, NOISE_SCALE] = round(eps / SCALE_UNIT)
    return out


def noise_scale(eps: float) -> float:
    """``eps`` as the rows store it (rounded to 1e-9), the scale the model's noise actually has."""
    return round(eps / SCALE_UNIT) * SCALE_UNIT


def embedding_noise(seeds: torch.Tensor, scales: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """The fixed embedding noise of each row, (B, L, dim) float32 on the CPU: for a row with seed s >= 0,
    ``scale * N(0, I)`` drawn from a CPU generator seeded with s (the same numbers on every device and call), zero at
    padding positions; zero for rows without noise."""
    b, length = mask.shape
    out = torch.zeros(b, length, dim)
    seeds, scales, mask = seeds.cpu(), scales.cpu(), mask.cpu()
    for i in torch.nonzero(seeds >= 0).flatten().tolist():
        g = torch.Generator().manual_seed(int(seeds[i]))
        out[i] = torch.randn(length, dim, generator=g) * float(scales[i])
    return out * mask[:, :, None]


def tokenise(corpus: Corpus, model: str, max_length: int) -> Any:
    """The `data.Dataset` of ``corpus`` tokenised for ``model`` (its tokenizer kept on the dataset)."""
    from ..models.text import tokenizer_for
    from . import Dataset

    tok = tokenizer_for(model, corpus.texts_train)
    rows = [encode_rows(tok.encode(texts, max_length), max_length) for texts in (corpus.texts_train, corpus.texts_test)]
    return Dataset(name=corpus.name, x_train=rows[0], y_train=corpus.y_train, x_test=rows[1],
                   y_test=corpus.y_test, n_classes=corpus.n_classes, vocab_size=tok.vocab_size, tokenizer=tok)


#: The last text dataset tokenised, by (name, model, max_length, file fingerprint): one command loads its scenario's
#: data many times (validation, then every seed's and every study's scenario), and tokenising IMDb for GPT-2 takes
#: tens of seconds where loading digits takes milliseconds. Nothing mutates a dataset's tensors (attacks and splits
#: index copies out of them), so the same object can be handed out again.
_TOKENISED: dict[tuple[str, str, int, str], Any] = {}


def subset_corpus(corpus: Corpus, n_train: int, n_test: int, seed: int) -> Corpus:
    """A class-stratified subset, drawn as `data.stratified_subset` draws one for images."""
    from . import _stratified_indices

    g = torch.Generator().manual_seed(seed)
    keep_train = _stratified_indices(corpus.y_train, n_train, g, f"{corpus.name} train").tolist()
    keep_test = _stratified_indices(corpus.y_test, n_test, g, f"{corpus.name} test").tolist()
    return Corpus(name=f"{corpus.name}@{n_train},{n_test}",
                  texts_train=tuple(corpus.texts_train[i] for i in keep_train), y_train=corpus.y_train[keep_train],
                  texts_test=tuple(corpus.texts_test[i] for i in keep_test), y_test=corpus.y_test[keep_test],
                  n_classes=corpus.n_classes)


# ---- the datasets ----------------------------------------------------------------------------------------------

POSITIVE = ("good", "great", "lovely", "superb", "wonderful", "enjoyable", "brilliant", "charming", "moving", "fun")
NEGATIVE = ("bad", "awful", "poor", "boring", "terrible", "dull", "weak", "horrible", "tedious", "bland")
FILLER = ("the", "movie", "film", "plot", "actor", "actress", "scene", "story", "was", "is", "a", "and", "it",
          "this", "with", "very", "quite", "ending", "music", "cast", "script", "director", "of", "in", "but",
          "at", "times", "overall", "i", "found", "its", "rather", "some", "parts", "really")


def generate_sentiment(n: int, rng: np.random.Generator) -> tuple[tuple[str, ...], torch.Tensor]:
    """``n`` generated two-class texts (label 1 = positive), half of each class, in random order."""
    labels = rng.permutation(np.arange(n) % 2)
    texts = []
    for label in labels:
        own, other = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
        words = list(rng.choice(FILLER, size=int(rng.integers(8, 20))))
        cues = [*rng.choice(own, size=int(rng.integers(1, 3))), *rng.choice(other, size=int(rng.integers(0, 2)))]
        for w in cues:
            words.insert(int(rng.integers(0, len(words) + 1)), str(w))
        texts.append(" ".join(str(w) for w in words))
    return tuple(texts), torch.from_numpy(labels.astype("int64"))


@TEXT_DATASETS.register("sentiment")
def sentiment() -> Corpus:
    rng = np.random.default_rng(GENERATED_SEED)
    x_tr, y_tr = generate_sentiment(1200, rng)
    x_te, y_te = generate_sentiment(400, rng)
    return Corpus("sentiment", x_tr, y_tr, x_te, y_te, n_classes=2)


@TEXT_DATASETS.register("imdb")
def imdb() -> Corpus:
    """IMDb through ``datasets`` (``stanfordnlp/imdb``), cached in the data directory; one line when unavailable."""
    from .cifar10 import DOWNLOAD_ENV, data_dir

    cache = data_dir() / "hf"
    offline = os.environ.get(DOWNLOAD_ENV, "1").lower() in ("0", "false", "no")
    try:
        import datasets
    except ImportError:
        raise UsageError("dataset 'imdb' needs the 'llm' extra: pip install -e \".[llm]\"") from None
    was_offline = datasets.config.HF_HUB_OFFLINE  # read by `datasets.load_dataset` when it runs
    try:
        datasets.config.HF_HUB_OFFLINE = was_offline or offline
        ds = datasets.load_dataset("stanfordnlp/imdb", cache_dir=str(cache))
    except Exception as e:  # offline and absent, or a broken cache: one line naming where it was looked for
        raise UsageError(f"dataset 'imdb' is not in {cache} and could not be downloaded "
                         f"({'downloads are off' if offline else type(e).__name__})") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline  # the rest of the process as it was
    return Corpus("imdb", tuple(ds["train"]["text"]), torch.tensor(ds["train"]["label"], dtype=torch.int64),
                  tuple(ds["test"]["text"]), torch.tensor(ds["test"]["label"], dtype=torch.int64), n_classes=2)


def read_text_file(path: Path) -> Corpus:
    """``text:<file>``: CSV or JSONL with ``text``, ``label`` and optionally ``split`` (see the module docstring)."""
    if not path.is_file():
        raise UsageError(f"dataset 'text:{path}': no such file")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    elif path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        raise UsageError(f"dataset 'text:{path}': unknown file type {path.suffix!r}; valid: .csv, .jsonl")
    if not records or not {"text", "label"} <= set(records[0]):
        raise UsageError(f"dataset 'text:{path}': needs columns 'text' and 'label'")
    raw = [str(r["label"]) for r in records]
    classes = sorted(set(raw), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    if len(classes) < 2:
        raise UsageError(f"dataset 'text:{path}': needs at least 2 labels, found {classes}")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[v] for v in raw], dtype=torch.int64)
    texts = [str(r["text"]) for r in records]
    if "split" in records[0]:
        is_test = np.array([str(r["split"]).strip().lower() == "test" for r in records])
    else:
        from sklearn.model_selection import train_test_split

        _, test_idx = train_test_split(np.arange(len(texts)), test_size=0.2, random_state=GENERATED_SEED,
                                       stratify=labels.numpy())
        is_test = np.zeros(len(texts), dtype=bool)
        is_test[test_idx] = True
    tr, te = np.flatnonzero(~is_test).tolist(), np.flatnonzero(is_test).tolist()
    return Corpus(f"text:{path}", tuple(texts[i] for i in tr), labels[tr], tuple(texts[i] for i in te), labels[te],
                  n_classes=len(classes))

"""Language models for sequence classification, and the tokenizers that go with them (the language track).

Names (``models.check_model_name`` accepts them):

- ``hf:<name>``: a Hugging Face ``transformers`` causal LM with a sequence-classification head by hub name
  (``hf:gpt2``, ``hf:gpt2-medium``, any model whose ``AutoModelForSequenceClassification`` has a ``score`` head that
  pools the last real token, as GPT-2, LLaMA, Mistral, Qwen do), fine-tuned in full; its tokenizer from the same
  name. Both come from the hub when online and from Hugging Face's cache otherwise (``HF_HUB_OFFLINE=1`` never tries
  the network); absent offline, loading fails with one line naming the model and the cache directory.
- ``gpt2-tiny`` (2 layers, width 32: tests) and ``gpt2-mini`` (4 layers, width 64: the ``llm-small`` preset):
  randomly initialised GPT-2s built from a config, no download; their tokenizer is a word-level tokenizer of the
  ``tokenizers`` library whose vocabulary is built from the training texts (`WordTokenizer`).

`TextClassifier` wraps the ``transformers`` model so that it takes the int64 rows of `data.text` (token ids, then
a noise seed and scale) and returns logits: it looks up the token embeddings, adds the row's fixed Gaussian
embedding noise (`data.text.embedding_noise`: the Gaussian poisoning of text, right after the lookup and before the
position embeddings, which the transformer adds itself), runs the transformer with the attention mask and applies
the head to the last real token (right padding). Called with ``return_embeds=True`` it returns the clean token
embeddings, and with ``embeds=`` it runs from given embeddings: GUS differentiates the loss with respect to them.

Units of EU-k and CF-k (`unit_blocks`): [token + position embeddings, block 0], [block 1], ..., [last block, final
norm, head]: k = 1 is the last transformer block with the final norm and the classification head.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..registry import Registry

HF_PREFIX = "hf:"
UNK, PAD_TOKEN = "[UNK]", "[PAD]"
#: Rare words kept in every word-level vocabulary, so a text backdoor's trigger has a token of its own even when
#: the training texts never use it (BadNL's rare-word triggers).
RARE_WORDS = ("cf", "mn", "bb", "tq", "mb")

#: A builder takes (vocab_size, n_classes, max_length) and returns an untrained `TextClassifier`.
TEXT_MODELS: Registry[Callable[[int, int, int], nn.Module]] = Registry("text model")


def is_text_model(name: str) -> bool:
    return name.startswith(HF_PREFIX) or name in TEXT_MODELS


def check_text_model_name(name: str) -> None:
    if name.startswith(HF_PREFIX):
        if not name[len(HF_PREFIX):]:
            raise UsageError(f"model {name!r}: name the Hugging Face model after 'hf:', e.g. hf:gpt2")
        _needs_transformers(name)
        return
    TEXT_MODELS.get(name)


def _needs_transformers(what: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs the 'llm' extra: pip install -e \".[llm]\"") from None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


# ---- tokenizers ------------------------------------------------------------------------------------------------


class WordTokenizer:
    """A word-level tokenizer (``tokenizers``' WordLevel model, lower-cased, split on whitespace and punctuation)
    whose vocabulary is built from training texts: ``[PAD]`` = 0, ``[UNK]`` = 1, then `RARE_WORDS`, then every word
    of the texts by decreasing count (ties alphabetical), so the same texts always give the same ids."""

    def __init__(self, texts: Sequence[str]) -> None:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordLevel

        splitter = pre_tokenizers.Whitespace()
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(w for w, _ in splitter.pre_tokenize_str(t.lower()))
        words = [PAD_TOKEN, UNK, *RARE_WORDS]
        words += sorted((w for w in counts if w not in words), key=lambda w: (-counts[w], w))
        self.tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
        self.tok.normalizer = normalizers.Lowercase()
        self.tok.pre_tokenizer = splitter
        self.vocab_size = len(words)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        ids = [e.ids for e in self.tok.encode_batch(list(texts))]
        return [i[:max_length] for i in ids] if max_length else ids


class HubTokenizer:
    """The tokenizer of a ``hf:<name>`` model (``AutoTokenizer``)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(name)
        except OSError:
            raise UsageError(f"tokenizer of model 'hf:{name}' is not in the Hugging Face cache ({_hub_cache()}) "
                             "and could not be downloaded") from None
        self.vocab_size = len(self.tok)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        out = self.tok(list(texts), truncation=max_length is not None, max_length=max_length)
        return [list(i) for i in out["input_ids"]]


def tokenizer_for(model: str, train_texts: Sequence[str]) -> Any:
    """The tokenizer for ``model``: the hub model's own, or a `WordTokenizer` built from ``train_texts``."""
    check_text_model_name(model)
    if model.startswith(HF_PREFIX):
        return HubTokenizer(model[len(HF_PREFIX):])
    return WordTokenizer(train_texts)


# ---- the model -------------------------------------------------------------------------------------------------


class TextClassifier(nn.Module):
    """A ``transformers`` sequence classifier taking `data.text` rows (see the module docstring)."""

    hf: Any  # a ``transformers`` PreTrainedModel (typed loosely: its attributes are dynamic)

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf
        if getattr(hf, "score", None) is None:
            raise UsageError(f"model {type(hf).__name__} has no 'score' head; valid: causal LMs with a "
                             "sequence-classification head (GPT-2, LLaMA, Mistral, Qwen, ...)")

    def forward(self, x: torch.Tensor, embeds: torch.Tensor | None = None,
                return_embeds: bool = False) -> torch.Tensor:
        from ..data.text import embedding_noise, split_rows

        ids, mask, seeds, scales = split_rows(x)
        if embeds is None:
            embeds = self.hf.get_input_embeddings()(ids.clamp(min=0))  # padding: any id, masked out below
            if return_embeds:
                return embeds
            if bool((seeds >= 0).any()):
                embeds = embeds + embedding_noise(seeds, scales, mask, embeds.shape[-1]).to(embeds)
        hidden = self.hf.base_model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        last = (mask.long().sum(1) - 1).clamp(min=0)  # the last real token (right padding)
        return self.hf.score(hidden[torch.arange(len(hidden), device=hidden.device), last])

    def unit_blocks(self) -> tuple[list[nn.Module], list[int]]:
        """The blocks in forward order and the unit sizes (see the module docstring)."""
        base = self.hf.base_model
        children = [m for m in base.children() if next(m.parameters(), None) is not None]
        layers = next(m for m in children if isinstance(m, nn.ModuleList))
        i = children.index(layers)
        before, after = children[:i], children[i + 1:]
        blocks = [*before, *layers, *after, self.hf.score]
        n = len(layers)
        sizes = [len(before) + 1, *([1] * (n - 2)), 1 + len(after) + 1] if n >= 2 else [len(blocks)]
        return blocks, sizes


def gpt2_from_config(vocab_size: int, n_classes: int, max_length: int, width: int, layers: int,
                     heads: int) -> nn.Module:
    _needs_transformers("a GPT-2 model")
    from transformers import GPT2Config, GPT2ForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its bos/eos defaults outside a small vocabulary are warned about; unused here
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=max_length, n_embd=width, n_layer=layers, n_head=heads,
                     num_labels=n_classes, pad_token_id=0, bos_token_id=0, eos_token_id=0)  # type: ignore[call-arg]
    return TextClassifier(GPT2ForSequenceClassification(cfg))


@TEXT_MODELS.register("gpt2-tiny")
def gpt2_tiny(vocab_size: int, n_classes: int, max_length: int) -> nn.Module:
    return gpt2_from_config(vocab_size, n_classes, max_length, width=32, layers=2, heads=2)


@TEXT_MODELS.register("gpt2-mini")
def gpt2_mini(vocab_size: int, n_classes: int, max_length: int) -> nn.Module:
    return gpt2_from_config(vocab_size, n_classes, max_length, width=64, layers=4, heads=4)


def from_hub(name: str, n_classes: int) -> nn.Module:
    """``hf:<name>`` with a fresh ``n_classes`` head (seeded by the caller), in full precision."""
    _needs_transformers(f"model 'hf:{name}'")
    from transformers import AutoModelForSequenceClassification

    try:
        hf = AutoModelForSequenceClassification.from_pretrained(name, num_labels=n_classes)
    except OSError:
        raise UsageError(f"model 'hf:{name}' is not in the Hugging Face cache ({_hub_cache()}) and could not be "
                         "downloaded") from None
    if hf.config.pad_token_id is None:
        hf.config.pad_token_id = hf.config.eos_token_id
    return TextClassifier(hf)


def create_text_model(name: str, vocab_size: int, n_classes: int, max_length: int) -> nn.Module:
    if name.startswith(HF_PREFIX):
        return from_hub(name[len(HF_PREFIX):], n_classes)
    return TEXT_MODELS.get(name)(vocab_size, n_classes, max_length)

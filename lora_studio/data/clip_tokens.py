"""How many CLIP tokens a caption takes against the 75 that Stable Diffusion's text
encoder reads (77 positions less the start and end tokens; training cuts the rest).

The count comes from the CLIP tokenizer of the job's base model when it is a local
diffusers folder (its tokenizer/ folder, read with the Rust ``tokenizers`` library:
no torch, no transformers in the window's process). Without one it is an estimate
from the words and punctuation, labelled "≈"."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

CLIP_WINDOW = 75
# CLIP's pre-tokenizer: runs of letters, single digits, runs of other non-space marks.
_PIECES = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_", re.UNICODE)
# Letters per token of an average word, for the estimate (common tags are one token,
# long or rare words split into a few).
LETTERS_PER_TOKEN = 7
CACHED_CAPTIONS = 200_000


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool      # from the model's tokenizer; False: estimated

    @property
    def over(self) -> bool:
        return self.tokens > CLIP_WINDOW

    @property
    def label(self) -> str:
        return f"{'' if self.exact else '≈'}{self.tokens} / {CLIP_WINDOW} tokens"


def estimate_tokens(text: str) -> int:
    """Without the tokenizer: a token per digit and punctuation mark, and per
    LETTERS_PER_TOKEN letters of each word (at least one)."""
    n = 0
    for piece in _PIECES.findall(text.lower()):
        n += math.ceil(len(piece) / LETTERS_PER_TOKEN) if piece[0].isalpha() else len(piece)
    return n


def _clip_from_vocab(folder: Path):
    """A CLIP tokenizer from vocab.json + merges.txt (what diffusers folders hold), built
    as transformers' CLIP converter builds it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line.strip() and
              not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>",
                               end_of_word_suffix="</w>", continuing_subword_prefix="",
                               fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(),
                                           normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                                   r"""[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def load_clip_tokenizer(model: str | Path):
    """The CLIP tokenizer of a local diffusers model folder, or None (a single-file
    checkpoint, a Hub id, no ``tokenizers`` library, a folder without one)."""
    folder = Path(model) / "tokenizer"
    try:
        from tokenizers import Tokenizer
        if (folder / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return _clip_from_vocab(folder)
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 - a damaged tokenizer file: fall back to the estimate
        return None
    return None


class CaptionTokens:
    """Counts captions with one tokenizer (or the estimate), remembering the counts."""

    def __init__(self, tokenizer=None, source: str = ""):
        self.tokenizer = tokenizer
        self.source = source       # the model folder the tokenizer came from
        self._counts: dict[str, TokenCount] = {}

    @classmethod
    def for_model(cls, model: str | Path | None) -> "CaptionTokens":
        tokenizer = load_clip_tokenizer(model) if model else None
        return cls(tokenizer, str(model) if tokenizer is not None else "")

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def prefill(self, captions: list[str]) -> None:
        """Count many captions at once (the tokenizer batches them on its own threads)."""
        todo = [c for c in dict.fromkeys(captions) if c not in self._counts]
        if self.tokenizer is None or not todo or len(todo) > CACHED_CAPTIONS:
            return
        if len(self._counts) + len(todo) > CACHED_CAPTIONS:
            self._counts.clear()
        for caption, enc in zip(todo, self.tokenizer.encode_batch(todo,
                                                                  add_special_tokens=False)):
            self._counts[caption] = TokenCount(len(enc.ids), True)

    def count(self, caption: str) -> TokenCount:
        hit = self._counts.get(caption)
        if hit is not None:
            return hit
        if self.tokenizer is not None:
            n = len(self.tokenizer.encode(caption, add_special_tokens=False).ids)
            found = TokenCount(n, True)
        else:
            found = TokenCount(estimate_tokens(caption), False)
        if len(self._counts) >= CACHED_CAPTIONS:
            self._counts.clear()
        self._counts[caption] = found
        return found

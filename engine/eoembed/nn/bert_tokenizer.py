"""BERT's uncased WordPiece tokenizer (Devlin et al. 2019), with its vocabulary read from a file.

The algorithm: drop control characters and normalise whitespace; put spaces around CJK
ideographs; lower-case and strip accents (NFD, drop combining marks); split on whitespace and
punctuation; split each word greedily into the longest vocabulary pieces, continuation pieces
prefixed ``##`` (a word that cannot be split, or is over 100 characters, becomes ``[UNK]``).
A sentence is framed ``[CLS] … [SEP]``, then truncated and zero-padded to a fixed length.

The vocabulary (``vocab.txt``, one piece per line, id = line number) is not shipped with
eoembed; :data:`DEFAULT_VOCAB` names the published bert-base-uncased file.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import torch

from ..errors import WeightsError

#: the bert-base-uncased vocabulary on the Hugging Face Hub (Apache-2.0)
DEFAULT_VOCAB = ("hf:google-bert/bert-base-uncased", "vocab.txt")
MAX_WORD_CHARS = 100


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_tokens(text: str) -> list[str]:
    """Cleaned, lower-cased, accent-free words and punctuation marks of `text`."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if ch in "\t\n\r" or cat == "Zs":
            chars.append(" ")
        elif cat.startswith("C"):
            continue
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    out: list[str] = []
    for word in "".join(chars).split():
        word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                if piece:
                    out.append(piece)
                out.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            out.append(piece)
    return out


class WordPieceTokenizer:
    """Text → ``[CLS] … [SEP]`` token ids of bert-base-uncased, padded to a fixed length."""

    def __init__(self, vocab: list[str]) -> None:
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        for special in ("[CLS]", "[SEP]", "[UNK]"):
            if special not in self.ids:
                raise WeightsError(f"the BERT vocabulary lacks {special}; use bert-base-uncased's vocab.txt")

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        """Read ``vocab.txt`` (one piece per line)."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise WeightsError(f"the BERT vocabulary {path} could not be read ({exc}); give bert-base-uncased's vocab.txt") from exc
        return cls([ln.rstrip("\n") for ln in lines])

    def wordpieces(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word (``[UNK]`` when impossible)."""
        if len(word) > MAX_WORD_CHARS:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                cand = word[start:end] if start == 0 else "##" + word[start:end]
                if cand in self.ids:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(cand)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of `text` (no special tokens)."""
        return [p for w in basic_tokens(text) for p in self.wordpieces(w)]

    def __call__(self, texts: list[str], length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``, both ``(N, length)`` int64: ``[CLS] tokens [SEP]`` cut to `length`
        (as RemoteSAM does, after adding the special tokens), then padded with id 0 / mask 0."""
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        for i, text in enumerate(texts):
            toks = ["[CLS]", *self.tokenize(text), "[SEP]"][:length]
            ids[i, : len(toks)] = torch.tensor([self.ids[t] for t in toks])
            mask[i, : len(toks)] = 1
        return ids, mask

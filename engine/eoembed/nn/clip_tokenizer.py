"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), with its vocabulary read from files.

The algorithm: clean the text (HTML entities, Unicode NFC, typographic quotes, whitespace) and
lower-case it; split it into words, contractions, single digits and punctuation runs; map each
word's UTF-8 bytes to printable characters; apply the ranked BPE merges inside each word (the
last character carries the end-of-word mark ``</w>``); look the pieces up; frame the sentence
with ``<|startoftext|>`` … ``<|endoftext|>`` and pad or truncate it to the context length (77).

The merges are not shipped with eoembed: they come from the files published with CLIP models —
Hugging Face's ``merges.txt`` (+ optional ``vocab.json``) or open_clip's
``bpe_simple_vocab_16e6.txt.gz`` — found through :func:`load_clip_tokenizer`. Without a
``vocab.json`` the token ids follow CLIP's layout: the 256 byte symbols, the same with ``</w>``,
one id per merge in rank order, then the two special tokens (49408 ids with 48894 merges).
"""

from __future__ import annotations

import gzip
import html
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import WeightsError

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
CONTEXT_LENGTH = 77
#: Merges CLIP uses: 49152 − 256 byte symbols − 2 specials; the files may hold more.
N_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"

#: Environment variable naming a tokenizer file or folder (see :func:`load_clip_tokenizer`).
ENV_BPE = "EOEMBED_CLIP_BPE"
#: Default source of the vocabulary: OpenAI's CLIP tokenizer files on the Hugging Face Hub
#: (MIT licence), the ones RemoteCLIP and Llama3-MS-CLIP were trained with through open_clip.
DEFAULT_BPE_REPO = "hf:openai/clip-vit-base-patch32"
DEFAULT_MERGES_FILE = "merges.txt"
OPEN_CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
    "\u3000": " ",
})
_WS = re.compile(r"\s+")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters.

    Bytes that are printable Latin-1 (``!``–``~``, ``¡``–``¬``, ``®``–``ÿ``) stand for
    themselves; the other 68 get ``chr(256 + n)`` in byte order. The dict's order (printable
    ones first) is the order of the first 256 token ids.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def clean_text(text: str) -> str:
    """Normalise as CLIP does before tokenising: unescape HTML (twice), NFC, plain quotes,
    Latin ligatures and full-width ASCII undone, whitespace runs → one space, trimmed, lower case.

    (Upstream runs ``ftfy.fix_text``; these are the parts of it that change ordinary text.
    Mojibake repair is not reproduced.)
    """
    text = html.unescape(html.unescape(str(text)))
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = "".join(chr(ord(c) - 0xFEE0) if "\uff01" <= c <= "\uff5e" else c for c in text)
    return _WS.sub(" ", text).strip().lower()


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _is_number(c: str) -> bool:
    return unicodedata.category(c)[0] == "N"


def pretokenize(text: str) -> list[str]:
    """Split cleaned text as CLIP's pattern does, trying at each position, in order: a special
    token, a contraction (``'s 't 're 've 'm 'll 'd``), a run of letters, one number character,
    a run of characters that are neither space, letter nor number. Spaces separate and vanish.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        special = next((s for s in (SOT, EOT) if text.startswith(s, i)), None)
        if special is None and c == "'":
            special = next((s for s in _CONTRACTIONS if text.startswith(s, i)), None)
        if special is not None:
            out.append(special)
            i += len(special)
            continue
        j = i + 1
        if _is_letter(c):
            while j < n and _is_letter(text[j]):
                j += 1
        elif not _is_number(c):
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        out.append(text[i:j])
        i = j
    return out


def read_merges(path: str | Path, limit: int = N_MERGES) -> list[tuple[str, str]]:
    """The first `limit` merges of a ``merges.txt`` or ``bpe_simple_vocab_16e6.txt.gz`` file.

    Both formats are UTF-8 text with a header line holding ``#version`` (skipped) and one
    ``left right`` pair per line, best (most frequent) first.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        lines = data.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise WeightsError(f"the CLIP BPE merges file {path} could not be read ({exc})") from exc
    first = 1
    if lines and "#version" in lines[0]:  # '#version: 0.2' (HF) or '"bpe_simple_vocab_16e6.txt#version: 0.2'
        lines, first = lines[1:], 2
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, start=first):
        if len(merges) >= limit:
            break
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise WeightsError(f"the CLIP BPE merges file {path} line {lineno} is not a 'left right' pair: {line!r}")
        merges.append((parts[0], parts[1]))
    if not merges:
        raise WeightsError(f"the CLIP BPE merges file {path} holds no merges")
    return merges


def clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token → id in CLIP's layout: byte symbols, byte symbols + ``</w>``, merges, specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges] + [SOT, EOT]
    return {t: i for i, t in enumerate(tokens)}


class CLIPTokenizer:
    """Byte-level BPE tokenizer of CLIP (Radford et al. 2021), as used by RemoteCLIP and
    Llama3-MS-CLIP through open_clip: text → ``[N, 77]`` int64 token ids.

    Args:
        merges: ranked BPE merges (best first).
        vocab: token → id; None builds CLIP's layout from `merges` (:func:`clip_vocab`).
        context_length: tokens per row, start and end tokens included.
    """

    def __init__(self, merges: Sequence[tuple[str, str]], vocab: Mapping[str, int] | None = None,
                 context_length: int = CONTEXT_LENGTH) -> None:
        if context_length < 2:
            raise ValueError(f"context_length={context_length} must leave room for the start and end tokens")
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.encoder = dict(vocab) if vocab is not None else clip_vocab(self.merges)
        for special in (SOT, EOT):
            if special not in self.encoder:
                raise WeightsError(f"the CLIP vocabulary lacks the special token {special!r}")
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_token_id = self.encoder[SOT]
        self.eot_token_id = self.encoder[EOT]
        self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> tuple[str, ...]:
        """The BPE pieces of one pre-token (already mapped to byte symbols).

        Starting from single symbols (the last one with ``</w>``), the adjacent pair with the
        best rank is merged everywhere, left to right, until no adjacent pair is a merge.
        """
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
        while len(parts) > 1:
            pairs = {(parts[k], parts[k + 1]) for k in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            k = 0
            while k < len(parts):
                if k < len(parts) - 1 and (parts[k], parts[k + 1]) == best:
                    merged.append(parts[k] + parts[k + 1])
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) < 100_000:
            self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start/end tokens or padding."""
        ids: list[int] = []
        for piece in pretokenize(clean_text(text)):
            symbols = piece if piece in (SOT, EOT) else "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            for token in self.bpe(symbols):
                try:
                    ids.append(self.encoder[token])
                except KeyError as exc:
                    raise WeightsError(
                        f"the CLIP vocabulary has no id for {token!r}; the merges and vocab.json do not match"
                    ) from exc
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens kept, end-of-word marks turned into spaces)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray()
        for c in text.replace(END_OF_WORD, " "):
            data.extend(self.byte_decoder[c].to_bytes(1, "big") if c in self.byte_decoder else c.encode("utf-8"))
        return data.decode("utf-8", errors="replace")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """``[N, context_length]`` int64 ids: start, text, end, zero padding.

        Text too long for the context is cut, keeping the end token as the last id.
        """
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > n:
                ids = ids[:n]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    @classmethod
    def from_files(cls, merges: str | Path, vocab: str | Path | None = None,
                   context_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
        """A tokenizer from a merges file and, optionally, a Hugging Face ``vocab.json``."""
        table = None
        if vocab is not None:
            try:
                table = json.loads(Path(vocab).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise WeightsError(f"the CLIP vocabulary {vocab} could not be read ({exc})") from exc
        return cls(read_merges(merges), table, context_length)


def _from_path(path: Path, context_length: int) -> CLIPTokenizer:
    if path.is_dir():
        for name in (DEFAULT_MERGES_FILE, OPEN_CLIP_BPE_FILE):
            if (path / name).is_file():
                vocab = path / "vocab.json"
                return CLIPTokenizer.from_files(path / name, vocab if vocab.is_file() else None, context_length)
        raise WeightsError(
            f"the folder {path} holds neither {DEFAULT_MERGES_FILE} nor {OPEN_CLIP_BPE_FILE}; "
            "put CLIP's tokenizer files there"
        )
    if not path.is_file():
        raise WeightsError(f"the CLIP tokenizer file {path} does not exist; point {ENV_BPE} or the source at it")
    vocab = path.with_name("vocab.json")
    return CLIPTokenizer.from_files(path, vocab if path.name == DEFAULT_MERGES_FILE and vocab.is_file() else None,
                                    context_length)


def load_clip_tokenizer(source: str | Path | None = None, *,
                        context_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """The CLIP tokenizer from the first source given, in this order:

    1. `source`: a merges file (``merges.txt``, ``*.txt.gz``), a folder holding one (with an
       optional ``vocab.json`` beside ``merges.txt``), or ``hf:<owner>/<repo>[@rev]`` whose
       ``merges.txt`` is resolved like a checkpoint (cache, ``EOEMBED_WEIGHTS_DIR``, offline);
    2. the environment variable ``EOEMBED_CLIP_BPE`` (same forms);
    3. :data:`DEFAULT_BPE_REPO` (OpenAI's tokenizer files, MIT), resolved the same way.

    Nothing is ever fetched when the files are cached or given locally.
    """
    src = source if source is not None else os.environ.get(ENV_BPE) or DEFAULT_BPE_REPO
    src = str(src)
    if src.startswith("hf:"):
        from ..weights import resolve

        return CLIPTokenizer.from_files(resolve(src, DEFAULT_MERGES_FILE), None, context_length)
    return _from_path(Path(src).expanduser(), context_length)

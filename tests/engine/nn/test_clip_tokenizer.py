"""CLIP's BPE tokenizer: byte map, id layout, BPE merging, cleaning, framing, vocabulary sources.

Expected ids are derived by hand in the comments: byte symbol ids are the position in the
printable-first byte table ('!' = 0, so a printable ASCII character c has id ord(c) − 33), the
same symbol with '</w>' is that + 256, merge r has id 512 + r, and the two specials come last.
"""

from __future__ import annotations

import gzip
import json

import pytest
from eoembed.errors import WeightsError
from eoembed.nn.clip_tokenizer import (
    CLIPTokenizer,
    bytes_to_unicode,
    clean_text,
    load_clip_tokenizer,
    pretokenize,
    read_merges,
)

# Hand-written merges, best first; ids 512 + rank.
TINY_MERGES = [
    ("t", "h"),        # 512 "th"
    ("th", "e</w>"),   # 513 "the</w>"
    ("a", "t</w>"),    # 514 "at</w>"
    ("c", "at</w>"),   # 515 "cat</w>"
    ("o", "n</w>"),    # 516 "on</w>"
    ("s", "a"),        # 517 "sa" (ranked below a+t</w>, so "sat" never uses it)
    ("sa", "t</w>"),   # 518 "sat</w>"
]
SOT, EOT = 519, 520


def _ascii(c: str) -> int:
    return ord(c) - 33


def _ascii_w(c: str) -> int:
    return 256 + ord(c) - 33


@pytest.fixture()
def tiny() -> CLIPTokenizer:
    return CLIPTokenizer(TINY_MERGES)


def _write_merges(path, merges, header="#version: 0.2"):
    path.write_text("\n".join([header, *(f"{a} {b}" for a, b in merges)]) + "\n", encoding="utf-8")
    return path


def test_byte_table_is_a_printable_bijection_in_clip_order():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    order = list(table.values())
    assert order[0] == "!" and order.index("a") == 64 and order.index("~") == 93
    assert order.index("¡") == 94 and order.index("®") == 106 and order.index("ÿ") == 187
    assert table[0] == chr(256) and table[ord(" ")] == chr(256 + 32) == "Ġ"
    assert order.index(table[0]) == 188


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the: t h e</w> → th e</w> → the</w>
        ("The cat", [513, 515]),
        # sat: (a, t</w>) outranks (s, a) → s + at</w>, and (s, at</w>) is no merge
        ("sat", [_ascii("s"), 514]),
        ("mat.", [_ascii("m"), 514, _ascii_w(".")]),
        # contraction split off; nothing merges inside "it"
        ("it's", [_ascii("i"), _ascii_w("t"), _ascii("'"), _ascii_w("s")]),
        ("it\u2019s", [_ascii("i"), _ascii_w("t"), _ascii("'"), _ascii_w("s")]),
        # numbers one character at a time
        ("2023", [_ascii_w("2"), _ascii_w("0"), _ascii_w("2"), _ascii_w("3")]),
        # punctuation runs stay together
        ("hi!!", [_ascii("h"), _ascii_w("i"), _ascii("!"), _ascii_w("!")]),
        # HTML entity, case and whitespace cleaning
        ("  THE&amp;cat \n\t on  ", [513, _ascii_w("&"), 515, 516]),
        # é = UTF-8 C3 A9 → 'Ã' (id 94 + 12 + 195 − 174 = 127), '©' (94 + 169 − 161 = 102) + </w>
        ("É", [127, 256 + 102]),
        ("<|endoftext|>", [EOT]),
    ],
)
def test_tiny_vocabulary_tokenises_as_derived_by_hand(tiny, text, expected):
    assert tiny.encode(text) == expected


def test_sentence_is_framed_padded_and_decoded(tiny):
    ids = tiny(["the cat sat on the mat.", "on"])
    assert ids.shape == (2, 77) and str(ids.dtype) == "torch.int64"
    want = [SOT, 513, 515, _ascii("s"), 514, 516, 513, _ascii("m"), 514, _ascii_w("."), EOT]
    assert ids[0, : len(want)].tolist() == want and ids[0, len(want):].eq(0).all()
    assert ids[1, :3].tolist() == [SOT, 516, EOT]
    # every word piece ends in </w>, so decoding puts a space before the full stop (as upstream)
    assert tiny.decode(want[1:-1]) == "the cat sat on the mat . "
    assert tiny.decode(tiny.encode("Été")).strip() == "été"


def test_long_text_is_truncated_keeping_the_end_token(tiny):
    ids = tiny("the " * 100)[0]
    assert ids[0] == SOT and ids[-1] == EOT and ids[1:76].eq(513).all()
    assert tiny("the cat", context_length=3)[0].tolist() == [SOT, 513, EOT]


def test_pretokenizer_and_cleaning():
    assert clean_text("  A&amp;amp;B\u00a0 ｃａｔ ﬁsh ") == "a&b cat fish"
    assert pretokenize("don't stop!'s 3.5kg héllo") == [
        "don", "'t", "stop", "!'", "s", "3", ".", "5", "kg", "héllo"]


def test_full_size_layout_with_synthetic_merges(tmp_path):
    symbols = list(bytes_to_unicode().values())
    pairs = [(a, b) for a in symbols for b in symbols][: 48894 + 100]  # 100 more than CLIP uses
    path = _write_merges(tmp_path / "merges.txt", pairs)
    tok = CLIPTokenizer.from_files(path)
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (49406, 49407)
    assert tok.encoder["!"] == 0 and tok.encoder["a</w>"] == 320 and tok.encoder["!</w>"] == 256
    assert tok.encoder[pairs[0][0] + pairs[0][1]] == 512
    assert tok.encoder["".join(pairs[48893])] == 49405 and "".join(pairs[48894]) not in tok.encoder
    # "a" is one symbol: CLIP's well-known [49406, 320, 49407]
    assert tok("a")[0, :3].tolist() == [49406, 320, 49407]


def test_open_clip_gz_format_reads_like_merges_txt(tmp_path, tiny):
    gz = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    body = '"bpe_simple_vocab_16e6.txt#version: 0.2\n' + "\n".join(f"{a} {b}" for a, b in TINY_MERGES) + "\n"
    gz.write_bytes(gzip.compress(body.encode("utf-8")))
    assert read_merges(gz) == TINY_MERGES
    assert CLIPTokenizer.from_files(gz).encode("the cat sat") == tiny.encode("the cat sat")
    assert read_merges(gz, limit=3) == TINY_MERGES[:3]


def test_vocab_json_ids_take_precedence(tmp_path, tiny):
    folder = tmp_path / "tok"
    folder.mkdir()
    _write_merges(folder / "merges.txt", TINY_MERGES)
    vocab = {t: 1000 + i for t, i in tiny.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = load_clip_tokenizer(folder)
    assert tok.encode("the cat") == [1513, 1515] and tok.eot_token_id == 1520


def test_environment_variable_names_the_vocabulary(tmp_path, monkeypatch, tiny):
    path = _write_merges(tmp_path / "my_merges.txt", TINY_MERGES)
    monkeypatch.setenv("EOEMBED_CLIP_BPE", str(path))
    assert load_clip_tokenizer().encode("the cat") == [513, 515]


def test_default_source_resolves_through_weights_mirror_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("EOEMBED_CLIP_BPE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(mirror))
    with pytest.raises(WeightsError, match="merges.txt"):
        load_clip_tokenizer()
    (mirror / "openai" / "clip-vit-base-patch32").mkdir(parents=True)
    _write_merges(mirror / "openai" / "clip-vit-base-patch32" / "merges.txt", TINY_MERGES)
    assert load_clip_tokenizer().encode("the cat") == [513, 515]


def test_bad_vocabulary_files_raise_weights_error(tmp_path):
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\nt h\nthree words here\n", encoding="utf-8")
    with pytest.raises(WeightsError, match="line 3"):
        read_merges(bad)
    with pytest.raises(WeightsError, match="does not exist"):
        load_clip_tokenizer(tmp_path / "nowhere.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither"):
        load_clip_tokenizer(tmp_path / "empty")


def test_pretokenizer_matches_clip_pattern_on_ascii():
    """On lower-case ASCII, CLIP's pattern reduces to a stdlib regex: compare on random text."""
    import random
    import re

    pattern = re.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"
    )
    rng = random.Random(0)
    alphabet = "abcdestz019 '!.,<|>-_\"\t"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        text += rng.choice(["", "<|endoftext|>", "'ll", "x's"])
        assert pretokenize(text) == pattern.findall(text), text

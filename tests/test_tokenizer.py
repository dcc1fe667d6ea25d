"""Tests for llama2_lab.text.tokenizer: conformance with Meta's tokenizer.model and llama2.c's
tokenizer.bin (when ../shared/reference is present), and properties of a tokenizer we train."""

import hashlib
import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llama2_lab.formats.llama2c import read_tokenizer_bin, write_tokenizer_bin
from llama2_lab.text.tokenizer import LLAMA2_TRAINER_SPEC, StreamDecoder, Tokenizer, describe, train_tokenizer

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

# From reference/README.md (sentencepiece 0.2.3 on Meta's tokenizer.model) and FACTS §2.3.
REAL_CASES = {
    "Hello world": [15043, 3186],
    " leading space": [29871, 8236, 2913],
    "3.14159": [29871, 29941, 29889, 29896, 29946, 29896, 29945, 29929],
    "emoji 🦙 test": [953, 29877, 2397, 29871, 243, 162, 169, 156, 1243],
    "ünïcödé": [2505, 29876, 30085, 29883, 9289, 29948],
    "[INST]": [518, 25580, 29962],
    "[/INST]": [518, 29914, 25580, 29962],
    "12345": [29871, 29896, 29906, 29941, 29946, 29945],
}
TOK512_CASES = {"Once upon a time": [403, 407, 261, 378]}
SHA256 = {
    "tok512.bin": "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
    "tokenizer.bin": "50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361",
}


def reference(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file {path} not found (conformance data lives in ../shared/reference)")
    return path


@pytest.fixture(scope="module")
def real():
    return Tokenizer(reference("tokenizer.model"))


def sample_texts(n_lines: int = 1500, seed: int = 0) -> list[str]:
    """Varied generated text: words, digits, accents, CJK, rare emoji, runs of spaces."""
    rng = random.Random(seed)
    words = (
        "the a llama alpaca ran over under happy blue green river stone token model "
        "attention über café naïve façade 東京 学习 привет мир λόγος"
    ).split()
    out = []
    for _ in range(n_lines):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        line += rng.choice([".", "!", "?", ",", f" {rng.randint(0, 9999)}", " 3.14", "  x", "\tend"])
        if rng.random() < 0.05:
            line += " 🦙"
        out.append(line)
    return out


@pytest.fixture(scope="module")
def trained():
    start = time.perf_counter()
    tok = train_tokenizer(sample_texts(), vocab_size=400)
    assert time.perf_counter() - start < 5, "training the test tokenizer should take well under 5 s"
    return tok


# --- the real Llama 2 tokenizer ----------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("text", list(REAL_CASES))
def test_real_tokenizer_ids(real, text):
    assert real.encode(text) == REAL_CASES[text]
    assert real.decode(real.encode(text, bos=True, eos=True)) == text


@pytest.mark.reference
def test_tok512_ids():
    tok = Tokenizer(reference("tok512.model"))
    assert tok.encode("Once upon a time") == TOK512_CASES["Once upon a time"]
    assert len(tok) == 512


@pytest.mark.reference
def test_real_special_ids(real):
    assert (real.bos_id, real.eos_id, real.pad_id, real.unk_id) == (1, 2, -1, 0)
    assert real.n_words == real.vocab_size == len(real) == 32000
    assert real.encode("Hi", bos=True, eos=True) == [1, *real.encode("Hi"), 2]
    assert real.id_to_piece(29871) == "▁" and real.piece_to_id("<0x0A>") == 13
    assert real.pieces([1, 2, 15043]) == ["<s>", "</s>", "▁Hello"]
    assert [real.is_byte(i) for i in (2, 3, 258, 259)] == [False, True, True, False]
    assert real.is_control(1) and real.is_control(2) and not real.is_control(0)


@pytest.mark.reference
def test_real_special_text_is_not_special(real):
    # The text "<s>" is three ordinary pieces; BOS exists only as an id (FACTS §2.3).
    ids = real.encode("<s> and </s>")
    assert 1 not in ids and 2 not in ids
    assert real.encode("<s>") == [529, 29879, 29958]
    assert real.decode([1, 15043, 2, 1, 3186, 2]) == "Hello world"  # control ids vanish


@pytest.mark.reference
def test_real_newline_and_emoji(real):
    assert real.encode("a\nb")[1] == 13  # newline -> byte token <0x0A>
    assert real.encode("🦙") == [29871, 243, 162, 169, 156]  # "▁" + 4 byte tokens


@pytest.mark.reference
@pytest.mark.parametrize("text", ["  two spaces", "trailing  ", " ", "a\n\n  b", "\ttab\r\n", "x   y"])
def test_real_whitespace_round_trip(real, text):
    assert real.decode(real.encode(text)) == text


@pytest.mark.reference
def test_describe_real_matches_llama2_spec(real):
    spec = describe(real)
    trainer, normalizer = spec["trainer_spec"], spec["normalizer_spec"]
    for key, value in LLAMA2_TRAINER_SPEC.items():
        got = normalizer["name"] if key == "normalization_rule_name" else normalizer.get(key, trainer.get(key))
        assert got == value, key
    assert spec["pieces"] == {"NORMAL": 31741, "UNKNOWN": 1, "CONTROL": 2, "BYTE": 256}
    assert trainer["num_threads"] == 80 and trainer["unk_surface"] == " ⁇ "


# --- llama2.c tokenizer.bin (FACTS §5.4) -------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize(
    "model, binary, max_len", [("tok512.model", "tok512.bin", 7), ("tokenizer.model", "tokenizer.bin", 27)]
)
def test_export_matches_llama2c(tmp_path, model, binary, max_len):
    tok = Tokenizer(reference(model))
    out = tmp_path / "out.bin"
    write_tokenizer_bin(tok, out)
    data = out.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHA256[binary]
    assert data == reference(binary).read_bytes()
    read = read_tokenizer_bin(reference(binary), len(tok))
    assert read.max_token_length == max_len and len(read.pieces) == len(tok)
    assert read.pieces[1] == ("\n<s>\n", 0.0) and read.pieces[2] == ("\n</s>\n", 0.0)
    assert read.pieces[3][0] == "<0x00>" and read.pieces[13][0] == "<0x0A>"
    for i in (0, 259, len(tok) - 1):
        assert read.pieces[i] == (tok.id_to_piece(i).replace("▁", " "), tok.score(i))
    assert read_tokenizer_bin(reference(binary)) == read  # None: read to the end


def test_tokenizer_bin_round_trip(trained, tmp_path):
    path = tmp_path / "tok.bin"
    write_tokenizer_bin(trained, path)
    read = read_tokenizer_bin(path, len(trained))
    assert [p for p, _ in read.pieces] == [
        {1: "\n<s>\n", 2: "\n</s>\n"}.get(i, trained.id_to_piece(i).replace("▁", " ")) for i in range(len(trained))
    ]
    assert [s for _, s in read.pieces] == [trained.score(i) for i in range(len(trained))]
    assert read.max_token_length == max(len(p.encode()) for p, _ in read.pieces)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.bin"]  # no temp file left behind


def test_tokenizer_bin_errors(trained, tmp_path):
    path = tmp_path / "tok.bin"
    write_tokenizer_bin(trained, path)
    data = path.read_bytes()
    n = len(trained)
    with pytest.raises(FileNotFoundError, match="tokenizer.bin"):
        read_tokenizer_bin(tmp_path / "missing.bin", n)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_tokenizer_bin(bad, n)
    with pytest.raises(ValueError, match="truncated.*vocab_size"):
        read_tokenizer_bin(path, n + 1)
    with pytest.raises(ValueError, match="bytes left.*vocab_size"):
        read_tokenizer_bin(path, n - 1)
    bad.write_bytes(b"\x07\x00")
    with pytest.raises(ValueError, match="too short"):
        read_tokenizer_bin(bad, n)
    # A length field that claims more than the header's max_token_length.
    corrupt = bytearray(data)
    corrupt[8:12] = (10**6).to_bytes(4, "little")
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt"):
        read_tokenizer_bin(bad, n)
    bad.write_bytes(data[:4] + b"\x00\x00\x00\x00\x02\x00\x00\x00\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_tokenizer_bin(bad, 1)


# --- loading, saving and errors ----------------------------------------------------------------


def test_missing_and_wrong_files(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match=r"nope\.model.*tokenizer\.model"):
        Tokenizer(tmp_path / "nope.model")
    (tmp_path / "ckpt").mkdir()
    trained.save(tmp_path / "ckpt" / "tokenizer.model")
    with pytest.raises(IsADirectoryError, match=r"ckpt/tokenizer\.model"):
        Tokenizer(tmp_path / "ckpt")
    for name, data, hint in [
        ("junk.model", b"\x00\xffnot a model at all", "not a SentencePiece model"),
        ("empty.model", b"", "empty"),
        ("tokenizer.json", b'{"model": {"type": "BPE"}}', "tokenizer.json"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=hint):
            Tokenizer(tmp_path / name)
    write_tokenizer_bin(trained, tmp_path / "tokenizer.bin")
    with pytest.raises(ValueError, match="read_tokenizer_bin"):
        Tokenizer(tmp_path / "tokenizer.bin")
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.from_bytes(b"")


def test_save_and_from_bytes(trained, tmp_path):
    path = tmp_path / "sub" / "tok.model"
    trained.save(path)
    again = Tokenizer(path)
    assert path.read_bytes() == trained.model_proto == again.model_proto
    assert Tokenizer.from_bytes(trained.model_proto).encode("the llama 42") == trained.encode("the llama 42")
    trained.save(path)  # overwriting is fine
    assert sorted(p.name for p in path.parent.iterdir()) == ["tok.model"]


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    path = tmp_path / "tok.model"
    path.write_bytes(b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        trained.save(path)
    assert path.read_bytes() == b"old"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["tok.model"]  # and the temp file is gone


def test_decode_rejects_bad_ids(trained):
    n = len(trained)
    with pytest.raises(ValueError, match=rf"{n} at position 1.*0\.\.{n - 1}"):
        trained.decode([5, n])
    with pytest.raises(ValueError, match="pad id"):
        trained.decode([5, -1])
    with pytest.raises(ValueError, match="out of range"):
        trained.id_to_piece(n)
    with pytest.raises(TypeError, match="str"):
        trained.encode(b"bytes")


# --- training ----------------------------------------------------------------------------------


def test_train_is_deterministic(trained):
    again = train_tokenizer(sample_texts(), vocab_size=400)
    assert again.model_proto == trained.model_proto
    other = train_tokenizer(sample_texts(seed=1), vocab_size=400)
    assert other.model_proto != trained.model_proto  # the comparison above can fail


def test_trained_settings_match_llama2(trained):
    spec = describe(trained)
    trainer, normalizer = spec["trainer_spec"], spec["normalizer_spec"]
    expected = {**LLAMA2_TRAINER_SPEC, "vocab_size": 400}
    for key, value in expected.items():
        got = normalizer["name"] if key == "normalization_rule_name" else normalizer.get(key, trainer.get(key))
        assert got == value, key
    assert trainer["num_threads"] == 1
    assert spec["pieces"]["BYTE"] == 256 and spec["pieces"]["CONTROL"] == 2
    assert sum(spec["pieces"].values()) == len(trained) == 400
    assert (trained.bos_id, trained.eos_id, trained.pad_id, trained.unk_id) == (1, 2, -1, 0)
    assert [trained.id_to_piece(i) for i in (0, 1, 2, 3, 258)] == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    # Llama 2's behaviours carry over: digits split, newline is a byte, "▁" dummy prefix.
    assert trained.pieces(trained.encode("1234")) == ["▁", "1", "2", "3", "4"]
    assert 13 in trained.encode("a\nb")
    assert trained.pieces(trained.encode("the"))[0].startswith("▁")


def test_user_defined_symbols_stay_whole():
    tags = ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
    tok = train_tokenizer(sample_texts(300), vocab_size=400, user_defined_symbols=tags)
    for tag in tags:
        assert tag in tok.pieces(tok.encode(f"x {tag} y"))
    assert describe(tok)["trainer_spec"]["user_defined_symbols"] == tuple(tags)


def test_train_errors():
    with pytest.raises(ValueError, match="Too little text.*smaller vocab_size"):
        train_tokenizer(sample_texts(20), vocab_size=5000)
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(sample_texts(20), vocab_size=100)
    with pytest.raises(ValueError, match="No text"):
        train_tokenizer(["", "\n"], vocab_size=400)


# --- properties --------------------------------------------------------------------------------

# "▁" (U+2581) is excluded: SentencePiece uses it for the space, so the text "▁" decodes as " "
# (test_space_marker_collides below). Surrogates cannot be UTF-8 encoded at all.
texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="▁"), max_size=40),
    st.lists(
        st.sampled_from(
            ["🦙", "😀", "e\u0301", "\u0308", " ", "  ", "\n", "\t", "東京", "llama", "123", "\u200b", "über", " x"]
        ),
        max_size=12,
    ).map("".join),
)


@SETTINGS
@given(texts)
@example(" leading  spaces\n\n and 🦙 emoji e\u0301")
def test_round_trip_trained(trained, text):
    assert trained.decode(trained.encode(text)) == text


@pytest.mark.reference
@settings(deadline=None, max_examples=100)
@given(texts)
def test_round_trip_real(real, text):
    assert real.decode(real.encode(text)) == text


def test_space_marker_collides(trained):
    assert trained.decode(trained.encode("a▁b")) == "a b"  # a documented SentencePiece limit


@SETTINGS
@given(texts)
def test_offsets_cover_the_text(trained, text):
    spans = trained.encode_with_offsets(text)
    assert [i for i, _, _ in spans] == trained.encode(text)
    previous = (0, 0)
    for i, start, end in spans:
        if trained.is_byte(i):
            assert end == start + 1  # every byte token of a character points at the character
            if (start, end) == previous:
                continue  # another byte of the same character
        else:
            piece = trained.id_to_piece(i).replace("▁", " ")
            assert text[start:end] in (piece, piece[1:])  # piece[1:]: the dummy-prefix "▁"
        assert start == previous[1]  # no gap, no overlap
        previous = (start, end)
    assert previous[1] == len(text)


@pytest.mark.reference
def test_offsets_agree_with_sentencepiece(real):
    text = "[/INST] Bonjour 🦙  two\nlines 42"
    try:
        theirs = real.sp.encode(text, out_type="offset_mapping")["offsets"]
    except (ValueError, TypeError, KeyError):
        pytest.skip("this sentencepiece has no offset_mapping output")
    ours = real.encode_with_offsets(text)
    # SentencePiece gives the byte tokens of a character empty spans except the last one.
    for (i, start, end), (s, e) in zip(ours, theirs, strict=True):
        if not real.is_byte(i) or e > s:
            assert (start, end) == (s, e)


ids_strategy = st.lists(
    st.one_of(st.integers(0, 399), st.sampled_from([0, 1, 2, 13, 35, 243, 162, 169, 156])), max_size=40
)


@SETTINGS
@given(ids_strategy)
def test_stream_decoder_equals_decode_random_ids(trained, ids):
    stream = StreamDecoder(trained)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == trained.decode(ids)


@SETTINGS
@given(texts.filter(lambda s: "\ufffd" not in s))
def test_stream_decoder_never_splits_a_character(trained, text):
    stream = StreamDecoder(trained)
    chunks = [stream.push(i) for i in trained.encode(text, bos=True, eos=True)]
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == text and stream.flush() == ""


@pytest.mark.reference
@settings(deadline=None, max_examples=100)
@given(st.lists(st.one_of(st.integers(0, 31999), st.integers(0, 300), st.just(29871)), max_size=40))
def test_stream_decoder_real_random_ids(real, ids):
    stream = StreamDecoder(real)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == real.decode(ids)


def test_stream_decoder_emoji(trained):
    ids = trained.encode("😀 ok")  # 😀 is not in the training text
    assert [trained.is_byte(i) for i in ids[1:5]] == [True] * 4  # the emoji is 4 byte tokens
    stream = StreamDecoder(trained)
    chunks = [stream.push(i) for i in ids]
    assert chunks[1:5] == ["", "", "", "😀"]  # held back until the character is whole
    assert "".join(chunks) == "😀 ok"
    with pytest.raises(ValueError, match="out of range"):
        stream.push(len(trained))

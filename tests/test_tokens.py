import hashlib
import random

import pytest
import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public

from transforms import tokens
from transforms.tokens import EncodingFileError, TokenCounter, count_messages, get_encoding

SAMPLES = [
    "",
    "hello world",
    "HTTP 관련 내용을 알려줘.",
    "Sync 채널 설정: 타임아웃은 30초, 재시도 3회.\n\n```json\n{\"timeout\": 30}\n```",
    "  leading spaces and <|endoftext|> look-alike\t\r\n",
    "😀 emoji, café, 日本語, العربية",
]


def _tiktoken_reference(name: str, cache_dir, monkeypatch) -> tiktoken.Encoding:
    """tiktoken's own loader, fed from a cache dir filled with the bundled files (no network)."""
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    (cache_dir / hashlib.sha1(url.encode()).hexdigest()).write_bytes((tokens.ENCODINGS_DIR / f"{name}.tiktoken").read_bytes())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    return tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]())


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_counts_equal_tiktoken_with_an_empty_cache(name, tmp_path, monkeypatch):
    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    get_encoding.cache_clear()
    ours = get_encoding(name)
    assert list((tmp_path / "tiktoken-cache").iterdir()) == []  # nothing cached, nothing fetched
    monkeypatch.undo()
    reference = _tiktoken_reference(name, tmp_path / "tiktoken-cache", monkeypatch)
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)
    assert ours.n_vocab == reference.n_vocab


def test_known_token_ids():
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


def test_corrupted_encoding_file_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "encodings"
    bad.mkdir()
    data = (tokens.ENCODINGS_DIR / "cl100k_base.tiktoken").read_bytes()
    (bad / "cl100k_base.tiktoken").write_bytes(data[:-10])
    monkeypatch.setattr(tokens, "ENCODINGS_DIR", bad)
    get_encoding.cache_clear()
    try:
        with pytest.raises(EncodingFileError, match="sha256"):
            get_encoding("cl100k_base")
    finally:
        get_encoding.cache_clear()


def test_unknown_encoding_names_the_available_ones():
    with pytest.raises(EncodingFileError, match="cl100k_base, o200k_base"):
        get_encoding("p50k_base")


def test_message_count_follows_the_cookbook():
    enc = get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "Category: [온라인] 업무 가이드"},
        {"role": "user", "name": "kim", "content": "HTTP 관련 내용을 알려줘."},
        {"role": "assistant", "content": "HTTP 채널은 …", "weight": 1},
    ]
    expected = 3  # reply priming
    for m in messages:
        expected += 3
        for key, value in m.items():
            if key == "weight":
                continue
            expected += len(enc.encode(value))
            expected += key == "name"
    assert count_messages(enc, messages) == expected


def test_batch_counts_equal_single_counts():
    counter = TokenCounter("o200k_base")
    texts = SAMPLES * 5
    assert counter.texts(texts) == [len(counter.encoding.encode_ordinary(t)) for t in texts]



# Characters where pre-tokenizers differ: whitespace runs and kinds, contractions, digit groups, letter
# and number categories, marks, joiners, special-token look-alikes.
_TRICKY = (list(" \t\n\r\x0b\x0c\u00a0\u2003\u3000") + list("aZ09'sStTlLdDmMrReEvV.,!?-_/#$%&*()[]{}<|>\\\"`~")
           + ["<|endoftext|>", "<|fim_prefix|>", "'s", "'LL", "’s", "\r\n", "  \n"] + list("가힣설정ㄱㅏ")
           + list("éßΩжд中文日本語") + ["\U0001F600", "\u0301", "\u200b", "\ufeff", "١٢٣", "Ⅻ", "²", "\U0001D400"])


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_counts_are_tiktokens_on_adversarial_text(name):
    """rs_bpe counts when its vocabulary is verified: its pre-tokenizer must split as tiktoken's pattern."""
    pytest.importorskip("rs_bpe")
    assert tokens._rs_bpe_count(name) is not None  # its vocabulary has the sha256 tiktoken expects
    rng = random.Random(3)
    texts = ["".join(rng.choice(_TRICKY) for _ in range(rng.randint(0, 40))) for _ in range(20_000)]
    texts += SAMPLES + ["a\ud800b", " " * 5000 + "x", "1234567" * 300]
    encoding, count = get_encoding(name), tokens.counter_for(name)
    assert [count(t) for t in texts] == [len(encoding.encode(t, disallowed_special=())) for t in texts]


def test_a_vocabulary_other_than_tiktokens_is_not_used(monkeypatch):
    monkeypatch.setattr(tokens, "_expected_sha256", lambda name: "0" * 64)
    tokens._rs_bpe_count.cache_clear()
    tokens.counter_for.cache_clear()
    try:
        assert tokens._rs_bpe_count("o200k_base") is None
        assert tokens.counter_for("o200k_base")("hello world") == 2  # tiktoken counts instead
    finally:
        tokens._rs_bpe_count.cache_clear()
        tokens.counter_for.cache_clear()

"""Exact, offline token counts with tiktoken, counted the way OpenAI's cookbook counts chat examples.

tiktoken downloads its encoding files on first use; our machines have no internet. The files ship in
`transforms/encodings/` and are verified against the sha256 that tiktoken itself expects before use, so a
count here is always the count OpenAI bills — never an approximation.

Counts come from rs_bpe (GitHub's linear-time `bpe` crate, whose count builds no token list: 1.6–2.5×
tiktoken's `encode` on one core) when its vocabulary, written out as a tiktoken file, has the sha256 tiktoken
expects for the encoding, so its ranks are the bundled file's; tests/test_tokens.py compares its counts with
tiktoken's on adversarial text. Otherwise, and for text it cannot take (a lone surrogate), tiktoken counts.
"""

from __future__ import annotations

import hashlib
import json
import threading
from binascii import a2b_base64, b2a_base64  # base64's own codec, without its per-call checks
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import tiktoken
from tiktoken_ext import openai_public

from base.errors import Crawl2TuneError

ENCODINGS_DIR = Path(__file__).parent / "encodings"

TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|>
TOKENS_PER_NAME = 1
TOKENS_FOR_REPLY = 3  # every reply is primed with <|start|>assistant<|message|>

_patch_lock = threading.Lock()


class EncodingFileError(Crawl2TuneError, RuntimeError):
    """A bundled encoding file is missing or does not match tiktoken's expected hash."""


def _local_ranks(name: str):
    def load(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        path = ENCODINGS_DIR / f"{name}.tiktoken"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EncodingFileError(f"encoding file {path} is missing; reinstall crawl2tune") from exc
        actual = hashlib.sha256(data).hexdigest()
        if expected_hash and actual != expected_hash:
            raise EncodingFileError(
                f"encoding file {path} has sha256 {actual}, tiktoken expects {expected_hash}; "
                "restore it from a clean checkout"
            )
        return {a2b_base64(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}

    return load


def _constructed(name: str, load: Callable[..., dict[bytes, int]]) -> dict[str, Any]:
    """tiktoken's constructor parameters for `name` (pattern, special tokens), its ranks read by `load`."""
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None or not (ENCODINGS_DIR / f"{name}.tiktoken").exists():
        known = sorted(p.stem for p in ENCODINGS_DIR.glob("*.tiktoken"))
        raise EncodingFileError(f"no bundled encoding {name!r}; available: {', '.join(known)}")
    with _patch_lock:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = load
        try:
            return constructor()
        finally:
            openai_public.load_tiktoken_bpe = original


@lru_cache(maxsize=None)
def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own constructor for `name` (pattern, special tokens), fed from the verified local file."""
    return tiktoken.Encoding(**_constructed(name, _local_ranks(name)))


def _expected_sha256(name: str) -> str | None:
    expected: list[str | None] = []
    _constructed(name, lambda _url, expected_hash=None: expected.append(expected_hash) or {})
    return expected[0] if expected else None


@lru_cache(maxsize=None)
def _rs_bpe_count(name: str) -> Callable[[str], int] | None:
    """rs_bpe's count for `name` if it is installed and holds exactly the vocabulary tiktoken expects."""
    try:
        from rs_bpe.bpe import openai as rs_bpe_openai  # the extension itself (its `rs_bpe.openai` shim misimports)
    except ImportError:
        return None
    make = getattr(rs_bpe_openai, name, None)
    expected = _expected_sha256(name)
    if make is None or expected is None:
        return None
    tokenizer = make()
    decode = tokenizer.bpe().decode_tokens
    n = (ENCODINGS_DIR / f"{name}.tiktoken").read_bytes().count(b"\n")
    try:
        written = b"".join(b2a_base64(decode([rank]), newline=False) + b" %d\n" % rank for rank in range(n))
    except BaseException as exc:  # a smaller vocabulary panics in Rust; pyo3's PanicException is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        return None
    return tokenizer.count if hashlib.sha256(written).hexdigest() == expected else None


@lru_cache(maxsize=None)
def counter_for(name: str) -> Callable[[str], int]:
    """The exact token count of a text in encoding `name`, special-token look-alikes counted as ordinary text
    (`encode_ordinary`'s tokens: tiktoken documents `encode(text, disallowed_special=())` as the same)."""
    fast = _rs_bpe_count(name)

    def tiktoken_count(text: str) -> int:
        try:
            return len(get_encoding(name).encode_to_numpy(text, disallowed_special=()))
        except UnicodeEncodeError:  # a lone surrogate: `encode` replaces it, as the API will
            return len(get_encoding(name).encode(text, disallowed_special=()))

    if fast is None:
        get_encoding(name)  # loaded now: a caller about to fork means its processes to inherit it
        return tiktoken_count

    def count(text: str) -> int:
        try:
            return fast(text)
        except UnicodeEncodeError:
            return tiktoken_count(text)

    return count


def count_text(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of `text` in `encoding` (see `counter_for`)."""
    return counter_for(encoding.name)(text)


def count_texts(name: str, texts: Sequence[str], num_threads: int = 2) -> list[int]:
    """Token count of each text. tiktoken releases the GIL, so with threads each takes every n-th text (one call
    per thread, not one future per text as in tiktoken's own batch call); rs_bpe holds it, so counts alone."""
    count = counter_for(name)
    if len(texts) < 8 or num_threads < 2 or _rs_bpe_count(name) is not None:
        return [count(t) for t in texts]
    counts = [0] * len(texts)

    def share(i: int) -> None:
        counts[i::num_threads] = [count(t) for t in texts[i::num_threads]]

    with ThreadPoolExecutor(num_threads, thread_name_prefix="count") as pool:
        list(pool.map(share, range(num_threads)))
    return counts


def message_strings(message: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(key, text) pairs of a message that are tokenized; structured values are counted as their JSON."""
    for key, value in message.items():
        if key == "weight" or value is None:
            continue
        if isinstance(value, str):
            yield key, value
        else:
            yield key, json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def chat_tokens(n_messages: int, value_tokens: int, names: int = 0) -> int:
    """The cookbook's total from the tokens of all encoded values (roles, contents, names…) of an example."""
    return TOKENS_FOR_REPLY + TOKENS_PER_MESSAGE * n_messages + value_tokens + TOKENS_PER_NAME * names


class TokenCounter:
    """Exact counts with one encoding; short strings that repeat (roles, prompts, questions) are cached."""

    def __init__(self, encoding_name: str, threads: int = 2):
        self.name = encoding_name
        self.threads = threads
        self._cache: dict[str, int] = {}

    @cached_property
    def encoding(self) -> tiktoken.Encoding:
        """Loaded when first needed (loading takes a quarter of a second)."""
        return get_encoding(self.name)

    def texts(self, texts: Sequence[str], num_threads: int | None = None) -> list[int]:
        return count_texts(self.name, texts, num_threads or self.threads)

    def prime(self, counts: dict[str, int]) -> None:
        """Remember counts made elsewhere (in a batch) so `cached` finds them."""
        if len(self._cache) + len(counts) > 100_000:
            self._cache.clear()
        self._cache.update(counts)

    def cached(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            n = self._cache[text] = counter_for(self.name)(text)
        return n


def count_messages(encoding: tiktoken.Encoding, messages: list[dict[str, Any]]) -> int:
    """Tokens of one chat example: 3 per message + encoded values + 1 per `name` + 3 for the reply."""
    total = TOKENS_FOR_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, text in message_strings(message):
            total += count_text(encoding, text)
            if key == "name":
                total += TOKENS_PER_NAME
    return total

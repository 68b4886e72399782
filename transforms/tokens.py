"""Exact, offline token counts with tiktoken, counted the way OpenAI's cookbook counts chat examples.

tiktoken downloads its encoding files on first use; our machines have no internet. The files ship in
`transforms/encodings/` and are verified against the sha256 that tiktoken itself expects before use, so a
count here is always the count OpenAI bills — never an approximation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from binascii import a2b_base64  # base64.b64decode's own decoder, without its per-call checks
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

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


@lru_cache(maxsize=None)
def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own constructor for `name` (pattern, special tokens), fed from the verified local file."""
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None or not (ENCODINGS_DIR / f"{name}.tiktoken").exists():
        known = sorted(p.stem for p in ENCODINGS_DIR.glob("*.tiktoken"))
        raise EncodingFileError(f"no bundled encoding {name!r}; available: {', '.join(known)}")
    with _patch_lock:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = _local_ranks(name)
        try:
            params = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


def count_text(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of `text` with special-token look-alikes counted as ordinary text (`encode_ordinary`'s tokens:
    tiktoken documents `encode(text, disallowed_special=())` as the same), without a Python list of them."""
    return len(encoding.encode_to_numpy(text, disallowed_special=()))


def count_texts(encoding: tiktoken.Encoding, texts: Sequence[str], num_threads: int = 2) -> list[int]:
    """Token count of each text. With threads, each takes every n-th text: one call per thread, not one future
    per text as in tiktoken's own batch call (which gained nothing on 2 cores)."""
    if len(texts) < 8 or num_threads < 2:
        return [count_text(encoding, t) for t in texts]
    counts = [0] * len(texts)

    def share(i: int) -> None:
        counts[i::num_threads] = [count_text(encoding, t) for t in texts[i::num_threads]]

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
        return count_texts(self.encoding, texts, num_threads or self.threads)

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
            n = self._cache[text] = count_text(self.encoding, text)
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

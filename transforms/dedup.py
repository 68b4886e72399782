"""Drop examples whose answer repeats one already kept: exactly (normalised text) or nearly (MinHash + LSH).

Runs before the split, so no answer is trained on and tested. Near-duplicates are found with MinHash over
character shingles (no word segmentation, so Korean works), in its one-permutation form: each shingle is
hashed once and the minimum is taken per bin, vectorised with numpy, with LSH bands and rows chosen by
datasketch's optimiser for the threshold. A candidate pair is confirmed on the full signatures before anything
is dropped. Not datasketch's MinHash/MinHashLSH: measured 55× slower a page and 10× bigger an index entry.

Memory stays small per example (streaming builds of 100,000 pages): the keys live in sorted numpy arrays
(about 12 bytes an entry), the signatures of kept answers in a temp file read back only for candidates.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import unicodedata
from array import array
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np

from transforms.example import Example
from transforms.stage import Stage, StageLog

_PRIME = np.uint64(0x100000001B3)
MAX_PAIRS = 1000  # duplicate pairs listed in the manifest; dropped.jsonl lists every one


def normalised(text: str) -> str:
    """NFKC, case-folded, runs of whitespace as one space: what exact duplicates are compared by.

    Most pages hold no whitespace but spaces and newlines; their runs are collapsed by replacing, three times
    faster than splitting into words and joining them."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    flat = folded.replace("\n", " ")
    if not flat.isprintable():  # tabs, other spaces or control characters: the general way
        return " ".join(folded.split())
    while "  " in flat:  # printable text holds no whitespace but the space (a test checks every character)
        flat = flat.replace("  ", " ")
    return flat.strip(" ")


def shingle_hashes(text: str, k: int) -> np.ndarray:
    """Sorted 64-bit hashes of every `k`-character shingle of `text` (the whole text if shorter)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < k:
        codes = np.concatenate([codes, np.zeros(k - len(codes), dtype=np.uint64)])
    n = len(codes) - k + 1
    h = codes[:n].copy()
    for j in range(1, k):  # polynomial rolling hash of the k code points, wrapping at 2**64
        h *= _PRIME
        h += codes[j : j + n]
    h *= np.uint64(0x9E3779B97F4A7C15)  # mix (splitmix64's finaliser) so the top bits pick bins evenly
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    h.sort()
    return h


class MinHasher:
    """One-permutation MinHash: `bins` minima of the shingle hashes, empty bins filled by rotation."""

    def __init__(self, bins: int, shingle_chars: int):
        self.bins = bins
        self.k = shingle_chars
        self.shift = np.uint64(64 - max(1, math.ceil(math.log2(bins))))
        self._ids = np.arange(bins, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        hv = shingle_hashes(text, self.k)
        which = hv >> self.shift  # sorted, since hv is: the first hash of each bin is its minimum
        starts = np.searchsorted(which, self._ids)
        if starts[-1] < len(hv) and (which[starts] == self._ids).all():
            return hv[starts].astype(np.uint32)  # every bin has a shingle (the common case)
        starts_ok = np.minimum(starts, len(hv) - 1)
        present = (starts < len(hv)) & (which[starts_ok] == self._ids)
        sig = hv[starts_ok].astype(np.uint32)
        if not present.all():
            filled = np.flatnonzero(present)
            if len(filled) == 0:
                return sig  # cannot happen for a non-empty text; all bins equal is harmless
            nxt = filled[np.searchsorted(filled, np.arange(self.bins)) % len(filled)]
            distance = (nxt - np.arange(self.bins)) % self.bins
            sig = (sig[nxt] + distance.astype(np.uint32) * np.uint32(0x9E3779B1)).astype(np.uint32)
        return sig

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.count_nonzero(a == b)) / len(a)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the false positive and false negative areas around `threshold`, equally
    weighted: the optimisation datasketch's MinHashLSH makes (a test checks they agree), without importing
    scipy for its integrals on every build."""
    s = np.linspace(0.0, 1.0, 2001)
    best, best_error = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            collide = 1.0 - (1.0 - s**r) ** b
            below = s <= threshold
            error = np.trapezoid(np.where(below, collide, 0.0), s) + np.trapezoid(np.where(below, 0.0, 1 - collide), s)
            if error < best_error:
                best, best_error = (b, r), error
    return best


class IntIndex:
    """64-bit key → int: a sorted numpy part (12 bytes an entry) and a small dict merged into it as it fills."""

    def __init__(self, buffer: int = 1 << 16):
        self.keys = np.empty(0, dtype=np.uint64)
        self.values = np.empty(0, dtype=np.int64)
        self.pending: dict[int, int] = {}
        self.buffer = buffer

    def get(self, key: int) -> int | None:
        value = self.pending.get(key)
        if value is not None:
            return value
        i = int(self.keys.searchsorted(key))
        if i < len(self.keys) and int(self.keys[i]) == key:
            return int(self.values[i])
        return None

    def get_many(self, keys: np.ndarray) -> list[int]:
        """Values of those of `keys` that are present, in order (one vectorised search)."""
        found = [v for v in map(self.pending.get, keys.tolist()) if v is not None]
        if len(self.keys):
            i = np.minimum(self.keys.searchsorted(keys), len(self.keys) - 1)
            hit = self.keys[i] == keys
            found += self.values[i[hit]].tolist()
        return found

    def add(self, key: int, value: int) -> None:
        """Keep the first value of a key."""
        if self.get(key) is None:
            self.pending[key] = value
            if len(self.pending) >= self.buffer:
                self._merge()

    def add_many(self, keys: np.ndarray, value: int) -> None:
        """`add(key, value)` for each of `keys`, with one vectorised search."""
        if len(self.keys):
            i = np.minimum(self.keys.searchsorted(keys), len(self.keys) - 1)
            keys = keys[self.keys[i] != keys]
        for key in keys.tolist():
            self.pending.setdefault(key, value)
        if len(self.pending) >= self.buffer:
            self._merge()

    def _merge(self) -> None:
        keys = np.fromiter(self.pending.keys(), dtype=np.uint64, count=len(self.pending))
        values = np.fromiter(self.pending.values(), dtype=np.int64, count=len(self.pending))
        keys, values = np.concatenate([self.keys, keys]), np.concatenate([self.values, values])
        order = np.argsort(keys, kind="stable")
        self.keys, self.values = keys[order], values[order]
        self.pending = {}

    def __len__(self) -> int:
        return len(self.keys) + len(self.pending)


def _key(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@lru_cache(maxsize=None)
def _hasher(num_perm: int, shingle_chars: int) -> MinHasher:
    return MinHasher(num_perm, shingle_chars)


@lru_cache(maxsize=None)
def _band_constants(bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.uint64(0x100000001B3) ** np.arange(rows, dtype=np.uint64),
            np.arange(bands, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per LSH band: a polynomial hash of its rows, mixed with the band's number."""
    powers, band_ids = _band_constants(bands, rows)
    keys = (sig[: bands * rows].reshape(bands, rows).astype(np.uint64) * powers).sum(axis=1, dtype=np.uint64)
    keys += band_ids
    keys *= np.uint64(0x9E3779B97F4A7C15)
    keys ^= keys >> np.uint64(31)
    return keys


Near = tuple[int, int, int, int]  # num_perm, shingle_chars, LSH bands, rows
Fingerprint = tuple[int, bytes | None, np.ndarray | None]  # exact key, MinHash signature, band keys


def fingerprints(answers: list[str], near: Near | None) -> list[Fingerprint]:
    """The key of each answer's normalised text and, with `near`, its signature and band keys (None for an
    empty text)."""
    out: list[Fingerprint] = []
    for answer in answers:
        text = normalised(answer)
        key = _key(text.encode("utf-8"))
        if near is None or not text:
            out.append((key, None, None))
            continue
        num_perm, shingle_chars, bands, rows = near
        sig = _hasher(num_perm, shingle_chars).signature(text)
        out.append((key, sig.tobytes(), band_keys(sig, bands, rows)))
    return out


class Dedup(Stage):
    """Exact duplicates by normalised answer, then near-duplicates by MinHash; the first one seen is kept.

    The questions of one answer (`questions_per_document` > 1) arrive together and share its fate: they are
    never duplicates of each other.
    """

    name = "dedup"

    def __init__(self, exact: bool = True, near_threshold: float | None = None, shingle_chars: int = 5,
                 num_perm: int = 64):
        self.exact = exact
        self.threshold = near_threshold
        self.exact_keys = IntIndex()
        self.kept_ids = array("Q")  # example_id of each kept answer, as a 64-bit number
        self.pairs: list[dict[str, object]] = []
        self.counts = {"exact": 0, "near": 0}
        self.near: Near | None = None
        if near_threshold is not None:
            self.near = (num_perm, shingle_chars, *lsh_params(near_threshold, num_perm))
            self.band_keys = IntIndex()
            self.signatures = tempfile.TemporaryFile(prefix="crawl2tune-minhash-")
            self.sig_bytes = num_perm * 4

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        last, last_verdict = None, None
        try:
            for example in examples:
                answer = example.answers
                if (example.document_id, answer) != last:
                    fingerprint = fingerprints([answer], self.near)[0]
                    last, last_verdict = (example.document_id, answer), self._judge(example, fingerprint)
                if last_verdict is None:
                    yield example
                    continue
                kind, index, similarity = last_verdict
                original = f"{self.kept_ids[index]:016x}"
                self.counts[kind] += 1
                pair = {"example_id": example.example_id, "duplicate_of": original, "kind": kind,
                        "similarity": similarity}
                if len(self.pairs) < MAX_PAIRS:
                    self.pairs.append(pair)
                log.drop(example, f"duplicate_{kind}", f"{kind} duplicate of {original} (similarity {similarity})",
                         duplicate_of=original, similarity=similarity)
        finally:
            if self.threshold is not None:
                self.signatures.close()

    def _judge(self, example: Example, fingerprint: Fingerprint) -> tuple[str, int, float] | None:
        """None to keep (and remember) the answer, else (kind, index of the kept original, similarity)."""
        key, sig, bands = fingerprint
        index = len(self.kept_ids)
        if self.exact:
            original = self.exact_keys.get(key)
            if original is not None:
                return "exact", original, 1.0
        if sig is not None:
            signature = np.frombuffer(sig, dtype=np.uint32)
            for candidate in dict.fromkeys(self.band_keys.get_many(bands)):
                stored = os.pread(self.signatures.fileno(), self.sig_bytes, candidate * self.sig_bytes)
                similarity = MinHasher.similarity(signature, np.frombuffer(stored, dtype=np.uint32))
                if similarity >= self.threshold:
                    return "near", candidate, round(similarity, 3)
            os.pwrite(self.signatures.fileno(), sig, index * self.sig_bytes)
            self.band_keys.add_many(bands, index)
        if self.exact:
            self.exact_keys.add(key, index)
        self.kept_ids.append(int(example.example_id, 16))
        return None

    def summary(self) -> dict[str, object]:
        return {"exact": self.counts["exact"], "near": self.counts["near"], "threshold": self.threshold,
                "pairs": self.pairs, "pairs_listed": len(self.pairs)}

"""Embeddings retrieval: vectors of a version's sections from an OpenAI-compatible embeddings endpoint, searched by
cosine similarity (`finetune.evaluation.retrieval.method: embeddings`, or `hybrid` beside BM25).

Before it sends anything, `index` counts the texts' tokens exactly with tiktoken (cl100k_base, the encoding of
OpenAI's embedding models; for another vendor's model the count is the same encoding's, marked not exact) and
prints them with the cost. Vectors are cached in the state (table `embedding_vectors`, keyed by model, dimensions
and the sha256 of the text), so a re-run of `index` and an incremental update ask only for texts not seen before,
and questions embedded at `ask`/`evaluate` time are cached the same way. The index is a float32 `.npy` matrix
of unit rows beside the BM25 index, not blobs in the state: one read loads it whole, ready for the matmul.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from base import state as base_state
from configs import EmbeddingsConfig
from finetune.backend import ApiError, MissingCredentials, Refused, TransientError
from finetune.retrieval import Index, IndexBuild, Section, version_sections
from transforms.tokens import get_encoding
from transforms.version import DatasetVersion

ENCODING = "cl100k_base"
PRICES = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13, "text-embedding-ada-002": 0.10}  # USD/1M
MAX_INPUT_TOKENS = 8191  # OpenAI's limit is 8,192 an input: longer texts are cut to their first 8,191 tokens
MAX_REQUEST_TOKENS = 300_000  # summed over the inputs of one request
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding_vectors (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
);
"""


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Estimate:
    """What embedding the texts not cached yet would send."""

    texts: int
    tokens: int
    requests: int
    cost_usd: float
    exact: bool  # the model's own encoding is cl100k_base (one of OpenAI's embedding models)

    def describe(self) -> str:
        counted = (f"{ENCODING}, exact" if self.exact
                   else f"counted with {ENCODING}; the model's own tokenizer may differ")
        return (f"{self.texts} texts not embedded yet, {self.tokens:,} tokens ({counted}), {self.requests} "
                f"request{'s' * (self.requests != 1)}, about ${self.cost_usd:.4f}")


class Embedder:
    """Unit vectors of texts: from the state's cache, else from the endpoint (`requests` counts what it sent)."""

    def __init__(self, cfg: EmbeddingsConfig, output_dir: Path, *, base_url: str | None = None,
                 timeout: float = 60.0, max_retries: int = 2, client: Any = None):
        self.cfg = cfg
        self.name = f"{cfg.model}@{cfg.dimensions or 'native'}"  # the cache key: other dimensions, other vectors
        self.base_url = cfg.base_url or base_url or os.environ.get("OPENAI_BASE_URL")
        self.timeout, self.max_retries = timeout, max_retries
        self.path = base_state.state_path(output_dir)
        self.encoding = get_encoding(ENCODING)
        self.requests = 0
        self._client = client
        db = base_state.connect(self.path)
        try:
            base_state.migrate(db, _SCHEMA, "embedding_vectors", {})
        finally:
            db.close()

    # ---- the cache

    def cached(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        hashes = sorted({_hash(t) for t in texts})
        found: dict[str, np.ndarray] = {}
        db = base_state.connect(self.path)
        try:
            for start in range(0, len(hashes), 500):
                part = hashes[start:start + 500]
                rows = db.execute(f"SELECT text_hash, vector FROM embedding_vectors WHERE model = ? AND text_hash IN "
                                  f"({','.join('?' * len(part))})", [self.name, *part])
                found.update((h, np.frombuffer(v, dtype="<f4")) for h, v in rows)
        finally:
            db.close()
        return found

    def _store(self, vectors: dict[str, np.ndarray]) -> None:
        db = base_state.connect(self.path)
        try:
            db.executemany("INSERT OR REPLACE INTO embedding_vectors VALUES (?, ?, ?)",
                           [(self.name, h, v.astype("<f4").tobytes()) for h, v in vectors.items()])
        finally:
            db.close()

    # ---- counting and batching

    def _inputs(self, texts: Sequence[str]) -> list[tuple[str, int]]:
        """Each text as sent (cut to MAX_INPUT_TOKENS) with its token count."""
        out = []
        for text in texts:
            tokens = self.encoding.encode(text, disallowed_special=())
            if len(tokens) > MAX_INPUT_TOKENS:
                tokens = tokens[:MAX_INPUT_TOKENS]
                text = self.encoding.decode(tokens)
            out.append((text, len(tokens)))
        return out

    def _batches(self, inputs: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
        """`batch_size` texts a request, fewer where their tokens would pass MAX_REQUEST_TOKENS."""
        batches: list[list[tuple[str, int]]] = []
        tokens = 0
        for item in inputs:
            if not batches or len(batches[-1]) >= self.cfg.batch_size or tokens + item[1] > MAX_REQUEST_TOKENS:
                batches.append([])
                tokens = 0
            batches[-1].append(item)
            tokens += item[1]
        return batches

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts whose vector is not cached, in order."""
        known = self.cached(texts)
        return [t for t in dict.fromkeys(texts) if _hash(t) not in known]

    def estimate(self, texts: Sequence[str]) -> Estimate:
        inputs = self._inputs(self.missing(texts))
        tokens = sum(n for _, n in inputs)
        price = self.cfg.price_per_1m_tokens if self.cfg.price_per_1m_tokens is not None else \
            PRICES.get(self.cfg.model, 0.0)
        return Estimate(len(inputs), tokens, len(self._batches(inputs)), tokens * price / 1_000_000,
                        self.cfg.model in PRICES)

    # ---- asking

    def client(self) -> Any:
        if self._client is None:
            import openai

            key = os.environ.get(self.cfg.api_key_env)
            if not key and not self.base_url:
                raise MissingCredentials(f"no API key for the embeddings endpoint: set {self.cfg.api_key_env} in the "
                                         "environment, or finetune.evaluation.retrieval.embeddings.base_url to a "
                                         "local server")
            self._client = openai.OpenAI(api_key=key or "unused", base_url=self.base_url, timeout=self.timeout,
                                         max_retries=self.max_retries)
        return self._client

    def _request(self, batch: list[tuple[str, int]]) -> list[np.ndarray]:
        import openai

        where = self.base_url or "OpenAI"
        extra = {"dimensions": self.cfg.dimensions} if self.cfg.dimensions else {}
        self.requests += 1
        try:
            reply = self.client().embeddings.create(model=self.cfg.model, input=[t for t, _ in batch], **extra)
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            message = self._scrub(" ".join(str(body.get("message") or exc.message).split()))
            kind = TransientError if exc.status_code == 429 or exc.status_code >= 500 else ApiError
            raise kind(f"embedding {len(batch)} texts with {self.cfg.model} at {where} failed (HTTP "
                       f"{exc.status_code}): {message}", status=exc.status_code, code=exc.code) from None
        except openai.APIConnectionError:
            raise TransientError(f"embedding with {self.cfg.model} failed: no answer from {where} after "
                                 f"{self.max_retries} retries (finetune.timeout, finetune.max_retries)") from None
        rows = sorted(reply.data, key=lambda d: d.index)
        if len(rows) != len(batch):
            raise ApiError(f"{where} answered {len(rows)} embeddings for {len(batch)} texts")
        return [np.asarray(d.embedding, dtype=np.float32) for d in rows]

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env) or ""
        return text.replace(key, "***") if len(key) >= 8 else text

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimensions) float32 matrix of unit rows; only texts not cached are sent."""
        known = self.cached(texts)
        todo = [t for t in dict.fromkeys(texts) if _hash(t) not in known]
        for batch, originals in self._sent(todo):
            fresh = {_hash(t): _unit(v) for t, v in zip(originals, self._request(batch))}
            self._store(fresh)  # each batch as it arrives: an interrupted run does not pay for it again
            known.update(fresh)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([known[_hash(t)] for t in texts])

    def _sent(self, texts: list[str]) -> list[tuple[list[tuple[str, int]], list[str]]]:
        """The batches to send, each with the original texts its inputs stand for (the cache key)."""
        inputs = self._inputs(texts)
        out, i = [], 0
        for batch in self._batches(inputs):
            out.append((batch, texts[i:i + len(batch)]))
            i += len(batch)
        return out


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm else vector).astype(np.float32)


class EmbeddingIndex(Index):
    """Sections as unit rows of a matrix; a question's best sections by cosine similarity (one matmul, then an
    argpartition for the top k). A section at cosine 0 or below is not retrieved, as BM25 leaves out a section
    sharing no token."""

    def __init__(self, matrix: np.ndarray, sections: list[Section], embedder: Embedder):
        self.matrix, self.sections, self.embedder = matrix, sections, embedder

    def search_many(self, questions: Sequence[str], k: int) -> list[list[Section]]:
        k = min(k, len(self.sections))
        asked = [q for q in questions if q.strip()]
        if not asked or not k:
            return [[] for _ in questions]
        scores = self.embedder.embed(asked) @ self.matrix.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable"),
                                  axis=1)
        found = iter([[self.sections[int(i)] for i in row if s[i] > 0] for row, s in zip(best, scores)])
        return [next(found) if q.strip() else [] for q in questions]


def index_dir(ds: DatasetVersion, cfg: EmbeddingsConfig) -> Path:
    slug = re.sub(r"[^\w.-]+", "_", cfg.model) + (f"-d{cfg.dimensions}" if cfg.dimensions else "")
    return ds.dir / "index" / f"embeddings-{slug}"


@dataclass(frozen=True)
class EmbeddingBuild(IndexBuild):
    requests: int = 0
    dimensions: int = 0


def build_index(ds: DatasetVersion, embedder: Embedder) -> EmbeddingBuild:
    """Embed the version's sections (only texts not cached) into `<version>/index/embeddings-<model>/`."""
    sections = version_sections(ds)
    if not sections:
        raise Refused(f"{ds.label} holds no section to index; build a dataset first: python pipeline.py build")
    texts = [s.text for s in sections]
    fresh = len(embedder.missing(texts))
    matrix = embedder.embed(texts)
    target = index_dir(ds, embedder.cfg)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "vectors.npy", matrix)
    (tmp / "sections.jsonl").write_text("".join(json.dumps(s.__dict__, ensure_ascii=False) + "\n" for s in sections),
                                        encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return EmbeddingBuild(target, len(sections), fresh, len(sections) - fresh, embedder.requests, matrix.shape[1])


def load_index(ds: DatasetVersion, embedder: Embedder) -> EmbeddingIndex:
    folder = index_dir(ds, embedder.cfg)
    if not (folder / "vectors.npy").is_file():
        raise Refused(f"{ds.label} has no {embedder.cfg.model} embeddings index: run python pipeline.py index "
                      f"--dataset {ds.version}")
    sections = [Section(**json.loads(raw)) for raw in (folder / "sections.jsonl").read_text("utf-8").splitlines()]
    return EmbeddingIndex(np.load(folder / "vectors.npy"), sections, embedder)

"""The retrieval baseline: a BM25 index (bm25s) over a dataset version's sections, with Korean-aware tokens.

A section is one (URL, heading) of the version, its text the reference answer its examples carry, so the
index holds exactly what the fine-tuned model was shown. Korean words carry particles (설정은/설정을/설정에서),
so whole words rarely match; two tokenizers that see through them: `bigram` (character bigrams of each Hangul
word, ASCII words whole; no dependency) and `kiwi` (kiwipiepy's content morphemes). `python pipeline.py index`
tokenizes only the sections whose text changed since the last index (their tokens are kept in the state,
table `retrieval_tokens`), then builds the BM25 matrix from all tokens, which is fast; IDF is global, so the
matrix itself is always rebuilt. `recall_at_k` is the exact share of questions whose source section is among
the top k. `finetune.embeddings` holds the other `method`s' half (vectors from an embeddings endpoint);
`HybridIndex` fuses the two rankings and `open_index` opens the one the config names.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from base import state as base_state
from configs import RetrievalConfig
from finetune.backend import Refused
from transforms.version import DatasetVersion

if TYPE_CHECKING:
    from finetune.embeddings import Embedder

_WORD = re.compile(r"\w+")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS retrieval_tokens (
    tokenizer TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    tokens TEXT NOT NULL,
    PRIMARY KEY (tokenizer, text_hash)
);
"""


def bigram_tokens(text: str) -> list[str]:
    """ASCII words whole (lower-cased), every other word as its character bigrams (a one-letter word whole)."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word.isascii() or len(word) < 2:
            tokens.append(word)
        else:
            tokens.extend(word[i:i + 2] for i in range(len(word) - 1))
    return tokens


_KIWI = None
_CONTENT_TAGS = ("NN", "NR", "NP", "VV", "VA", "MA", "MM", "XR", "SL", "SN", "SH")


def kiwi_tokens(text: str) -> list[str]:
    """kiwipiepy's content morphemes (nouns, verb and adjective stems, adverbs, roots, foreign words, numbers);
    particles and endings dropped."""
    global _KIWI
    if _KIWI is None:
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            raise Refused("retrieval.tokenizer kiwi needs kiwipiepy: pip install 'crawl2tune[korean]', or set "
                          "finetune.evaluation.retrieval.tokenizer: bigram") from None
        _KIWI = Kiwi()
    return [t.form.lower() for t in _KIWI.tokenize(text) if t.tag.startswith(_CONTENT_TAGS)]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"bigram": bigram_tokens, "kiwi": kiwi_tokens}


@dataclass(frozen=True)
class Section:
    id: str  # url#section
    url: str
    title: str
    section: str | None
    text: str


def section_id(url: str | None, section: str | None) -> str:
    return f"{url or ''}#{section or ''}"


def _answer(record: dict) -> str:
    messages = record.get("messages") or []
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")


def version_sections(ds: DatasetVersion) -> list[Section]:
    """Every section of the version (train and test), once, in file order: the text its examples answer with."""
    meta: dict[tuple[str, int], dict] = {}
    sidecar = ds.dir / "metadata.jsonl"
    if sidecar.is_file():
        for raw in sidecar.read_text(encoding="utf-8").splitlines():
            row = json.loads(raw)
            meta[(row.get("split"), row.get("line"))] = row
    found: dict[str, Section] = {}
    for split, path in (("train", ds.train), ("test", ds.test)):
        if not path.is_file():
            continue
        for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not raw.strip():
                continue
            row = meta.get((split, line), {})
            sid = section_id(row.get("url"), row.get("section"))
            text = _answer(json.loads(raw))
            if sid not in found and text:
                found[sid] = Section(sid, row.get("url") or "", row.get("title") or "", row.get("section"), text)
    return list(found.values())


@dataclass(frozen=True)
class IndexBuild:
    path: Path
    sections: int
    tokenized: int  # sections whose tokens were computed now (new or changed text)
    reused: int  # sections whose tokens came from the state


class Index:
    """A built index: `search(question, k)` → the k best sections, best first; `sections` all it holds."""

    sections: list[Section]

    def search(self, question: str, k: int) -> list[Section]:
        return self.search_many([question], k)[0]

    def search_many(self, questions: Sequence[str], k: int) -> list[list[Section]]:
        raise NotImplementedError


class BM25Index(Index):
    def __init__(self, retriever, sections: list[Section], tokenizer: str):
        self.retriever, self.sections, self.tokenizer = retriever, sections, tokenizer

    def search_many(self, questions: Sequence[str], k: int) -> list[list[Section]]:
        k = min(k, len(self.sections))
        if not questions or not k:
            return [[] for _ in questions]
        tokenize = TOKENIZERS[self.tokenizer]
        queries = [tokenize(q) or [""] for q in questions]
        docs, scores = self.retriever.retrieve(queries, k=k, show_progress=False, n_threads=1)
        return [[self.sections[int(d)] for d, s in zip(row, srow) if s > 0] for row, srow in zip(docs, scores)]


def _bm25(token_lists: list[list[str]]):
    import bm25s

    retriever = bm25s.BM25()
    retriever.index([tokens or [""] for tokens in token_lists], show_progress=False)
    return retriever


def build_in_memory(sections: list[Section], tokenizer: str) -> BM25Index:
    """An index not saved anywhere (the tokenizer comparison, the benchmark)."""
    tokenize = TOKENIZERS[tokenizer]
    return BM25Index(_bm25([tokenize(s.text) for s in sections]), sections, tokenizer)


def index_dir(ds: DatasetVersion, tokenizer: str) -> Path:
    return ds.dir / "index" / tokenizer


def build_index(ds: DatasetVersion, output_dir: Path, tokenizer: str) -> IndexBuild:
    """Index the version's sections into `<version>/index/<tokenizer>/`, tokenizing only texts not seen before."""
    sections = version_sections(ds)
    if not sections:
        raise Refused(f"{ds.label} holds no section to index; build a dataset first: python pipeline.py build")
    tokenize = TOKENIZERS[tokenizer]
    hashes = [hashlib.sha256(s.text.encode()).hexdigest() for s in sections]
    db = base_state.connect(base_state.state_path(output_dir))
    try:
        base_state.migrate(db, _SCHEMA, "retrieval_tokens", {})
        known: dict[str, list[str]] = {}
        for chunk in range(0, len(hashes), 500):
            part = hashes[chunk:chunk + 500]
            rows = db.execute(f"SELECT text_hash, tokens FROM retrieval_tokens WHERE tokenizer = ? AND text_hash IN "
                              f"({','.join('?' * len(part))})", [tokenizer, *part])
            known.update((h, json.loads(t)) for h, t in rows)
        fresh = {h: tokenize(s.text) for s, h in zip(sections, hashes) if h not in known}
        db.executemany("INSERT OR REPLACE INTO retrieval_tokens VALUES (?, ?, ?)",
                       [(tokenizer, h, json.dumps(t, ensure_ascii=False)) for h, t in fresh.items()])
    finally:
        db.close()
    retriever = _bm25([known.get(h) or fresh[h] for h in hashes])
    target = index_dir(ds, tokenizer)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    retriever.save(str(tmp / "bm25"))
    (tmp / "sections.jsonl").write_text("".join(json.dumps(s.__dict__, ensure_ascii=False) + "\n" for s in sections),
                                        encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return IndexBuild(target, len(sections), len(fresh), len(sections) - len(fresh))


def load_index(ds: DatasetVersion, tokenizer: str) -> BM25Index:
    import bm25s

    folder = index_dir(ds, tokenizer)
    if not (folder / "sections.jsonl").is_file():
        raise Refused(f"{ds.label} has no {tokenizer} retrieval index: run python pipeline.py index "
                      f"--dataset {ds.version}")
    sections = [Section(**json.loads(raw)) for raw in (folder / "sections.jsonl").read_text("utf-8").splitlines()]
    return BM25Index(bm25s.BM25.load(str(folder / "bm25")), sections, tokenizer)


class HybridIndex(Index):
    """BM25 and embeddings fused by reciprocal rank: a section's score is the sum over both rankings of
    1 / (RRF_K + its rank), over each one's top `depth`; no score scales to reconcile."""

    RRF_K = 60

    def __init__(self, bm25: Index, embeddings: Index, depth: int = 50):
        self.bm25, self.embeddings, self.depth = bm25, embeddings, depth
        self.sections = bm25.sections

    def search_many(self, questions: Sequence[str], k: int) -> list[list[Section]]:
        depth = max(k, self.depth)
        fused = []
        for lexical, semantic in zip(self.bm25.search_many(questions, depth),
                                     self.embeddings.search_many(questions, depth)):
            score: dict[str, float] = {}
            by_id: dict[str, Section] = {}
            for ranking in (lexical, semantic):
                for rank, section in enumerate(ranking, start=1):
                    score[section.id] = score.get(section.id, 0.0) + 1.0 / (self.RRF_K + rank)
                    by_id[section.id] = section
            fused.append([by_id[i] for i in sorted(score, key=lambda i: -score[i])[:k]])
        return fused


def open_index(ds: DatasetVersion, retrieval: RetrievalConfig, embedder: Embedder | None = None) -> Index:
    """The index `retrieval.method` names, built by `index` before; embeddings need the `Embedder` that embeds
    the questions."""
    if retrieval.method == "bm25":
        return load_index(ds, retrieval.tokenizer)
    from finetune import embeddings

    semantic = embeddings.load_index(ds, embedder)
    return semantic if retrieval.method == "embeddings" else HybridIndex(load_index(ds, retrieval.tokenizer), semantic)


def recall_at_k(retrieved: Iterable[Sequence[str]], sources: Iterable[str], k: int) -> float:
    """The share of questions whose source section id is among the first k ids retrieved for it."""
    hits = [source in ids[:k] for ids, source in zip(retrieved, sources)]
    return sum(hits) / len(hits) if hits else 0.0


def context_message(sections: Sequence[Section]) -> dict:
    """The system message that gives a model the retrieved sections, each in a <source> block."""
    blocks = "\n\n".join(f"<source id=\"{i}\" url=\"{s.url}\" title=\"{s.title}\">\n{s.text}\n</source>"
                         for i, s in enumerate(sections, start=1))
    return {"role": "system", "content": "Answer from the sources below. If they do not cover the question, say "
                                         f"that the documentation does not cover it.\n\n{blocks}"}

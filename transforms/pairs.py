"""The build's stages for generated pairs: documents → cached pairs → verified → distinct questions → examples,
and the recall hold-out after the split.

Verification drops with reasons: `generation_unparsable` (neither of the section's two replies held JSON pairs), `no_pairs` (the reply
held an empty list), `ungrounded` (an
evidence quote that is not in the section after NFKC and whitespace normalisation, or no evidence for a question
the section should answer), `wrong_language` (the answer is not in the section's language) and
with a judge `judged_low` (its lowest score under `min_score`) and `judge_unparsable` (no score in two replies), and
`duplicate_question` (the same or a near-same question, within and across documents, normalised and compared
by MinHash over character shingles).
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from crawlers.document import Document
from transforms.dedup import MinHasher, lsh_params, normalised
from transforms.example import Example
from transforms.filters import script_language
from transforms.generate import GenerationStore, Generator, document_sections
from transforms.stage import Stage, StageLog
from transforms.tokens import TokenCounter, count_messages

NOT_COVERED = "not_covered"
QUESTION_SHINGLE = 3  # characters per shingle of a (short) question
QUESTION_PERMUTATIONS = 64


@dataclass(frozen=True)
class Pair:
    """One generated question with its paraphrases and answer, and where it came from."""

    document: Document
    section: str | None
    heading: str
    section_text: str
    language: str
    index: int  # the pair's place in its section's reply
    question: str
    paraphrases: tuple[str, ...]
    answer: str
    evidence: tuple[str, ...]
    style: str
    model: str
    judge_score: int | None = None  # the lowest of the judge's three scores; None without a judge

    @property
    def url(self) -> str:
        return self.document.url

    @property
    def text(self) -> str:
        """What the report shows of a dropped pair."""
        return f"Q: {self.question}\nA: {self.answer}\nEvidence: {' | '.join(self.evidence)}"


def flat(text: str) -> str:
    """NFKC with every run of whitespace as one space: how evidence is looked up in its section."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def answer_language(text: str) -> str | None:
    """The answer's language: its script for Korean, Japanese and Chinese, py3langid among Latin scripts."""
    script = script_language(text)
    if script in (None, "en"):
        import py3langid

        return py3langid.classify(text)[0] if script == "en" and len(text) >= 40 else script
    return script


class GeneratedPairs(Stage):
    """Documents → their sections' cached pairs; a section not generated yet is left out (counted)."""

    name = "generated"

    def __init__(self, cache: GenerationStore, generator: Generator):
        self.cache = cache
        self.generator = generator

    def __call__(self, documents: Iterable[Document], log: StageLog) -> Iterator[Pair]:
        for doc in documents:
            for section in document_sections(doc, self.generator.gen.language):
                cached = self.cache.get(self.generator.key(section))
                if cached is None:
                    log.leave_out("not_generated")
                elif cached.status != "ok":
                    log.drop(doc, "generation_unparsable", f"{section.heading}: no JSON pairs in two replies",
                             section=section.section)
                elif not cached.pairs:
                    log.drop(doc, "no_pairs", f"{section.heading}: the model found no question to ask",
                             section=section.section)
                elif self.generator.judge_id and (scores := self.cache.scores(
                        self.generator.key(section), self.generator.judge_id)) is None:
                    log.leave_out("not_judged")
                else:
                    scores = scores if self.generator.judge_id else [None] * len(cached.pairs)
                    for i, (raw, score) in enumerate(zip(cached.pairs, scores)):
                        yield Pair(doc, section.section, section.heading, section.text, section.language, i,
                                   raw["question"], tuple(raw["paraphrases"]), raw["answer"], tuple(raw["evidence"]),
                                   raw["style"], cached.model, score)


class VerifyPairs(Stage):
    name = "verify"

    def __init__(self, min_score: int | None = None):
        self.min_score = min_score  # with a judge: pairs scored lower are dropped

    def __call__(self, pairs: Iterable[Pair], log: StageLog) -> Iterator[Pair]:
        for pair in pairs:
            where = f"{pair.heading}: {pair.question}"
            section = flat(pair.section_text)
            missing = [quote for quote in pair.evidence if flat(quote) not in section]
            if missing or (not pair.evidence and pair.style != NOT_COVERED):
                log.drop(pair, "ungrounded", where, section=pair.section, question=pair.question,
                         evidence=missing[0] if missing else None)
                continue
            language = answer_language(pair.answer)
            if language is not None and language != pair.language:
                log.drop(pair, "wrong_language", f"{where} ({language}, section {pair.language})",
                         section=pair.section, question=pair.question, language=language)
                continue
            if self.min_score is not None and (pair.judge_score is None or pair.judge_score < self.min_score):
                reason = "judge_unparsable" if pair.judge_score is None else "judged_low"
                log.drop(pair, reason, f"{where} (score {pair.judge_score}, at least {self.min_score} kept)",
                         section=pair.section, question=pair.question, judge_score=pair.judge_score)
                continue
            yield pair


class DedupQuestions(Stage):
    """Drop a pair whose question equals a kept one after normalisation, or is nearly the same (MinHash)."""

    name = "question_dedup"

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.hasher = MinHasher(QUESTION_PERMUTATIONS, QUESTION_SHINGLE)
        self.bands, self.rows = lsh_params(threshold, QUESTION_PERMUTATIONS)

    def __call__(self, pairs: Iterable[Pair], log: StageLog) -> Iterator[Pair]:
        seen: dict[str, str] = {}
        buckets: dict[tuple[int, bytes], list[int]] = {}
        signatures: list[np.ndarray] = []
        kept: list[str] = []
        for pair in pairs:
            key = normalised(pair.question)
            if key in seen:
                log.drop(pair, "duplicate_question", f"{pair.heading}: {pair.question}", question=pair.question,
                         duplicate_of=seen[key])
                continue
            signature = self.hasher.signature(key)
            bands = [(b, signature[b * self.rows:(b + 1) * self.rows].tobytes()) for b in range(self.bands)]
            candidates = {i for band in bands for i in buckets.get(band, ())}
            near = next((i for i in sorted(candidates)
                         if MinHasher.similarity(signature, signatures[i]) >= self.threshold), None)
            if near is not None:
                log.drop(pair, "duplicate_question", f"{pair.heading}: {pair.question}", question=pair.question,
                         duplicate_of=kept[near])
                continue
            seen[key] = pair.question
            for band in bands:
                buckets.setdefault(band, []).append(len(kept))
            signatures.append(signature)
            kept.append(pair.question)
            yield pair


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


class PairExamples(Stage):
    """A pair → one example per distinct wording (the question, then each paraphrase), answered by its answer."""

    name = "pair_examples"

    def __init__(self, counter: TokenCounter, system_prompt: str, limit: int):
        self.counter = counter
        self.system_prompt = system_prompt
        self.limit = limit

    def __call__(self, pairs: Iterable[Pair], log: StageLog) -> Iterator[Example]:
        for pair in pairs:
            doc = pair.document
            fields = {"title": doc.title, "category": doc.category, "section": pair.section or doc.title, "url": doc.url}
            system = self.system_prompt.format_map(fields)
            answer_tokens = self.counter.cached(pair.answer)
            wordings = list(dict.fromkeys(w for w in (pair.question, *pair.paraphrases) if w.strip()))
            for variant, question in enumerate(wordings):
                messages = [{"role": "system", "content": system}, {"role": "user", "content": question},
                            {"role": "assistant", "content": pair.answer}]
                example = Example(
                    example_id=_digest(doc.url, pair.section or "", pair.question, str(variant)),
                    document_id=doc.id, url=doc.url, source=doc.source, category=doc.category, title=doc.title,
                    section=pair.section, messages=messages, tokens=count_messages(self.counter.encoding, messages),
                    answer_tokens=answer_tokens, language=pair.language,
                    generated={"question_id": _digest(doc.url, pair.section or "", pair.question), "variant": variant,
                               "style": pair.style, "evidence": list(pair.evidence), "model": pair.model,
                               "judge_score": pair.judge_score},
                )
                if example.tokens > self.limit:
                    log.drop(example, "over_limit", f"{doc.url} ({example.tokens} tokens)")
                else:
                    yield example


class HoldOutRecall(Stage):
    """For a `share` of the train questions (chosen stably by question), their first paraphrase goes to the
    recall set (split `recall`, eval_recall.jsonl) instead of train; the other wordings stay in train."""

    name = "recall"

    def __init__(self, share: float, seed: int):
        self.share = share
        self.seed = seed

    def chosen(self, generated: dict[str, Any]) -> bool:
        digest = hashlib.sha256(f"{self.seed}\x00recall\x00{generated['question_id']}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            g = example.generated
            if g and example.split == "train" and g["variant"] == 1 and self.chosen(g):
                example = example.model_copy(update={"split": "recall"})
            yield example

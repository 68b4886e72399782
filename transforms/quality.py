"""Data-quality warnings of a build: refusal-like, very short and repeated answers, category imbalance, and
examples whose structure differs from the rest. They warn; they never drop an example.

`QualityChecks` is fed every written example once, while the build streams, and its state stays bounded:
counters, a few capped samples, and for repeated answers about 44 bytes per assistant message in numpy-ready
arrays (a hash of the text, its page, its example's id and line, and the index of texts seen), counted exactly
at the end. Nothing is re-read or
re-tokenized: answer tokens come with the example, category counts from the report collector.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from typing import Any, Mapping

import numpy as np

from configs import QualityConfig
from transforms.example import Example
from transforms.version import SPLITS

REFUSAL_WINDOW = 200  # a refusal says so at once; reading further costs time on long answers and finds quotes
SAMPLES = 5  # examples listed per finding
GROUPS = 5  # repeated texts listed
EXCERPT = 120

Structure = tuple[str, ...]  # the roles of an example's messages in order, "assistant(weight)" with a weight key


def _sample(example: Example, line: int, **extra: Any) -> dict[str, Any]:
    return {"example_id": example.example_id, "split": example.split, "line": line, **extra}


def _excerpt(text: str, limit: int = EXCERPT) -> str:
    text = " ".join(text[: limit * 2].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(samples: list[dict[str, Any]]) -> str:
    """`train.jsonl lines 3, 8; test.jsonl line 2`: where a reviewer finds the examples."""
    parts = []
    for split in SPLITS:
        lines = [str(s["line"]) for s in samples if s["split"] == split]
        if lines:
            parts.append(f"{split}.jsonl line{'s' if len(lines) > 1 else ''} {', '.join(lines)}")
    return "; ".join(parts)


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _of(count: int, total: int, threshold: float) -> str:
    return f"{count:,} of {total:,} examples ({count / total:.1%}, above {threshold:.1%})"


def _render(structure: Structure) -> str:
    return " ".join(structure)


def _difference(structure: Structure, usual: Structure) -> str:
    """How a structure differs from the usual one, in words."""
    parts = []
    if ("system" in structure) != ("system" in usual):
        parts.append("a system message" if "system" in structure else "no system message")
    turns = sum(role.startswith("assistant") for role in structure)
    usual_turns = sum(role.startswith("assistant") for role in usual)
    if turns != usual_turns:
        parts.append(f"{turns} turn{'s' if turns != 1 else ''} instead of {usual_turns}")
    weights, usual_weights = any("(weight)" in r for r in structure), any("(weight)" in r for r in usual)
    if weights != usual_weights:
        parts.append("assistant weight keys" if weights else "no assistant weight keys")
    return ", ".join(parts) or "its roles in another order"


class RepeatedAnswers:
    """Assistant texts found verbatim in the examples of more than one page, counted exactly.

    The same text in several examples of one page (its question variants, its conversations) is by design
    and does not count. Every `BATCH` messages the new hashes are looked up among the earlier ones, so the
    first `EXCERPTS` texts found repeated keep an excerpt for the report; the texts themselves are not kept.
    """

    BATCH = 4096
    EXCERPTS = 64

    def __init__(self) -> None:
        self.hashes = array("q")
        self.pages = array("Q")
        self.ids = array("Q")
        self.places = array("I")  # split (bit 31) and line
        self.pending: list[str] = []  # excerpts of the batch's texts
        self.known = np.empty(0, dtype=np.int64)  # sorted hashes of the earlier batches …
        self.known_pages = np.empty(0, dtype=np.uint64)  # … and the page each was first seen on
        self.excerpts: dict[int, str] = {}

    def add(self, text: str, page: int, example_id: int, place: int) -> None:
        self.hashes.append(hash(text))
        self.pages.append(page)
        self.ids.append(example_id)
        self.places.append(place)
        self.pending.append(text[: EXCERPT * 2])
        if len(self.pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        start = len(self.hashes) - len(self.pending)
        h = np.array(self.hashes[start:], dtype=np.int64)
        p = np.array(self.pages[start:], dtype=np.uint64)
        repeated = np.zeros(len(h), dtype=bool)
        if len(self.known):
            i = np.minimum(self.known.searchsorted(h), len(self.known) - 1)
            known = self.known[i] == h
            repeated |= known & (self.known_pages[i] != p)
        else:
            known = repeated.copy()
        order = np.argsort(h, kind="stable")
        hs, ps = h[order], p[order]
        first = np.r_[True, hs[1:] != hs[:-1]]
        repeated[order] |= ps != ps[first][np.cumsum(first) - 1]  # another page than the batch's first
        for k in np.flatnonzero(repeated).tolist():
            if len(self.excerpts) >= self.EXCERPTS:
                break
            self.excerpts.setdefault(int(h[k]), _excerpt(self.pending[k]))
        new = first & ~known[order]
        keys = np.concatenate([self.known, hs[new]])
        pages = np.concatenate([self.known_pages, ps[new]])
        merged = np.argsort(keys, kind="stable")
        self.known, self.known_pages = keys[merged], pages[merged]
        self.pending = []

    def summary(self) -> tuple[int, list[dict[str, Any]]]:
        """(examples with a repeated text, the most repeated texts with their examples)."""
        self._flush()
        if not len(self.hashes):
            return 0, []
        h = np.array(self.hashes, dtype=np.int64)
        pages = np.array(self.pages, dtype=np.uint64)
        order = np.lexsort((pages, h))
        hs, ps = h[order], pages[order]
        new_text = np.r_[True, hs[1:] != hs[:-1]]
        new_page = new_text | np.r_[True, ps[1:] != ps[:-1]]
        group = np.cumsum(new_text) - 1
        pages_per_group = np.bincount(group, weights=new_page).astype(np.int64)
        repeated = pages_per_group[group] >= 2
        if not repeated.any():
            return 0, []
        places = np.array(self.places, dtype=np.int64)[order][repeated]
        ids = np.array(self.ids, dtype=np.uint64)[order][repeated]
        groups = group[repeated]
        examples = len(np.unique(places))
        pairs = np.unique((groups << 32) | places)  # one per (text, example), sorted
        pair_groups = pairs >> 32
        starts = np.flatnonzero(np.r_[True, pair_groups[1:] != pair_groups[:-1]])
        counts = np.diff(np.r_[starts, len(pairs)])
        first_places = pairs[starts] & 0xFFFFFFFF
        arrival = np.full(int(group[-1]) + 1, len(order), dtype=np.int64)  # when each text was first added
        np.minimum.at(arrival, group, order)
        first_groups = pair_groups[starts]
        ranked = sorted(zip(first_groups.tolist(), counts.tolist(), first_places.tolist(),
                            arrival[first_groups].tolist()),
                        key=lambda item: (-item[1], item[2], item[3]))  # most examples, then place, then arrival:
        listed = []  # the same order in every build (the hashes differ between processes)
        for g, n, _, _ in ranked[:GROUPS]:
            members = np.flatnonzero(groups == g)
            members = members[np.argsort(places[members], kind="stable")]
            seen: dict[int, dict[str, Any]] = {}
            for k in members.tolist():
                place = int(places[k])
                if place not in seen and len(seen) < SAMPLES:
                    seen[place] = {"example_id": f"{int(ids[k]):016x}", "split": SPLITS[place >> 31],
                                   "line": place & 0x7FFFFFFF}
            text = self.excerpts.get(int(hs[np.flatnonzero(group == g)[0]]))
            listed.append({"examples": n, "pages": int(pages_per_group[g]), "excerpt": text,
                           "examples_listed": list(seen.values())})
        return examples, listed


class QualityChecks:
    """The accumulator of the data-quality checks: `add` each written example once, then `summary`."""

    def __init__(self, config: QualityConfig):
        self.config = config
        self.refusal_patterns = [re.compile(p) for p in config.refusal_patterns]
        self.examples = 0
        self.refusals = 0
        self.refusal_samples: list[dict[str, Any]] = []
        self.short = 0
        self.short_samples: list[dict[str, Any]] = []
        self.structures: Counter = Counter()
        self.structure_samples: dict[Structure, list[dict[str, Any]]] = {}
        self.repeated = RepeatedAnswers()

    def add(self, example: Example, line: int) -> None:
        """One example, as written at `line` of its split's file."""
        self.examples += 1
        page, ident = int(example.document_id, 16), int(example.example_id, 16)
        place = (SPLITS.index(example.split) << 31) | line
        structure, turns, refusal = [], 0, None
        for message in example.messages:
            role = message.get("role", "?")
            structure.append(role + "(weight)" if "weight" in message else role)
            content = message.get("content")
            if role != "assistant" or not isinstance(content, str):
                continue
            turns += 1
            self.repeated.add(content, page, ident, place)
            if refusal is None:
                refusal = self._refusal(content)
        if refusal is not None:
            self.refusals += 1
            if len(self.refusal_samples) < SAMPLES:
                text = refusal.string
                self.refusal_samples.append(_sample(example, line, excerpt=_excerpt(
                    text[max(0, refusal.start() - 30): refusal.end() + 60])))
        if turns and example.answer_tokens < self.config.short_answer_tokens * turns:
            self.short += 1
            if len(self.short_samples) < SAMPLES:
                self.short_samples.append(_sample(example, line, answer_tokens=example.answer_tokens))
        key = tuple(structure)
        self.structures[key] += 1
        samples = self.structure_samples.setdefault(key, [])
        if len(samples) < SAMPLES:
            samples.append(_sample(example, line))

    def _refusal(self, text: str) -> re.Match | None:
        for pattern in self.refusal_patterns:
            match = pattern.search(text, 0, REFUSAL_WINDOW)
            if match:
                return match
        return None

    def summary(self, categories: Mapping[str, int]) -> dict[str, Any]:
        """The manifest's `quality` block: each check's figure, threshold, whether it warns and the examples
        concerned (capped), and the warnings as one line each; `categories` is examples per category."""
        c, n = self.config, self.examples
        checks: dict[str, Any] = {}
        warnings: list[str] = []

        share = _share(self.refusals, n)
        warn = bool(self.refusal_patterns) and share > c.max_refusal_share
        checks["refusals"] = {"count": self.refusals, "share": round(share, 4), "threshold": c.max_refusal_share,
                              "warn": warn, "patterns": len(self.refusal_patterns), "examples": self.refusal_samples}
        if warn:
            first = self.refusal_samples[0]
            warnings.append(f"refusal-like answers: {_of(self.refusals, n, c.max_refusal_share)}, e.g. "
                            f"{_lines(self.refusal_samples)} (\"{first['excerpt']}\"); patterns: "
                            "dataset.quality.refusal_patterns")

        checks["category_balance"] = self._categories(categories, warnings)
        checks["format"] = self._format(warnings)

        share = _share(self.short, n)
        warn = share > c.max_short_share
        checks["short_answers"] = {"count": self.short, "share": round(share, 4), "threshold": c.max_short_share,
                                   "warn": warn, "min_tokens": c.short_answer_tokens, "examples": self.short_samples}
        if warn:
            warnings.append(f"very short answers: {_of(self.short, n, c.max_short_share)} have fewer than "
                            f"{c.short_answer_tokens} tokens per answer, e.g. {_lines(self.short_samples)}")

        count, groups = self.repeated.summary()
        share = _share(count, n)
        warn = share > c.max_repeated_share
        checks["repeated_answers"] = {"count": count, "share": round(share, 4), "threshold": c.max_repeated_share,
                                      "warn": warn, "groups": groups}
        if warn:
            top = groups[0]
            text = f" \"{top['excerpt']}\"" if top["excerpt"] else ""
            warnings.append(f"repeated answers: {_of(count, n, c.max_repeated_share)} share an answer with an "
                            f"example of another page; the most repeated{text} is in {top['examples']} examples "
                            f"of {top['pages']} pages ({_lines(top['examples_listed'])})")
        return {"examples": n, "warnings": warnings, "checks": checks}

    def _categories(self, categories: Mapping[str, int], warnings: list[str]) -> dict[str, Any]:
        threshold = self.config.max_category_ratio
        ranked = sorted(categories.items(), key=lambda item: (-item[1], item[0]))
        if len(ranked) < 2:
            return {"categories": len(ranked), "ratio": None, "threshold": threshold, "warn": False}
        (large, most), (small, least) = ranked[0], ranked[-1]
        ratio = round(most / least, 2)
        warn = ratio > threshold
        if warn:
            warnings.append(f"category imbalance: {large!r} has {most:,} examples, {small!r} {least:,} "
                            f"({ratio:g}× as many, above {threshold:g}×; {len(ranked)} categories)")
        return {"categories": len(ranked), "largest": {"category": large, "examples": most},
                "smallest": {"category": small, "examples": least}, "ratio": ratio, "threshold": threshold,
                "warn": warn}

    def _format(self, warnings: list[str]) -> dict[str, Any]:
        threshold = self.config.max_format_outlier_share
        ranked = sorted(self.structures.items(), key=lambda item: (-item[1], item[0]))
        if not ranked:
            return {"usual": None, "count": 0, "share": 0.0, "threshold": threshold, "warn": False, "outliers": []}
        usual = ranked[0][0]
        outliers = [{"structure": _render(s), "differs": _difference(s, usual), "count": k,
                     "examples": self.structure_samples[s]} for s, k in ranked[1:]]
        count = sum(o["count"] for o in outliers)
        share = _share(count, self.examples)
        warn = share > threshold
        if warn:
            listed = ", ".join(f"{o['count']:,} with {o['differs']} ({_lines(o['examples'][:3])})"
                               for o in outliers[:3])
            more = f", and {len(outliers) - 3} other structures" if len(outliers) > 3 else ""
            warnings.append(f"format outliers: {_of(count, self.examples, threshold)} differ from the usual "
                            f"`{_render(usual)}`: {listed}{more}")
        return {"usual": _render(usual), "usual_count": ranked[0][1], "count": count, "share": round(share, 4),
                "threshold": threshold, "warn": warn, "outliers": outliers[:GROUPS]}

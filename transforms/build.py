"""`build`: stored documents → examples → reviewed, filtered, deduplicated, split, checked → a new dataset
version with its manifest, report.html and review.csv.

The stages, in order: (documents) PII redaction, language filter; (examples) compose, quality filters,
review decisions, PII drop, dedup, split, format check. Streams from the SQLite state to the files: memory
does not grow with the number of documents beyond a few bytes of bookkeeping per example (token counts,
dedup keys in numpy arrays); the report's diff is joined in a temporary SQLite file.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configs import Config, model_registry
from base.state import state_path
from crawlers.store import PageStore
from transforms import estimate
from transforms.compose import ComposeExamples
from transforms.decisions import ApplyDecisions, stored_decisions
from transforms.dedup import Dedup
from transforms.filters import LanguageFilter, QualityFilter
from transforms.formats import Format
from transforms.generate import GenerationStore, Generator
from transforms.pairs import DedupQuestions, GeneratedPairs, HoldOutRecall, PairExamples, VerifyPairs
from transforms.pii import DropPII, PiiScanner, RedactPII
from transforms.report import ReportCollector, render
from transforms.review_sheet import ReviewSheet
from transforms.review_state import open_state
from transforms.split import AssignSplit, FractionSubset, StratifiedSplit
from transforms.stage import Stage, run_stages
from transforms.tokens import TokenCounter, count_messages
from transforms.validate import CheckFormat
from transforms.version import RECALL_FILE, Manifest, resolve
from transforms.write import DatasetWriter
from base.errors import Crawl2TuneError


class BuildError(Crawl2TuneError, RuntimeError):
    """The dataset cannot be built from what is stored."""


@dataclass
class BuildResult:
    version_dir: Path
    manifest: Manifest
    unchanged: bool
    warnings: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)  # this build's data-quality checks, also when unchanged


def datasets_root(config: Config) -> Path:
    return Path(config.output_dir) / "datasets" / config.dataset.name


def config_hash(config: Config) -> str:
    """Hash of what decides the dataset's content (model and dataset settings), not of schedules, endpoints or
    the thresholds of warnings."""
    excluded: dict[str, Any] = {"quality": True}
    if config.dataset.generate.provider == "none":
        excluded["generate"] = True
    else:  # where and how fast the pairs are fetched does not change them
        excluded["generate"] = {"base_url", "api_key_env", "api_version", "response_format", "concurrency",
                                "timeout_s", "max_retries", "max_cost_usd", "price_per_1m_input_tokens",
                                "price_per_1m_output_tokens"}
    decisive = config.model_dump(mode="json", include={"model", "price_per_1m_tokens", "dataset"},
                                 exclude={"dataset": excluded})
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode("utf-8")).hexdigest()


def _recounter(counter: TokenCounter, fmt: Format):
    """Exact (tokens, assistant tokens) of a reviewer-edited conversation; only edited examples pay for it."""
    from transforms.formats import record

    def recount(messages: list[dict[str, Any]]) -> tuple[int, int]:
        if fmt == "prompt_completion":
            line = record(messages, fmt)
            prompt, completion = counter.texts([line["prompt"], line["completion"]])
            return prompt + completion, completion
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        return count_messages(counter.encoding, messages), sum(counter.texts(answers))

    return recount


@dataclass
class Stages:
    """The build's stages in order, over documents then examples, and the ones whose summaries the manifest keeps."""

    documents: list[Stage]
    examples: list[Stage]
    pii: RedactPII | DropPII | None
    review: ApplyDecisions
    dedup: Dedup
    subset: FractionSubset | None
    split_db: Any  # the state's connection a stratified split keeps its assignments in, or None
    generation: GenerationStore | None = None  # the cached pairs, when dataset.generate has a provider


def document_stages(config: Config) -> list[Stage]:
    """The stages over documents: PII redaction (pii: redact), the language filter (filters.languages).
    `generate` sends sections through them too, so a model sees what the build uses."""
    ds = config.dataset
    document_stages: list[Stage] = []
    if ds.pii == "redact":
        document_stages.append(RedactPII(PiiScanner(ds.pii_kinds)))
    if ds.filters.languages:
        document_stages.append(LanguageFilter(ds.filters.languages))
    return document_stages


def stages(config: Config, spec: model_registry.ModelSpec, state: Path) -> Stages:
    """The stages the config asks for: (documents) PII redaction, language filter; (examples) compose, quality
    filters, review decisions, PII drop, dedup, split, fraction subset, format check."""
    ds, fmt = config.dataset, spec.format
    counter = TokenCounter(spec.encoding)
    try:
        compose = ComposeExamples(counter, ds.system_prompt, ds.user_templates, config.token_limit,
                                  granularity=ds.granularity, questions=ds.questions_per_document,
                                  turns=ds.turns_per_example, train_on=ds.train_on, fmt=fmt)
    except ValueError as exc:
        raise BuildError(f"dataset: {exc} ({spec.name} takes {fmt} examples)") from None
    document_stages_ = document_stages(config)
    pii = next((s for s in document_stages_ if isinstance(s, RedactPII)), None) or (
        DropPII(PiiScanner(ds.pii_kinds)) if ds.pii == "drop" else None)
    scanner = pii.scanner if pii else PiiScanner(ds.pii_kinds)

    review = ApplyDecisions(stored_decisions(state, ds.name), _recounter(counter, fmt),
                            redact=(lambda text: scanner.redact(text)[0]) if ds.pii == "redact" else None)
    dedup = Dedup(ds.dedup.exact, ds.dedup.near_threshold, ds.dedup.shingle_chars, ds.dedup.num_perm)
    split_db = open_state(state) if ds.stratify == "category" else None
    generation = GenerationStore(state) if ds.generate.provider != "none" else None
    if ds.generate.provider != "none" and fmt != "chat":
        raise BuildError(f"dataset.generate makes chat examples; {spec.name} takes {fmt} examples (choose a chat model)")
    if generation:  # generated pairs instead of templates: verified, distinct questions (their answers repeat)
        generator = Generator(ds.generate)
        first: list[Stage] = [GeneratedPairs(generation, generator), VerifyPairs(
            ds.generate.judge.min_score if ds.generate.judge else None), DedupQuestions(
            ds.generate.near_duplicate), PairExamples(counter, ds.system_prompt, config.token_limit)]
    else:
        first = [compose]
    example_stages: list[Stage] = [
        *first,
        QualityFilter(ds.filters.min_assistant_tokens,
                      ds.filters.boilerplate_patterns if ds.filters.drop_boilerplate else None),
        review,
    ]
    if isinstance(pii, DropPII):
        example_stages.append(pii)
    example_stages += [
        *([] if generation else [dedup]),
        StratifiedSplit(split_db, ds.name, ds.test_fraction, ds.seed) if split_db else AssignSplit(
            ds.test_fraction, ds.seed),
    ]
    if generation and ds.generate.recall_share > 0:
        example_stages.append(HoldOutRecall(ds.generate.recall_share, ds.seed))
    subset = FractionSubset(ds.fraction, ds.seed) if ds.fraction < 1 else None
    if subset:  # after dedup and split: the full build's examples and sides, restricted (see FractionSubset)
        example_stages.append(subset)
    example_stages.append(CheckFormat(fmt))
    return Stages(document_stages_, example_stages, pii, review, dedup, subset, split_db, generation)


def _check_counts(config: Config, state: Path, out: DatasetWriter, st: Stages, warnings: list[str]) -> None:
    """Refuse a build without examples; warn about a train split below a provider's minimum (the version is
    still written, for review; `finetune` refuses it for that provider), an empty test split and unmatched
    decisions."""
    ds = config.dataset
    if out.documents == 0 and st.subset:
        raise BuildError(f"no document falls in fraction {ds.fraction:g}; give a larger --fraction")
    if out.documents == 0:
        raise BuildError(f"the crawl state {state} holds no documents; run `python pipeline.py crawl` first")
    n_train, n_test = len(out.tokens["train"]), len(out.tokens["test"])
    if n_train + n_test == 0:
        raise BuildError(f"no example is left of the {out.documents} documents (the dropped counts say why); "
                         f"{model_registry.FEW_EXAMPLES_REMEDY}")
    below = sorted(p for p, minimum in model_registry.MIN_TRAIN_EXAMPLES.items() if n_train < minimum)
    if below:
        needed = max(model_registry.MIN_TRAIN_EXAMPLES[p] for p in below)
        warnings.append(f"the train split holds {n_train} examples, fewer than the {needed} that fine-tuning "
                        f"with {' and '.join(below)} requires (`finetune` refuses this version there); "
                        f"{model_registry.FEW_EXAMPLES_REMEDY}")
    if n_test == 0 and ds.test_fraction > 0:
        warnings.append("the test split is empty; raise dataset.test_fraction or crawl more pages")
    if st.review.summary()["unmatched"]:
        warnings.append(f"{st.review.summary()['unmatched']} stored review decisions matched no example of "
                        "this build (their pages or sections are gone or were dropped earlier)")


def _manifest(config: Config, spec: model_registry.ModelSpec, out: DatasetWriter, st: Stages, logs: list,
              **rest: Any) -> Manifest:
    """manifest.json of the new version (`version` is set when it is published); `rest`: warnings, quality,
    crawl, files and config_hash as they are."""
    ds = config.dataset
    n_train, n_test = len(out.tokens["train"]), len(out.tokens["test"])
    n_epochs = estimate.default_epochs(n_train)
    billed = estimate.billed_tokens(out.tokens["train"], config.token_limit, n_epochs)
    price = config.price_per_1m_tokens or spec.price_per_1m_training_tokens
    dropped: Counter = Counter()
    for log in logs:
        dropped.update(log.dropped)
    train_tokens, test_tokens = sum(out.tokens["train"]), sum(out.tokens["test"])
    return Manifest.model_validate({
        "version": None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": ds.name,
        "model": spec.name,
        "format": spec.format,
        "config": config.model_dump(mode="json"),
        "counts": {
            "documents": out.documents,
            "examples": n_train + n_test,
            "train": n_train,
            "test": n_test,
            "dropped": dict(sorted(dropped.items())),
            "review": {k: st.review.summary()[k] for k in ("excluded", "edited")},
            "preference": out.preferences,
        },
        "stages": {log.name: log.as_dict() for log in logs},
        "tokens": {
            "total": train_tokens + test_tokens,
            "train": train_tokens,
            "test": test_tokens,
            "max_example": max(max(out.tokens["train"], default=0), max(out.tokens["test"], default=0)),
            "limit": config.token_limit,
        },
        "n_epochs": n_epochs,
        "billed_tokens": billed,
        "estimated_cost_usd": estimate.cost_usd(billed, price),
        "pii": st.pii.summary() if st.pii else {"mode": "off"},
        "dedup": st.dedup.summary(),
        "review": st.review.summary(),
        "split": {"test_fraction": ds.test_fraction, "seed": ds.seed, "stratify": ds.stratify},
        "fraction": {"value": ds.fraction, "documents_kept": out.documents,
                     "examples_outside": st.subset.outside if st.subset else 0},
        **rest,
    })


def _generation(config: Config, st: Stages, out: DatasetWriter, styles: Counter) -> dict[str, Any]:
    """The manifest's `generation`: empty for a template build."""
    if st.generation is None:
        return {}
    gen = config.dataset.generate
    return {"provider": gen.provider, "model": gen.model, "questions_by_style": dict(sorted(styles.items())),
            "recall_examples": out.recalled, "recall_file": RECALL_FILE if out.recalled else None,
            "cost_usd": round(st.generation.spent(), 6)}


def build(config: Config) -> BuildResult:
    """Build a new dataset version from the crawl state (or report that it equals the latest one): documents
    through the stages into the writer, the counts checked, then published unless the latest version is the same."""
    spec, warnings = model_registry.check(config.model, hosted=config.finetune.provider != "local",
                                         named=config.finetune.model_specs)
    state = state_path(config.output_dir)
    if not state.exists():
        raise BuildError(f"no crawl state at {state}; run `python pipeline.py crawl` with this config first")
    st = stages(config, spec, state)
    root = datasets_root(config)
    collector = ReportCollector(config.dataset.quality)
    try:
        with PageStore(state) as store, DatasetWriter(root, spec.format) as out:
            def on_drop(drop) -> None:
                out.dropped(drop)
                collector.dropped(drop)

            documents, document_logs = run_stages(store.documents(), st.documents, on_drop=on_drop)
            examples, example_logs = run_stages(out.tap_documents(documents, st.subset.chosen if st.subset else None),
                                                st.examples, on_drop=on_drop)
            sheet = ReviewSheet(out.tmp / "review.csv")
            styles: Counter = Counter()
            for example in examples:
                if example.generated and example.generated["variant"] == 0:
                    styles[example.generated["style"]] += 1
                if example.split == "recall":
                    out.recall(example)
                    continue
                collector.add(example, out.add(example))
                sheet.add(example)
            sheet.flush()
            _check_counts(config, state, out, st, warnings)
            quality = collector.quality_summary()
            hashes = out.file_hashes()
            digest = config_hash(config)
            latest = resolve(root)
            same = out.find_same(hashes, digest) if st.subset else latest if out.same_as(latest, hashes, digest) else None
            if same is not None:
                return BuildResult(same.dir, same.manifest, unchanged=True, warnings=warnings, quality=quality)
            manifest = _manifest(config, spec, out, st, document_logs + example_logs, config_hash=digest,
                                 warnings=warnings, quality=quality,
                                 crawl=store.latest_crawls([s.name for s in config.sources]), files=hashes,
                                 generation=_generation(config, st, out, styles))
            diff = collector.diff(latest.dir if latest else None)
            if diff is not None:
                manifest.diff = {key: diff[key] for key in ("previous", "added", "removed", "changed")}

            def publish(folder: Path, manifest: Manifest) -> list[str]:
                page = render(manifest, collector, out.tokens, diff)
                (folder / "report.html").write_text(page, encoding="utf-8")
                return ["report.html", "review.csv"]

            version = out.commit(manifest, publish, latest=st.subset is None)  # a subset never becomes `latest`
    finally:
        collector.close()
        if st.split_db is not None:
            st.split_db.close()
        if st.generation is not None:
            st.generation.close()
    return BuildResult(version, manifest, unchanged=False, warnings=warnings, quality=quality)

"""Data-quality warnings: each check on a crafted dataset (and silence on a clean one), their thresholds in the
config, and the warnings in `build` output, the manifest's `quality` block and report.html. They never drop."""

from __future__ import annotations

import hashlib
import json

import pytest

from configs import DEFAULT_REFUSALS, ConfigError, QualityConfig, load_config
from dataset_state import guide_pages, korean_paragraph, make_config, page, write_pages
from pipeline import main
from transforms import quality
from transforms.build import build
from transforms.example import Example
from transforms.quality import QualityChecks

REFUSALS = [
    "죄송하지만 해당 질문에는 답변드릴 수 없습니다.",
    "그 내용은 답변할 수 없습니다. 담당 부서에 문의하십시오.",
    "I can't help with that request.",
    "I cannot answer questions about internal systems.",
    "As an AI language model, I do not have opinions.",
    "I'm sorry, but I cannot share that.",
    "저는 AI 언어 모델로서 그 질문에 답할 수 없어요.",
]


def _id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def example(n: int, answer: str | None = None, *, category: str = "guide", page_key: str | None = None,
            system: bool = True, turns: int = 1, weights: bool = False, answer_tokens: int = 60,
            split: str = "train") -> Example:
    """Example number `n`: distinct answers by default, on its own page unless `page_key` names one."""
    messages = [{"role": "system", "content": f"Category: {category}"}] if system else []
    for t in range(turns):
        assistant = {"role": "assistant", "content": answer if answer is not None and t == turns - 1
                     else f"{n}-{t}: {korean_paragraph(n * 10 + t)}"}
        if weights:
            assistant["weight"] = int(t == turns - 1)
        messages += [{"role": "user", "content": f"문서 {n} 관련 내용을 알려줘."}, assistant]
    page_key = page_key or f"page-{n}"
    return Example(example_id=_id(f"example {n} {page_key}"), document_id=_id(page_key),
                   url=f"http://guide.example.internal/{page_key}.html", source="guide", category=category,
                   title=page_key, messages=messages, tokens=answer_tokens + 20, answer_tokens=answer_tokens,
                   split=split)


def check(examples: list[Example], categories: dict[str, int] | None = None, **config) -> dict:
    checks = QualityChecks(QualityConfig(**config))
    lines = {"train": 0, "test": 0}
    for ex in examples:
        lines[ex.split] += 1
        checks.add(ex, lines[ex.split])
    if categories is None:
        categories = {}
        for ex in examples:
            categories[ex.category] = categories.get(ex.category, 0) + 1
    return checks.summary(categories)


def clean(n: int = 40) -> list[Example]:
    return [example(i, split="test" if i % 5 == 4 else "train") for i in range(n)]


def test_a_clean_dataset_gets_no_warning():
    block = check(clean())
    assert block["warnings"] == []
    assert block["examples"] == 40
    assert not any(c["warn"] for c in block["checks"].values())
    assert block["checks"]["format"]["usual"] == "system user assistant"
    assert block["checks"]["refusals"]["patterns"] == len(DEFAULT_REFUSALS)


@pytest.mark.parametrize("text", REFUSALS)
def test_each_built_in_refusal_pattern_family_is_caught(text):
    block = check(clean(30) + [example(99, text)], max_refusal_share=0.0)
    assert block["checks"]["refusals"]["count"] == 1


def test_refusal_like_answers_above_the_share_warn_with_their_lines():
    examples = clean(40)
    for i in (3, 7, 20):  # train lines 4, 7, 17 (every fifth example is in test)
        examples[i] = example(i, REFUSALS[i % len(REFUSALS)])
    block = check(examples)
    refusals = block["checks"]["refusals"]
    assert (refusals["count"], refusals["share"], refusals["threshold"], refusals["warn"]) == (3, 0.075, 0.01, True)
    assert [(s["split"], s["line"]) for s in refusals["examples"]] == [("train", 4), ("train", 7), ("train", 17)]
    assert refusals["examples"][0]["example_id"] == examples[3].example_id
    [warning] = block["warnings"]
    assert warning.startswith("refusal-like answers: 3 of 40 examples (7.5%, above 1.0%), e.g. "
                              "train.jsonl lines 4, 7, 17")
    assert "dataset.quality.refusal_patterns" in warning


def test_refusals_at_or_below_the_share_do_not_warn():
    examples = clean(40)
    examples[3] = example(3, REFUSALS[0])
    block = check(examples, max_refusal_share=0.025)
    assert block["checks"]["refusals"]["count"] == 1 and block["warnings"] == []


def test_a_refusal_phrase_deep_in_a_long_answer_is_not_a_refusal():
    quoted = korean_paragraph(1, 12) + " 오류 메시지: '답변할 수 없습니다'"
    assert len(quoted) > quality.REFUSAL_WINDOW
    block = check(clean(10) + [example(50, quoted)], max_refusal_share=0.0)
    assert block["checks"]["refusals"]["count"] == 0


def test_refusal_patterns_replace_the_built_in_list():
    examples = clean(20) + [example(50, "자세한 내용은 담당자에게 문의하세요."), example(51, REFUSALS[0])]
    block = check(examples, refusal_patterns=["담당자에게 문의"], max_refusal_share=0.0)
    refusals = block["checks"]["refusals"]
    assert refusals["count"] == 1 and refusals["patterns"] == 1
    assert refusals["examples"][0]["example_id"] == examples[20].example_id
    assert "담당자에게 문의" in refusals["examples"][0]["excerpt"]
    off = check(examples, refusal_patterns=[], max_refusal_share=0.0)["checks"]["refusals"]
    assert (off["count"], off["warn"]) == (0, False)


def test_category_imbalance_names_the_largest_and_the_smallest():
    examples = [example(i, category="[온라인] 업무 가이드") for i in range(30)]
    examples += [example(100 + i, category="FAQ") for i in range(2)]
    examples += [example(200 + i, category="[배치] 운영 가이드") for i in range(10)]
    block = check(examples)
    balance = block["checks"]["category_balance"]
    assert balance["largest"] == {"category": "[온라인] 업무 가이드", "examples": 30}
    assert balance["smallest"] == {"category": "FAQ", "examples": 2}
    assert (balance["ratio"], balance["warn"], balance["categories"]) == (15.0, True, 3)
    assert block["warnings"] == ["category imbalance: '[온라인] 업무 가이드' has 30 examples, 'FAQ' 2 "
                                 "(15× as many, above 10×; 3 categories)"]
    assert check(examples, max_category_ratio=15)["warnings"] == []
    single = check(clean(12))["checks"]["category_balance"]
    assert (single["ratio"], single["warn"]) == (None, False)


def test_format_outliers_name_how_they_differ_and_where():
    examples = clean(40)
    examples[6] = example(6, system=False)  # train line 6
    examples[11] = example(11, system=False)  # train line 10
    examples[22] = example(22, turns=2, weights=True)  # train line 19
    block = check(examples)
    fmt = block["checks"]["format"]
    assert (fmt["usual"], fmt["usual_count"], fmt["count"], fmt["warn"]) == ("system user assistant", 37, 3, True)
    first, second = fmt["outliers"]
    assert (first["structure"], first["differs"], first["count"]) == ("user assistant", "no system message", 2)
    assert [(s["split"], s["line"]) for s in first["examples"]] == [("train", 6), ("train", 10)]
    assert second["structure"] == "system user assistant(weight) user assistant(weight)"
    assert second["differs"] == "2 turns instead of 1, assistant weight keys"
    [warning] = block["warnings"]
    assert warning == ("format outliers: 3 of 40 examples (7.5%, above 0.0%) differ from the usual "
                       "`system user assistant`: 2 with no system message (train.jsonl lines 6, 10), 1 with 2 turns "
                       "instead of 1, assistant weight keys (train.jsonl line 19)")
    assert check(examples, max_format_outlier_share=0.1)["warnings"] == []


def test_weight_keys_on_only_some_conversations_are_outliers():
    examples = [example(i, turns=2, weights=True) for i in range(20)] + [example(50, turns=2)]
    fmt = check(examples)["checks"]["format"]
    assert [(o["differs"], o["count"]) for o in fmt["outliers"]] == [("no assistant weight keys", 1)]


def test_very_short_answers_above_the_share_warn():
    examples = clean(20)
    for i, text in zip((1, 2, 3), ("네.", "아니요.", "가능합니다.")):
        examples[i] = example(i, text, answer_tokens=3)
    block = check(examples)
    short = block["checks"]["short_answers"]
    assert (short["count"], short["share"], short["min_tokens"], short["warn"]) == (3, 0.15, 20, True)
    assert [s["answer_tokens"] for s in short["examples"]] == [3, 3, 3]
    assert block["warnings"] == ["very short answers: 3 of 20 examples (15.0%, above 10.0%) have fewer than 20 "
                                 "tokens per answer, e.g. train.jsonl lines 2, 3, 4"]
    assert check(examples, short_answer_tokens=3)["checks"]["short_answers"]["count"] == 0
    assert check(examples, max_short_share=0.15)["warnings"] == []


def test_short_answers_are_judged_per_assistant_turn():
    examples = [example(i, turns=3, answer_tokens=45) for i in range(10)]  # 15 tokens a turn
    assert check(examples)["checks"]["short_answers"]["count"] == 10
    assert check(examples, short_answer_tokens=15)["checks"]["short_answers"]["count"] == 0


def test_answers_repeated_across_pages_warn_and_count_every_example():
    canned = "자세한 내용은 운영팀에 문의하십시오. 담당자가 확인 후 연락드립니다."
    examples = clean(40)
    for i in (5, 12, 30):
        examples[i] = example(i, canned)  # three pages
    block = check(examples)
    repeated = block["checks"]["repeated_answers"]
    assert (repeated["count"], repeated["share"], repeated["warn"]) == (3, 0.075, True)
    [group] = repeated["groups"]
    assert (group["examples"], group["pages"], group["excerpt"]) == (3, 3, canned)
    assert [(s["split"], s["line"], s["example_id"]) for s in group["examples_listed"]] == [
        ("train", 5, examples[5].example_id), ("train", 11, examples[12].example_id),
        ("train", 25, examples[30].example_id)]
    [warning] = block["warnings"]
    assert warning == (f"repeated answers: 3 of 40 examples (7.5%, above 2.0%) share an answer with an example of "
                       f"another page; the most repeated \"{canned}\" is in 3 examples of 3 pages "
                       "(train.jsonl lines 5, 11, 25)")


def test_the_same_answer_within_one_page_is_not_a_repeat():
    """A page's question variants (questions_per_document) share their answer by design."""
    answer = korean_paragraph(7)
    examples = clean(20) + [example(100 + q, answer, page_key="faq") for q in range(3)]
    repeated = check(examples, max_repeated_share=0.0)["checks"]["repeated_answers"]
    assert (repeated["count"], repeated["groups"]) == (0, [])


def test_repeats_are_found_across_batches_and_stay_exact(monkeypatch):
    """Texts are looked up batch by batch (here 7 messages a batch): repeats far apart are still counted,
    and the kept excerpts are capped."""
    monkeypatch.setattr(quality.RepeatedAnswers, "BATCH", 7)
    monkeypatch.setattr(quality.RepeatedAnswers, "EXCERPTS", 2)
    examples = clean(60)
    canned = ["첫 번째 반복 답변입니다.", "두 번째 반복 답변입니다.", "세 번째 반복 답변입니다."]
    for k, text in enumerate(canned):
        for i in (k, 20 + k, 40 + k, 55 + k) if k == 0 else (10 + k, 50 + k):
            examples[i] = example(i, text)
    repeated = check(examples)["checks"]["repeated_answers"]
    assert repeated["count"] == 8
    assert [(g["examples"], g["pages"]) for g in repeated["groups"]] == [(4, 4), (2, 2), (2, 2)]
    assert [g["excerpt"] for g in repeated["groups"]] == [canned[0], canned[1], None]


def test_samples_stay_capped_however_many_examples_are_found():
    examples = [example(i, REFUSALS[0] + f" ({i})", answer_tokens=2, system=i % 2 == 0) for i in range(300)]
    block = check(examples)
    checks = block["checks"]
    assert checks["refusals"]["count"] == 300 and len(checks["refusals"]["examples"]) == quality.SAMPLES
    assert checks["short_answers"]["count"] == 300 and len(checks["short_answers"]["examples"]) == quality.SAMPLES
    assert all(len(o["examples"]) <= quality.SAMPLES for o in checks["format"]["outliers"])
    assert len(block["warnings"]) == 3 and all(len(w) < 400 for w in block["warnings"])


@pytest.mark.parametrize("yaml,where", [
    ("max_refusal_share: 5", "dataset.quality.max_refusal_share: Input should be less than or equal to 1"),
    ("max_repeated_share: -0.1", "dataset.quality.max_repeated_share: Input should be greater than or equal to 0"),
    ("max_short_share: 1.5", "dataset.quality.max_short_share: Input should be less than or equal to 1"),
    ("max_format_outlier_share: 2", "dataset.quality.max_format_outlier_share: Input should be less than or equal"),
    ("max_category_ratio: 0.5", "dataset.quality.max_category_ratio: Input should be greater than or equal to 1"),
    ("short_answer_tokens: 0", "dataset.quality.short_answer_tokens: Input should be greater than or equal to 1"),
    ("refusal_patterns: ['(답변']", "dataset.quality.refusal_patterns.0: '(답변' is not a valid regex"),
    ("max_refusal_shar: 0.1", "dataset.quality.max_refusal_shar: unknown key"),
])
def test_quality_thresholds_are_validated(tmp_path, yaml, where):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, f"quality:\n  {yaml}")
    assert str(err.value).startswith(f"{tmp_path / 'config.yaml'}: ") and where in str(err.value)


def test_every_quality_key_has_a_default_and_a_description():
    for name, field in QualityConfig.model_fields.items():
        assert field.description, name
        assert not field.is_required(), name


# -- in a real build -------------------------------------------------------------------------------------

def crafted_pages() -> list[dict]:
    """20 clean guide pages, 2 refusal pages and a category of one page."""
    pages = guide_pages(20)
    pages += [page(f"refusal-{i}", f"# 문의 {i}\n\n{text} {korean_paragraph(500 + i, 1)}", title=f"문의 {i}")
              for i, text in enumerate(REFUSALS[:2])]
    pages.append(page("faq", f"# FAQ\n\n{korean_paragraph(900)}", title="FAQ", category="FAQ"))
    return pages


def test_build_warns_in_output_manifest_and_report_without_dropping(tmp_path, capsys):
    write_pages(tmp_path / "out", crafted_pages())
    make_config(tmp_path, "test_fraction: 0.1")
    assert main(["build", "--config", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    version = tmp_path / "out" / "datasets" / "guide" / "v0001"
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["examples"] == 23 and not manifest["counts"]["dropped"]  # warned, not dropped

    block = manifest["quality"]
    assert block["examples"] == 23
    assert block["checks"]["refusals"]["count"] == 2 and block["checks"]["refusals"]["warn"]
    assert block["checks"]["category_balance"]["smallest"] == {"category": "FAQ", "examples": 1}
    kinds = [w.split(":")[0] for w in block["warnings"]]
    assert kinds == ["refusal-like answers", "category imbalance"]
    metadata = [json.loads(l) for l in (version / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    found = {(s["split"], s["line"], s["example_id"]) for s in block["checks"]["refusals"]["examples"]}
    assert found == {(m["split"], m["line"], m["example_id"]) for m in metadata if "/refusal-" in m["url"]}
    for split, line, _ in found:  # the line numbers point at the refusals in the written files
        written = (version / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[line - 1]
        assert any(text in written for text in REFUSALS[:2])

    quality_lines = [i for i, line in enumerate(out) if line.startswith("  data quality: ")]
    assert [out[i].removeprefix("  data quality: ") for i in quality_lines] == block["warnings"]
    built = next(i for i, line in enumerate(out) if line.startswith("built guide v0001"))
    files = next(i for i, line in enumerate(out) if line.startswith("  files: "))
    assert built < quality_lines[0] and quality_lines[-1] < files

    report = (version / "report.html").read_text(encoding="utf-8")
    assert "Data quality" in report and "Data-quality warnings" in report
    assert "refusal-like answers: 2 of 23 examples" in report
    assert "죄송하지만 해당 질문에는 답변드릴 수 없습니다" in report


def test_a_clean_build_has_a_quality_block_and_no_warnings(tmp_path, capsys):
    write_pages(tmp_path / "out", guide_pages(16))
    make_config(tmp_path, "test_fraction: 0.1")
    assert main(["build", "--config", str(tmp_path / "config.yaml")]) == 0
    assert "data quality:" not in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out/datasets/guide/v0001/manifest.json").read_text(encoding="utf-8"))
    assert manifest["quality"]["warnings"] == [] and manifest["quality"]["examples"] == 16
    assert set(manifest["quality"]["checks"]) == {"refusals", "category_balance", "format", "short_answers",
                                                  "repeated_answers"}


def test_changing_only_a_threshold_keeps_the_version_and_reports_the_new_verdict(tmp_path, capsys):
    write_pages(tmp_path / "out", crafted_pages())
    first = build(make_config(tmp_path, "test_fraction: 0.1"))
    assert len(first.quality["warnings"]) == 2
    again = build(make_config(tmp_path, "test_fraction: 0.1\nquality:\n  max_refusal_share: 0.5\n"
                                        "  max_category_ratio: 50"))
    assert again.unchanged and again.version_dir == first.version_dir
    assert again.quality["warnings"] == [] and again.quality["checks"]["refusals"]["count"] == 2


def test_repeated_answers_show_when_exact_dedup_is_off(tmp_path):
    canned = f"# 안내\n\n해당 기능은 준비 중입니다. {korean_paragraph(3, 1)}"
    pages = guide_pages(16) + [page(f"todo-{i}", canned, title=f"준비 {i}") for i in range(3)]
    write_pages(tmp_path / "out", pages)
    result = build(make_config(tmp_path, "test_fraction: 0.1\ndedup:\n  exact: false\n  near_threshold: null"))
    repeated = result.quality["checks"]["repeated_answers"]
    assert (repeated["count"], repeated["warn"]) == (3, True)
    assert repeated["groups"][0]["pages"] == 3 and "준비 중입니다" in repeated["groups"][0]["excerpt"]
    assert result.manifest.quality == result.quality


@pytest.mark.parametrize("first,second", [("가", "나"), ("나", "가")])
def test_repeated_texts_tied_in_count_and_place_are_listed_in_the_order_they_came(first, second):
    """Two turns of one conversation repeated on another page tie on count and place; the texts' hashes differ
    between processes, so the order they came in decides, and every build lists them alike."""
    repeated = quality.RepeatedAnswers()
    texts = [f"{first} 반복되는 답변입니다.", f"{second} 반복되는 답변입니다."]
    for page, place in ((1, 0), (2, 1)):
        for text in texts:
            repeated.add(text, page=page, example_id=page, place=place)
    examples, groups = repeated.summary()
    assert examples == 2
    assert [g["excerpt"] for g in groups] == texts

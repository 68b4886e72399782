from transforms.example import Example
from transforms.split import AssignSplit, position
from transforms.stage import run_stages


def example(url: str) -> Example:
    return Example(example_id=url[-8:], document_id=url[-8:], url=url, source="s", category="c", title="t",
                   messages=[], tokens=1)


def splits(urls, fraction=0.2, seed=0):
    out, _ = run_stages((example(u) for u in urls), [AssignSplit(fraction, seed)])
    return {e.url: e.split for e in out}


URLS = [f"http://guide.example.internal/page-{i}.html" for i in range(500)]


def test_a_document_keeps_its_split_when_the_site_changes():
    before = splits(URLS)
    after = splits(URLS[::2] + [f"http://guide.example.internal/new-{i}.html" for i in range(300)])
    assert all(after[u] == before[u] for u in URLS[::2])


def test_share_of_test_documents_follows_the_fraction():
    result = splits(URLS, fraction=0.2)
    share = sum(side == "test" for side in result.values()) / len(result)
    assert 0.15 < share < 0.25


def test_seed_reshuffles_and_zero_fraction_means_no_test():
    assert splits(URLS, seed=0) != splits(URLS, seed=1)
    assert set(splits(URLS, fraction=0.0).values()) == {"train"}
    assert 0 <= position(URLS[0], 0) < 1


# -- through build: stability across re-crawls, stratification, the minimum train size -----------------------

import json  # noqa: E402

import pytest  # noqa: E402

from dataset_state import guide_pages, korean_paragraph, make_config, page, write_pages  # noqa: E402
from transforms.build import BuildError, build  # noqa: E402


def sides(version) -> dict[str, str]:
    return {m["url"]: m["split"] for m in map(json.loads, (version / "metadata.jsonl").read_text("utf-8").splitlines())}


def test_a_document_never_changes_sides_across_a_recrawl(tmp_path):
    pages = guide_pages(40)
    write_pages(tmp_path / "out", pages)
    config = make_config(tmp_path, "test_fraction: 0.3\ngranularity: section")
    before = sides(build(config).version_dir)
    changed = [page(p["url"].rsplit("/", 1)[1][:-5], p["text"] + f"\n\n## 추가\n\n{korean_paragraph(i + 500)}",
                    title=p["title"]) for i, p in enumerate(pages[::2])]
    added = guide_pages(30, prefix="new")
    write_pages(tmp_path / "out", changed + added)  # the odd pages are gone, the even ones changed
    after = sides(build(config).version_dir)
    assert all(after[url] == before[url] for url in after if url in before)
    assert {url for url in after if url in before} == {p["url"] for p in pages[::2]}


@pytest.mark.parametrize("stratify", ["none", "category"])
def test_stratified_split_gives_every_category_its_share_and_keeps_assignments(tmp_path, stratify):
    categories = {f"cat-{c}": guide_pages(10, category=f"cat-{c}", prefix=f"c{c}") for c in range(6)}
    write_pages(tmp_path / "out", [p for pages in categories.values() for p in pages])
    config = make_config(tmp_path, f"test_fraction: 0.2\nstratify: {stratify}")
    version = build(config).version_dir
    per_category = {}
    for meta in map(json.loads, (version / "metadata.jsonl").read_text("utf-8").splitlines()):
        per_category.setdefault(meta["category"], []).append(meta["split"])
    if stratify == "category":
        assert all(splits.count("test") == 2 for splits in per_category.values())
        first = sides(version)
        write_pages(tmp_path / "out", [p for pages in categories.values() for p in pages[3:]]
                    + guide_pages(5, category="cat-0", prefix="late"))
        again = sides(build(config).version_dir)
        assert all(again[url] == side for url, side in first.items() if url in again)
    else:  # the hash split only follows the fraction on average
        assert sum(splits.count("test") for splits in per_category.values()) > 0


def test_too_few_train_examples_build_a_version_with_a_warning(tmp_path):
    write_pages(tmp_path / "out", guide_pages(6))
    result = build(make_config(tmp_path, "test_fraction: 0.1"))
    n_train = result.manifest.counts["train"]
    warning = (f"the train split holds {n_train} examples, fewer than the 10 that fine-tuning with azure and "
               "openai requires (`finetune` refuses this version there); crawl more pages, raise "
               "dataset.questions_per_document, use granularity: section, or lower dataset.test_fraction")
    assert 0 < n_train < 10 and warning in result.warnings and warning in result.manifest.warnings
    assert (result.version_dir / "train.jsonl").read_text(encoding="utf-8").count("\n") == n_train

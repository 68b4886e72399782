"""Scaling experiments: `build --fraction` (a nested, deterministic subset by document that is the full build
restricted to its documents) and `finetune --compare-fractions` (one job per fraction at the fake, the models
scored side by side on the full version's test split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs import with_fraction
from base.state import state_path
from crawlers.store import PageStore
from dataset_state import guide_pages, make_config, page, write_pages
from finetune.state import FinetuneState
from pipeline import main
from test_finetune import Project, documents, fake  # noqa: F401  (shared fixture)
from transforms.build import build
from transforms.split import in_fraction


def examples(version: Path) -> dict[str, tuple[str, str]]:
    """example_id → (split, url) from the version's sidecar."""
    rows = [json.loads(line) for line in (version / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["example_id"]: (r["split"], r["url"]) for r in rows}


def document_urls(version: Path) -> set[str]:
    return {json.loads(line)["url"] for line in (version / "documents.jsonl").read_text(encoding="utf-8").splitlines()}


def lines(version: Path, split: str) -> set[str]:
    return set((version / f"{split}.jsonl").read_text(encoding="utf-8").splitlines())


@pytest.fixture
def config(tmp_path):
    write_pages(tmp_path / "out", guide_pages(40, "[온라인] 업무 가이드", "online") + guide_pages(20, "[배치] 운영", "batch"))
    return make_config(tmp_path, "test_fraction: 0.2")


def test_fraction_subsets_are_nested_and_are_the_full_build_restricted_to_their_documents(config, capsys):
    full = build(config).version_dir
    three_quarters = build(with_fraction(config, 0.75)).version_dir
    half = build(with_fraction(config, 0.5)).version_dir

    docs = {f: document_urls(v) for f, v in ((1, full), (0.75, three_quarters), (0.5, half))}
    assert docs[0.5] < docs[0.75] < docs[1]
    assert 0.3 < len(docs[0.5]) / len(docs[1]) < 0.7
    for fraction in (0.5, 0.75):
        assert docs[fraction] == {url for url in docs[1] if in_fraction(url, config.dataset.seed, fraction)}

    every = examples(full)
    for version in (three_quarters, half):
        mine = examples(version)
        restricted = {i: side for i, side in every.items() if side[1] in document_urls(version)}
        assert mine == restricted  # the same examples on the same sides: train inside train, test inside test
        assert lines(version, "train") < lines(full, "train") and lines(version, "test") <= lines(full, "test")
    assert set(examples(half).items()) < set(examples(three_quarters).items())

    manifest = json.loads((half / "manifest.json").read_text(encoding="utf-8"))
    outside = len(every) - len(examples(half))
    assert outside > 0 and manifest["counts"]["documents"] == len(docs[0.5])
    assert manifest["fraction"] == {"value": 0.5, "documents_kept": len(docs[0.5]), "examples_outside": outside}
    assert manifest["stages"]["fraction"] == {"in": len(every), "out": len(every) - outside, "dropped": {},
                                              "left_out": {"outside_fraction": outside}}
    # left out by design, not for a reviewer to act on: counted, never listed with the drops
    assert "outside_fraction" not in manifest["counts"]["dropped"]
    assert f"examples outside fraction 0.5</td><td class=\"n\">{outside:,}<" in (half / "report.html").read_text("utf-8")
    assert json.loads((full / "manifest.json").read_text(encoding="utf-8"))["fraction"] == {
        "value": 1.0, "documents_kept": len(docs[1]), "examples_outside": 0}


def test_a_fraction_built_twice_is_the_same_version_and_latest_stays_the_full_one(config, capsys):
    full = build(config).version_dir
    argv = ["build", "--fraction", "0.5", "--config", str(config.output_dir.parent / "config.yaml")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    kept = len(document_urls(full.parent / "v0002"))
    assert out.startswith(f"built guide v0002 (fraction 0.5): {kept} documents")
    outside = len(examples(full)) - len(examples(full.parent / "v0002"))
    assert f"\n  fraction 0.5: {kept} documents kept; {outside} examples of the other documents left out " \
           "(not in dropped.jsonl)\n" in out and "outside_fraction" not in out
    assert "a fraction version leaves `latest` as it is: fine-tune it with `python pipeline.py finetune " \
           "--dataset v0002`" in out
    first = (full.parent / "v0002" / "train.jsonl").read_bytes()

    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("unchanged guide v0002 (fraction 0.5): ")
    assert [v.name for v in sorted(full.parent.glob("v*"))] == ["v0001", "v0002"]
    assert (full.parent / "latest").resolve() == full
    assert (full.parent / "v0002" / "train.jsonl").read_bytes() == first
    assert build(config).unchanged  # the full build is still compared with `latest`


def test_an_answer_the_full_build_drops_as_a_duplicate_stays_out_of_the_fraction(tmp_path):
    """Dedup sees every document before the subset is taken: a page of the fraction whose answer repeats an
    earlier page outside it is dropped there too, so the fraction's train split stays inside the full one's."""
    seed, pairs = 0, []
    for i in range(200):
        first, second = f"http://guide.example.internal/dup-a-{i:03d}.html", f"http://guide.example.internal/dup-b-{i:03d}.html"
        if not in_fraction(first, seed, 0.5) and in_fraction(second, seed, 0.5):
            pairs.append(i)
        if len(pairs) == 3:
            break
    assert len(pairs) == 3
    text = "# 같은 안내\n\n" + "배치 작업을 등록하고 재시도 정책을 확인한 뒤 운영 화면에서 결과를 점검합니다. " * 4
    twins = [page(f"dup-{side}-{i:03d}", text, title=f"같은 안내 {side}{i}") for i in pairs for side in "ab"]
    write_pages(tmp_path / "out", guide_pages(40) + twins)
    config = make_config(tmp_path, "test_fraction: 0.2")

    full, half = build(config).version_dir, build(with_fraction(config, 0.5)).version_dir
    dropped = [json.loads(line) for line in (full / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    kept_out = {d["url"] for d in dropped if d["reason"] == "duplicate_exact"}
    seconds = {f"http://guide.example.internal/dup-b-{i:03d}.html" for i in pairs}
    assert seconds <= kept_out and seconds <= document_urls(half)  # their documents are in the fraction…
    half_dropped = [json.loads(line) for line in (half / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert half_dropped == dropped  # the real drops, the same as the full build's; none for being outside
    assert not {url for _, url in examples(half).values()} & seconds  # …their answers are not
    assert set(examples(half).items()) <= set(examples(full).items())


def test_with_stratified_splits_the_build_order_does_not_change_any_side(tmp_path):
    sides = []
    for order in ((1, 0.5), (0.5, 1)):
        root = tmp_path / f"order-{order[0]}"
        write_pages(root / "out", guide_pages(40, "[온라인] 업무 가이드", "online") + guide_pages(12, "[배치] 운영", "batch"))
        config = make_config(root, "test_fraction: 0.25\nstratify: category")
        built = {f: build(with_fraction(config, f)).version_dir for f in order}
        sides.append({f: examples(v) for f, v in built.items()})
    assert sides[0] == sides[1]
    half, full = sides[0][0.5], sides[0][1]
    assert set(half.items()) < set(full.items())


@pytest.mark.parametrize("argv, message", [
    (["build", "--fraction", "0"], "error: --fraction 0: a fraction is a share of the documents, more than 0 and at "
                                   "most 1, e.g. 0.5\n"),
    (["build", "--fraction", "1.5"], "error: --fraction 1.5: a fraction is a share"),
    (["build", "--fraction", "half"], "error: --fraction half: a fraction is a share"),
    (["finetune", "--compare-fractions", "0.5,-1"], "error: --compare-fractions -1: a fraction is a share"),
    (["finetune", "--compare-fractions", "0.5"], "error: --compare-fractions needs at least two different "
                                                 "fractions, got 1; e.g. --compare-fractions 0.5,1\n"),
    (["finetune", "--compare-fractions", "0.5,1", "--dataset", "v0001"],
     "error: --compare-fractions builds the versions it compares; leave out --dataset\n"),
])
def test_bad_fractions_are_one_line_errors(config, capsys, argv, message):
    assert main([*argv, "--config", str(config.output_dir.parent / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (config.output_dir / "datasets").exists()


# --------------------------------------------------------------------------------------------------
# finetune --compare-fractions


@pytest.fixture
def experiment(tmp_path, fake, monkeypatch) -> Project:  # noqa: F811
    """40 stored documents, a config pointing at the fake, no dataset built yet."""
    monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
    p = Project(tmp_path, tmp_path / "config.yaml", fake)
    p.write_config()
    with PageStore(state_path(tmp_path / "out")) as store:
        for doc in documents(40):
            store.save_document(doc, status=200, etag=None, last_modified=None)
    return p


def test_compare_fractions_launches_one_job_per_fraction_then_waits_and_scores_them_side_by_side(experiment,
                                                                                                   capsys):
    fake = experiment.fake
    assert experiment.run("finetune", "--compare-fractions", "1,0.5") == 0
    out = capsys.readouterr().out
    root = experiment.root / "out" / "datasets" / "guide"
    half, full = root / "v0001", root / "v0002"  # the full version last: it stays `latest`
    assert (root / "latest").resolve() == full
    assert f"built guide v0001 (fraction 0.5): {len(document_urls(half))} documents" in out

    jobs = list(fake.jobs.values())
    assert len(jobs) == 2
    for job, version, fraction in zip(jobs, (half, full), ("0.5", None)):
        assert fake.file_bytes(job.training_file) == (version / "train.jsonl").read_bytes()
        assert fake.file_bytes(job.validation_file) == (version / "test.jsonl").read_bytes()
        assert job.metadata.get("dataset_fraction") == fraction and job.metadata["dataset_version"] == version.name
    assert (f"comparison 1: fraction 0.5 → job {jobs[0].id} (v0001) · fraction 1 → job {jobs[1].id} (v0002); "
            "scored on the test split of guide v0002") in out
    rerun = (f"  once every job succeeded, compare them: python pipeline.py finetune --compare-fractions 0.5,1 "
             f"--wait --config {experiment.config} (starts nothing new: it finds these versions and jobs)")
    assert rerun in out
    with FinetuneState(experiment.root / "out") as state:
        (comparison,) = state.comparisons()
    assert comparison.evaluate_on == str(full) and [m["fraction"] for m in comparison.members] == [0.5, 1.0]

    assert experiment.run("jobs", "show", jobs[0].id) == 0
    assert rerun in capsys.readouterr().out

    assert experiment.run("finetune", "--compare-fractions", "0.5,1", "--wait") == 0
    out = capsys.readouterr().out
    assert len(fake.jobs) == 2 and len(fake.find_requests("POST", "/v1/files")) == 4  # nothing new was started
    assert "unchanged guide v0001 (fraction 0.5)" in out and "unchanged guide v0002" in out
    assert [v.name for v in sorted(root.glob("v*"))] == ["v0001", "v0002"]
    questions = len((full / "test.jsonl").read_text(encoding="utf-8").splitlines())
    asked = fake.find_requests("POST", "/v1/chat/completions")
    assert len(asked) == 2 * questions
    assert {r.body["model"] for r in asked} == {j.fine_tuned_model for j in jobs}
    assert f"evaluated {questions} questions; mean score (token F1 against the reference answer):" in out
    assert any(line.strip().startswith(f"fraction 0.5: {jobs[0].fine_tuned_model}") for line in out.splitlines())
    assert any(line.strip().startswith(f"fraction 1: {jobs[1].fine_tuned_model}") for line in out.splitlines())
    report = Path(out.split("  report: ")[1].splitlines()[0])
    assert report.is_file() and report.is_relative_to(full / "evaluations")
    rows = [json.loads(line) for line in (report.parent / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["question"] for r in rows] == [json.loads(line)["messages"][1]["content"]
                                            for line in (full / "test.jsonl").read_text(encoding="utf-8").splitlines()]

    command = (f"  compare them: python pipeline.py evaluate --model {jobs[0].fine_tuned_model} --model "
               f"{jobs[1].fine_tuned_model} --dataset v0002 --config {experiment.config}")
    assert experiment.run("jobs", "show", jobs[1].id) == 0
    assert command in capsys.readouterr().out
    assert experiment.run("finetune", "--compare-fractions", "0.5,1") == 0  # without --wait, now that they exist
    assert command in capsys.readouterr().out.splitlines()
    assert len(fake.jobs) == 2
    assert main(command.split()[4:]) == 0  # the printed command runs as printed
    assert f"evaluated {questions} questions" in capsys.readouterr().out

"""review.csv out, decisions back in (honoured by every later build, also after a re-crawl), approvals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dataset_state import guide_pages, make_config, page, write_pages
from pipeline import main
from transforms.build import build
from transforms.approval import NotApproved, check_approval, is_approved


@pytest.fixture
def built(tmp_path):
    write_pages(tmp_path / "out", guide_pages(16))
    config = make_config(tmp_path, "test_fraction: 0.2")
    return config, build(config)


def sheet(version) -> pd.DataFrame:
    return pd.read_csv(version / "review.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")


def test_review_csv_has_one_row_per_example_with_an_empty_decision(built):
    config, result = built
    frame = sheet(result.version_dir)
    assert list(frame.columns) == ["example_id", "split", "category", "url", "title", "section", "tokens",
                                   "question", "answer_excerpt", "decision"]
    metadata = [json.loads(l) for l in (result.version_dir / "metadata.jsonl").read_text("utf-8").splitlines()]
    assert frame["example_id"].tolist() == [m["example_id"] for m in metadata]
    assert frame["split"].tolist() == [m["split"] for m in metadata]
    assert frame["tokens"].astype(int).tolist() == [m["tokens"] for m in metadata]
    assert set(frame["decision"]) == {""}
    assert (result.version_dir / "review.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8


def test_decisions_are_honoured_by_later_builds_also_after_a_recrawl(built, tmp_path, capsys):
    config, result = built
    frame = sheet(result.version_dir)
    excluded, edited = frame["example_id"][0], frame["example_id"][1]
    edited_url = frame["url"][1]
    frame.loc[0, "decision"] = "exclude"
    frame.loc[1, "decision"] = "검토한 답변입니다. 문의는 admin@corp.example.com 으로 하십시오."
    filled = tmp_path / "reviewed.csv"
    frame.to_csv(filled, index=False, encoding="utf-8-sig")
    assert main(["review", "apply", str(filled), "--config", str(tmp_path / "config.yaml")]) == 0
    assert "1 excluded, 1 edited" in capsys.readouterr().out

    def check(version_dir):
        manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
        assert manifest["counts"]["review"] == {"excluded": 1, "edited": 1}
        ids = [json.loads(l)["example_id"] for l in (version_dir / "metadata.jsonl").read_text("utf-8").splitlines()]
        assert excluded not in ids and edited in ids
        lines = (version_dir / "train.jsonl").read_text("utf-8") + (version_dir / "test.jsonl").read_text("utf-8")
        assert "검토한 답변입니다. 문의는 [EMAIL] 으로 하십시오." in lines  # edits are redacted too
        meta = next(json.loads(l) for l in (version_dir / "metadata.jsonl").read_text("utf-8").splitlines()
                    if json.loads(l)["example_id"] == edited)
        assert meta["review"] == "edited"

    second = build(config)
    check(second.version_dir)
    # a re-crawl: every page's text changes and a page is added; decisions still apply by example_id
    pages = [page(p["url"].rsplit("/", 1)[1][:-5], p["text"] + "\n\n바뀐 문장입니다.", title=p["title"])
             for p in guide_pages(16)] + guide_pages(2, prefix="new")
    write_pages(tmp_path / "out", pages)
    third = build(config)
    assert third.version_dir.name == "v0003"
    check(third.version_dir)
    assert any(edited_url in l for l in (third.version_dir / "metadata.jsonl").read_text("utf-8").splitlines())


def test_keep_clears_an_earlier_decision(built, tmp_path):
    config, result = built
    frame = sheet(result.version_dir)
    frame.loc[0, "decision"] = "exclude"
    frame.to_csv(tmp_path / "r1.csv", index=False)
    frame.loc[0, "decision"] = "keep"
    frame.to_csv(tmp_path / "r2.csv", index=False)
    assert main(["review", "apply", str(tmp_path / "r1.csv"), "--config", str(tmp_path / "config.yaml")]) == 0
    assert main(["review", "apply", str(tmp_path / "r2.csv"), "--config", str(tmp_path / "config.yaml")]) == 0
    assert build(config).unchanged


def test_a_mistyped_decision_is_refused_with_its_row(built, tmp_path, capsys):
    config, result = built
    frame = sheet(result.version_dir)
    frame.loc[2, "decision"] = "exlude"
    frame.to_csv(tmp_path / "typo.csv", index=False)
    assert main(["review", "apply", str(tmp_path / "typo.csv"), "--config", str(tmp_path / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 4: 'exlude'" in err and "exclude" in err


def test_approve_marks_a_version_and_a_changed_version_is_not_approved(built, tmp_path, capsys):
    config, result = built
    gated = config.model_copy(update={"finetune": config.finetune.model_copy(update={"require_approval": True})})
    assert not is_approved(config, "v0001")
    with pytest.raises(NotApproved, match="python pipeline.py approve v0001"):
        check_approval(gated, "latest")
    assert main(["approve", "v0001", "--config", str(tmp_path / "config.yaml")]) == 0
    assert "approved guide v0001" in capsys.readouterr().out
    assert is_approved(config, "v0001") and is_approved(config, "latest")
    assert check_approval(gated) == result.version_dir
    assert json.loads((result.version_dir / "approval.json").read_text("utf-8"))["version"] == "v0001"
    manifest = result.version_dir / "manifest.json"
    manifest.write_text(manifest.read_text("utf-8").replace('"test_fraction": 0.2', '"test_fraction": 0.3'), "utf-8")
    assert not is_approved(config, "v0001")


def test_approving_a_missing_version_says_what_to_do(built, tmp_path, capsys):
    assert main(["approve", "v0042", "--config", str(tmp_path / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "no dataset version 'v0042'" in err and "python pipeline.py build" in err

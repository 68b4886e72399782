"""`evaluate --set/--rag`, `index` and `ask`: question sets, chrF, the judge and its cache, BM25 retrieval and its
exact recall@k, the four columns side by side, against the fake server (base model answers from the context
it is given, the tuned one from its training data)."""

from __future__ import annotations

import json

import pytest

from fake_openai import JUDGE_MODEL
from finetune import retrieval
from finetune.judge import parse_grade
from finetune.scores import bootstrap_interval, chrf, declines
from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)


def change_first_answer(version) -> str:
    """Append a sentence to the first train example's answer, as a rebuild that changed one section would."""
    train = version / "train.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["messages"][-1]["content"] += " 변경된 문장입니다."
    train.write_text("\n".join([json.dumps(first, ensure_ascii=False), *lines[1:]]) + "\n", encoding="utf-8")
    return first["messages"][-1]["content"]


def write_recall_set(version) -> list[dict]:
    """One paraphrase per trained document, as the generation stage writes eval_recall.jsonl (each line with its
    `metadata`), written by hand here."""
    meta = [json.loads(l) for l in (version / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    train = (version / "train.jsonl").read_text(encoding="utf-8").splitlines()
    records = []
    for row in (m for m in meta if m["split"] == "train"):
        messages = json.loads(train[row["line"] - 1])["messages"]
        asked = messages[1]["content"].replace("알려줘", "설명해줘")
        records.append({"messages": [messages[0], {"role": "user", "content": asked}, messages[2]],
                        "metadata": {"url": row["url"], "section": row["section"], "generated": {"style": "factual"},
                                     "category": row["category"]}})
    (version / "eval_recall.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return records


def test_chrf_sees_through_korean_particles_where_token_f1_does_not():
    from finetune.scores import token_f1

    assert token_f1("설정을 저장합니다", "설정은 저장됩니다") == 0.0
    assert 0.1 < chrf("설정을 저장합니다", "설정은 저장됩니다") < 1.0
    assert chrf("같은 문장", "같은 문장") == 1.0
    assert declines("I'm not sure about that.") and declines("문서에 나와 있지 않습니다") and not declines("저장하세요")
    low, high = bootstrap_interval([0.0, 1.0] * 20)
    assert low < 0.5 < high and bootstrap_interval([0.5] * 5) == (0.5, 0.5)


def test_judge_replies_are_parsed_leniently():
    assert parse_grade('Sure.\n```json\n{"grade": "Partly_Correct", "reason": "misses  the\nport"}\n```') \
        .__dict__ == {"grade": "partly correct", "reason": "misses the port", "cached": False}
    assert parse_grade('{"reason": "ok", "grade": "rightly declined"} trailing {').grade == "rightly declined"
    assert parse_grade("{not json} then {\"grade\": \"incorrect\"}").grade == "wrong"
    bad = parse_grade("I think it is fine")
    assert bad.grade is None and bad.score is None and "held no grade" in bad.reason


def test_recall_at_k_is_exact_on_known_source_sections():
    sections = [retrieval.Section(f"u{i}#", f"u{i}", f"t{i}", None, text) for i, text in enumerate([
        "배치 작업 등록 방법", "모니터링 경보 확인", "배치 작업 재시도 정책", "사용자 권한 요청"])]
    index = retrieval.build_in_memory(sections, "bigram")
    found = [[s.id for s in hits] for hits in index.search_many(["배치 작업 등록", "경보 확인", "재시도 정책",
                                                                  "권한 요청"], 2)]
    assert found == [["u0#", "u2#"], ["u1#"], ["u2#"], ["u3#"]]  # a section sharing no token is not retrieved
    sources = ["u2#", "u1#", "u0#", "u3#"]
    assert retrieval.recall_at_k(found, sources, 1) == 0.5  # u2 is second for the first question; u0 never found
    assert retrieval.recall_at_k(found, sources, 2) == 0.75
    assert retrieval.recall_at_k([], [], 5) == 0.0
    assert retrieval.bigram_tokens("설정은 HTTP") == ["설정", "정은", "http"]


def test_index_tokenizes_only_changed_sections(project, capsys):  # noqa: F811
    assert project.run("index") == 0
    out = capsys.readouterr().out
    sections = retrieval.version_sections(retrieval.DatasetVersion(dir=project.version))
    assert f"indexed {len(sections)} sections of guide v0001 (bigram tokens; {len(sections)} tokenized, 0 " \
           "unchanged)" in out
    assert project.run("index") == 0
    assert f"0 tokenized, {len(sections)} unchanged" in capsys.readouterr().out
    change_first_answer(project.version)
    assert project.run("index") == 0
    assert f"1 tokenized, {len(sections) - 1} unchanged" in capsys.readouterr().out


def test_four_columns_with_rag_judge_and_cache(project, capsys):  # noqa: F811
    project.write_config(finetune=f"  evaluation:\n    judge: {{model: {JUDGE_MODEL}}}\n")
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    records = write_recall_set(project.version)
    assert project.run("index") == 0
    capsys.readouterr()

    assert project.run("evaluate", "--model", model, "--set", "all", "--rag", "--k", "3") == 0
    out = capsys.readouterr().out
    folder = next((project.version / "evaluations").glob("*sets-heldout-recall-refusal--rag-k3"))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["headline"] == "judge" and summary["columns"] == ["base", "base+RAG", "tuned", "tuned+RAG"]
    recall = summary["sets"]["recall"]
    means = {c: v["headline"]["mean"] for c, v in recall["columns"].items()}
    assert recall["questions"] == len(records)
    assert means["base"] == 0.0 < means["base+RAG"] and means["tuned"] == 1.0  # RAG helps the base model
    assert recall["recall_at_k"] == {"k": 3, "value": 1.0, "questions": len(records)}
    assert recall["columns"]["base"]["grades"] == {"wrong": len(records)}
    refusal = summary["sets"]["refusal"]["columns"]
    assert refusal["base"]["grades"] == {"rightly declined": 5}  # the fake base model always declines
    assert "headline: judge score" in out and "On this site, on the heldout set" in out

    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    judged = [r for r in chats if r.body["model"] == JUDGE_MODEL]
    asked = [r for r in chats if r.body["model"] != JUDGE_MODEL]
    n = sum(summary["sets"][s]["questions"] for s in summary["sets"])
    assert len(asked) == 4 * n
    answers = {(r["question"], r["reference"], a["text"]) for r in rows for a in r["answers"].values()}
    assert len(judged) == len(answers)  # each distinct answer graded once
    rag = next(r for r in asked if any(m["role"] == "system" and "<source" in m["content"]
                                       for m in r.body["messages"]))
    assert rag.body["messages"][-1]["role"] == "user"
    assert "<reference>" in judged[0].body["messages"][0]["content"]

    assert {r["set"] for r in rows} == {"heldout", "recall", "refusal"}
    assert all(set(r["answers"]) == {"base", "base+RAG", "tuned", "tuned+RAG"} for r in rows)
    assert all(a["grade"] and a["reason"] for r in rows for a in r["answers"].values())
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<script" not in page and "<svg" in page
    assert "recall@3" in page and "rightly declined" in page

    assert project.run("evaluate", "--model", model, "--set", "all", "--rag", "--k", "3") == 0
    assert "0 judge requests" in capsys.readouterr().out
    again = [r for r in project.fake.find_requests("POST", "/v1/chat/completions") if r.body["model"] == JUDGE_MODEL]
    assert len(again) == len(judged)  # every grade came from the state


def test_a_template_only_version_says_it_has_no_recall_set(project, capsys):  # noqa: F811
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--set", "recall") == 1
    assert ("has no recall set (template-only: no eval_recall.jsonl); run the generation stage"
            in capsys.readouterr().err)
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--set", "all") == 0
    out = capsys.readouterr().out
    assert "note: guide v0001 has no recall set" in out and "heldout, refusal" in out
    assert "headline: chrF" in out


def test_rag_without_an_index_and_bad_flags_are_one_line(project, capsys):  # noqa: F811
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--rag") == 1
    assert "has no bigram retrieval index: run python pipeline.py index --dataset v0001" in capsys.readouterr().err
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--rag", "--k", "0") == 1
    assert "--k 0: give 1 to 50 sections" in capsys.readouterr().err
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--save-dataset", "guide") == 1
    assert "--save-dataset guide: that is the name `build` writes" in capsys.readouterr().err
    assert project.run("evaluate", "--model", "gpt-4o-mini", "--questions", "all") == 1
    assert "add --save-dataset NAME" in capsys.readouterr().err
    assert project.fake.find_requests("POST", "/v1/chat/completions") == []


def test_ask_answers_with_the_sources_it_used(project, capsys):  # noqa: F811
    assert project.run("index") == 0
    capsys.readouterr()
    assert project.run("ask", "주제 3 안내 관련 내용을 설명해줘", "--rag", "--k", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# 주제 3 안내"
    assert any(line.startswith("  [1] 주제 3 안내 — http://guide.example.internal/topic-03.html") for line in out)
    assert project.run("ask", "주제 3 안내 관련 내용을 설명해줘") == 0
    assert "not sure" in capsys.readouterr().out


def test_the_report_escapes_questions_answers_and_judge_reasons(tmp_path):
    from configs import EvaluationConfig
    from finetune import scorecard
    from test_evaluate import StubBackend, write_dataset

    hostile = '<script>alert("q")</script><img src=x onerror=alert(1)>'
    ds = write_dataset(tmp_path, [(hostile, 'reference </td></tr><script>alert("r")</script>')])

    class HostileJudge:
        requests = 0

        def key(self, *texts):
            return "k"

        def grade(self, *texts):
            from finetune.judge import Grade

            return Grade("wrong", '<img src=x onerror=alert("reason")>')

    backend = StubBackend({"tuned": '<a href="javascript:alert(1)">tuned</a>', "base": "<em>base</em>"})
    card = scorecard.run(backend, ds, {"base": "base", "tuned": "tuned"}, ["heldout"], EvaluationConfig(),
                         judge=HostileJudge())
    page = card.html.read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page and "<a href" not in page and "<em>" not in page
    assert "&lt;a href=&quot;javascript:alert(1)&quot;&gt;" in page
    assert "&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt;" in page and "&lt;img src=x onerror" in page
    assert "default-src 'none'" in page and page.count("<svg") == 2


def test_a_judge_on_its_own_endpoint_reads_its_key_from_the_named_variable(project, capsys, monkeypatch):  # noqa: F811
    from fake_openai import FakeOpenAI

    with FakeOpenAI(api_key="sk-judge-0000000000000000000000000000000000000000") as judge_server:
        monkeypatch.setenv("JUDGE_KEY", judge_server.api_key)
        project.write_config(finetune=f"  evaluation:\n    judge: {{model: {JUDGE_MODEL}, base_url: "
                             f"{judge_server.base_url}, api_key_env: JUDGE_KEY}}\n")
        assert project.run("evaluate", "--model", "gpt-4o-mini", "--set", "heldout") == 0
        out = capsys.readouterr().out
        judged = judge_server.find_requests("POST", "/v1/chat/completions")
        assert judged and {r.body["model"] for r in judged} == {JUDGE_MODEL}
        assert all(r.status == 200 for r in judged)
        assert not [r for r in project.fake.find_requests("POST", "/v1/chat/completions")
                    if r.body["model"] == JUDGE_MODEL]
        assert judge_server.api_key not in out and "headline: judge score" in out
        monkeypatch.delenv("JUDGE_KEY")
        project.write_config(finetune=f"  evaluation:\n    judge: {{model: {JUDGE_MODEL}, base_url: "
                             f"{judge_server.base_url}, api_key_env: JUDGE_KEY}}\n")
        assert project.run("evaluate", "--model", "gpt-4o-mini", "--set", "heldout") == 1
        assert "no API key for the judge: set JUDGE_KEY in the environment" in capsys.readouterr().err


def test_the_verdict_is_written_from_the_numbers():
    from finetune.scorecard import summarise

    def row(i, scores):
        return {"set": "recall", "category": "c", "source_id": f"u{i}#", "retrieved": [f"u{i}#"],
                "answers": {c: {"chrf": s, "token_f1": s, "seconds": 0.1, "prompt_tokens": 10,
                                "completion_tokens": 5, "cost_usd": None} for c, s in scores.items()}}

    rows = [row(i, {"base+RAG": 0.5, "tuned+RAG": 0.9}) for i in range(30)]
    summary = summarise(rows, ["base+RAG", "tuned+RAG"], ["recall"], "chrf", 5)
    assert summary["verdict"] == ("On this site, on the recall set (30 questions) tuned+RAG 90 %, base+RAG 50 % by "
                                  "chrF (tuned+RAG ahead beyond the 95 % intervals); retrieval found the source "
                                  "section in the top 5 for 100 %.")
    mixed = [row(i, {"base+RAG": float(i % 2), "tuned+RAG": float(i % 3 > 0)}) for i in range(12)]
    assert "intervals overlap, not a clear difference" in summarise(mixed, ["base+RAG", "tuned+RAG"], ["recall"],
                                                                     "chrf", 5)["verdict"]

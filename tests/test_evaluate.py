"""`evaluate`: base vs tuned on the test split, the similarity score, the JSONL and the escaped HTML report.

StubBackend and write_dataset are shared with the other test_evaluate_* modules.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fake_openai import BASE_MODEL_REPLY
from finetune.backend import ApiError, Backend, ChatReply
from configs import EvaluationConfig, SamplingConfig
from finetune.evaluate import compare_models, similarity
from transforms.version import DatasetVersion
from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)


def test_similarity_is_token_f1_against_the_reference():
    assert similarity("HTTP 채널은 요청/응답 방식입니다.", "HTTP 채널은 요청/응답 방식입니다.") == 1.0
    assert similarity("완전히 다른 말", "HTTP 채널") == 0.0
    assert similarity("", "") == 1.0 and similarity("", "answer") == 0.0
    assert similarity("a b c d", "a b x y") == pytest.approx(0.5)
    assert similarity("Retry POLICY", "retry policy") == 1.0


def test_evaluate_asks_both_models_every_test_question_and_writes_jsonl_and_html(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    capsys.readouterr()

    assert project.run("evaluate", "--model", model) == 0
    out = capsys.readouterr().out
    test_lines = (project.version / "test.jsonl").read_text(encoding="utf-8").splitlines()
    folder = project.version / "evaluations" / f"{model.replace(':', '_')}--vs--gpt-4o-mini-2024-07-18"
    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(test_lines)

    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    assert len(chats) == 2 * len(test_lines)
    assert {r.body["model"] for r in chats} == {model, "gpt-4o-mini-2024-07-18"}  # base from the ft: name
    assert all(r.body["temperature"] == 0 for r in chats)
    first = json.loads(test_lines[0])["messages"]
    assert rows[0]["question"] == first[1]["content"] and rows[0]["reference"] == first[-1]["content"]
    assert rows[0]["url"].startswith("http://guide.example.internal/topic-") and rows[0]["title"]
    sent = next(r.body["messages"] for r in chats if r.body["messages"][-1]["content"] == rows[0]["question"])
    assert sent == first[:-1]  # system + user, never the reference answer

    assert all(r["answers"]["base"]["text"] == BASE_MODEL_REPLY for r in rows)
    assert all(r["answers"]["base"]["score"] == 0.0 for r in rows)
    tuned_mean = sum(r["answers"]["tuned"]["score"] for r in rows) / len(rows)
    assert tuned_mean > 0.3  # the fake's tuned model answers from what it learned of these pages
    width = len(f"tuned: {model}")
    assert (f"evaluated {len(rows)} questions; mean score (token F1 against the reference answer, 0–1):\n"
            f"  {'base: gpt-4o-mini-2024-07-18':<{width}}  0.000\n"
            f"  tuned: {model}  {tuned_mean:.3f}  ← best\n") in out
    assert f"report: {folder / 'report.html'}" in out

    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<script" not in page and "src=" not in page
    assert f"{tuned_mean:.3f}" in page and "guide v0001" in page
    assert page.count("<tr><td>") == len(rows) + 2  # two rows of means, one row per question


def test_evaluate_defaults_to_the_dataset_of_the_models_job_and_takes_base_and_dataset(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    assert project.run("evaluate", "--model", model, "--base", "gpt-4.1-mini", "--dataset", "v0001") == 0
    assert {r.body["model"] for r in project.fake.find_requests("POST", "/v1/chat/completions")} == {
        model, "gpt-4.1-mini"}


def test_evaluating_a_deleted_model_is_one_line_with_the_apis_message(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    assert project.run("models", "delete", model) == 0
    capsys.readouterr()
    assert project.run("evaluate", "--model", model) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"The model `{model}` does not exist or you do not have access to it." in err


class StubBackend(Backend):
    """Answers with fixed texts per model (a list: one per choice, `sampling.n` of them taken in turn), records the
    sampling settings it was asked with and how many requests were in flight at once."""

    name = scope = "stub"

    def __init__(self, answers: dict[str, str | list[str]], delay: float = 0.0, fail_on: str | None = None):
        self.answers, self.delay, self.fail_on = answers, delay, fail_on
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.calls = 0
        self.samplings: list[SamplingConfig] = []

    def chat(self, model, messages, *, sampling):
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.samplings.append(sampling)
        try:
            time.sleep(self.delay)
            if self.fail_on and self.fail_on in messages[-1]["content"]:
                raise ApiError("asking failed (HTTP 404): gone", status=404)
            texts = self.answers[model] if isinstance(self.answers[model], list) else [self.answers[model]]
            return [ChatReply(texts[i % len(texts)], "stop") for i in range(sampling.n)]
        finally:
            with self.lock:
                self.in_flight -= 1

    # the rest of the interface is not used by evaluate
    upload_file = get_file = create_job = get_job = list_events = cancel_job = pause_job = resume_job = None
    list_checkpoints = download_result = delete_model = None


def write_dataset(root: Path, rows: list[tuple[str, str]]) -> DatasetVersion:
    version = root / "datasets" / "guide" / "v0001"
    version.mkdir(parents=True)
    with open(version / "test.jsonl", "w", encoding="utf-8") as f:
        for question, answer in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
    (version / "train.jsonl").write_text("", encoding="utf-8")
    return DatasetVersion(dir=version)


def test_report_escapes_crawled_text_and_model_answers(tmp_path):
    hostile = '<script>alert("q")</script><img src=x onerror=alert(1)>'
    ds = write_dataset(tmp_path, [(hostile, 'reference </td></tr><script>alert("r")</script>')])
    backend = StubBackend({"tuned": '<a href="javascript:alert(1)">tuned</a>', "base": "&lt;base&gt; & more"})
    ev = compare_models(backend, ds, {"base": "base", "tuned": "tuned"})
    page = ev.html.read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page and "<a " not in page and "</td></tr><script" not in page
    assert "&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt;" in page
    assert "&amp;lt;base&amp;gt; &amp; more" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert json.loads(ev.jsonl.read_text(encoding="utf-8"))["question"] == hostile  # JSONL keeps the raw text


def test_requests_are_bounded_by_the_concurrency_and_sent_with_the_configured_sampling(tmp_path):
    ds = write_dataset(tmp_path, [(f"question {i}", f"answer {i}") for i in range(12)])
    backend = StubBackend({"tuned": "answer", "base": "other"}, delay=0.02)
    settings = EvaluationConfig(concurrency=3, temperature=0.7, presence_penalty=-1.5, max_examples=10)
    ev = compare_models(backend, ds, {"base": "base", "tuned": "tuned"}, settings)
    assert backend.calls == 20 and len(ev.rows) == 10
    assert 1 < backend.most_in_flight <= 3
    assert set(backend.samplings) == {SamplingConfig(temperature=0.7, presence_penalty=-1.5)}
    assert ev.mean("tuned") == pytest.approx(2 / 3, abs=1e-4) and ev.mean("base") == 0.0


def test_the_first_failed_request_stops_the_evaluation(tmp_path):
    ds = write_dataset(tmp_path, [(f"question {i}", f"answer {i}") for i in range(30)])
    backend = StubBackend({"tuned": "answer", "base": "other"}, delay=0.01, fail_on="question 3")
    with pytest.raises(ApiError, match="gone"):
        compare_models(backend, ds, ["base", "tuned"], EvaluationConfig(concurrency=2))
    assert backend.calls < 60
    assert not (ds.dir / "evaluations").exists()


def test_an_empty_test_split_is_refused_with_what_to_change(tmp_path):
    from finetune.backend import Refused

    ds = write_dataset(tmp_path, [])
    with pytest.raises(Refused, match="the test split of guide v0001 is empty: nothing to evaluate; raise "
                                      "dataset.test_fraction"):
        compare_models(StubBackend({}), ds, ["tuned"])

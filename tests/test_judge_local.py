"""The judge with `provider: local`: a model on this machine grades through the local backend, offline. A tiny
model with random weights writes no grade, so what is tested is what the code does with that: the grade is
recorded as missing with the reply's start as its reason, nothing is cached, the next run asks again, the
report counts the answers as ungraded, and `max_tokens` caps the judge's reply."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch", reason="the local backend's packages are not installed (pip install -e '.[local]')")

from configs import FinetuneConfig, JudgeConfig  # noqa: E402
from finetune.judge import Judge, judge_backend  # noqa: E402
from finetune.local.backend import LocalBackend  # noqa: E402
from test_local_backend import SPECIAL, offline_hub, project, tiny_model  # noqa: E402,F401  (shared fixtures)

GRADED = ("작업은 어떻게 등록하나요?", "관리 화면에서 작업을 선택하고 저장합니다.", "## 설정 1\n작업 등록 방법", "저장 버튼을 누릅니다.")


@pytest.fixture(scope="session")
def babbling_model(tiny_model, tmp_path_factory):  # noqa: F811
    """The tiny model, told never to write a special token: its greedy reply is text (garbage), not empty."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("babbling") / "model"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    config["suppress_tokens"] = tokenizer.convert_tokens_to_ids(SPECIAL)
    (folder / "generation_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_local_judge_beside_openai_models_records_a_reply_with_no_grade(tmp_path, babbling_model):
    judge_config = JudgeConfig(provider="local", model=str(babbling_model), max_tokens=12)
    backend = judge_backend(judge_config, FinetuneConfig(), tmp_path, default=None)  # the models asked: OpenAI's
    assert isinstance(backend, LocalBackend)
    asked = []
    chat = backend.chat
    backend.chat = lambda model, messages, *, sampling: asked.append(sampling) or chat(model, messages,
                                                                                       sampling=sampling)
    judge = Judge(backend, judge_config.model, tmp_path, max_tokens=judge_config.max_tokens)

    grade = judge.grade(*GRADED)
    assert grade.grade is None and grade.score is None and not grade.cached
    assert grade.reason.startswith("the judge's reply held no grade: ") and len(grade.reason) > 40  # its start
    assert [(s.temperature, s.max_tokens) for s in asked] == [(0, 12)]  # greedy, and capped
    assert judge.cached(judge.key(*GRADED)) is None  # a reply with no grade is not kept
    again = judge.grade(*GRADED)
    assert judge.requests == 2 and again == grade  # so it is asked again, and greedy decoding repeats itself


def test_evaluate_with_a_local_judge_counts_its_ungraded_answers_and_asks_again(project, tiny_model, capsys):  # noqa: F811
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(text.replace("concurrency: 2}", f"concurrency: 2, judge: {{provider: local, model: "
                                           f"{tiny_model}, max_tokens: 8}}}}"), encoding="utf-8")
    assert project.run("evaluate", "--model", str(tiny_model), "--set", "heldout") == 0
    out = capsys.readouterr().out
    folder = next((project.version / "evaluations").glob("*--sets-heldout"))
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = [a for r in rows for a in r["answers"].values()]
    distinct = len({(r["question"], r["reference"], a["text"]) for r in rows for a in r["answers"].values()})
    assert f"{distinct} judge requests" in out and f"{len(answers)} answers ungraded" in out
    # the random tiny model answers with special tokens only, which decode to nothing: so does its grade
    assert all(a["grade"] is None and a["judged"] is None and a["reason"] == "the judge's reply was empty"
               for a in answers)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    heldout = summary["sets"]["heldout"]["columns"]
    assert summary["headline"] == "judge" and {c["headline"]["mean"] for c in heldout.values()} == {None}
    assert "No answers were scored." in out

    assert project.run("evaluate", "--model", str(tiny_model), "--set", "heldout") == 0
    assert f"{distinct} judge requests" in capsys.readouterr().out  # nothing was cached: asked again

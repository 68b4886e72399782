"""`provider: together` against the fake of Together's API: a dataset version trains with `finetune --wait`,
the `jobs` verbs and `results` reach it, and settings Together lacks are refused before any upload."""

from __future__ import annotations

import pytest

from base.state import state_path
from configs import load_config
from crawlers.store import PageStore
from fake_together import FakeTogether
from pipeline import main
from test_finetune import documents
from transforms.build import build

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
KEY = "together-test-key-0123456789abcdef"


@pytest.fixture
def together(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-never-sent-0123456789")
    with FakeTogether(KEY, models=(MODEL,)) as fake:
        yield fake


def config_text(fake, extra: str = "") -> str:
    return f"""
output_dir: out
model: {MODEL}
sources:
  - name: guide
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
finetune:
  provider: together
  base_url: {fake.base_url}
  base_models: [{{name: {MODEL}, context_tokens: 8192}}]
  poll_interval: 0
  n_epochs: 3
  learning_rate: 0.0001
  suffix: guide
  lora: {{r: 8, alpha: 16, dropout: 0.1}}
  train_on_inputs: false
{extra}"""


@pytest.fixture
def project(tmp_path, together):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(together), encoding="utf-8")
    with PageStore(state_path(tmp_path / "out")) as store:
        for doc in documents():
            store.save_document(doc, status=200, etag=None, last_modified=None)
    build(load_config(path))
    return path


def run(path, *argv) -> int:
    return main([*argv, "--config", str(path)])


def test_finetune_wait_uploads_creates_a_lora_job_and_follows_it_to_its_output_model(project, together, capsys):
    assert run(project, "finetune", "--wait") == 0
    out = capsys.readouterr().out

    train, test = together.find("POST", "/v1/files/upload")
    assert train.body["purpose"] == "fine-tune" and train.body["file_type"] == "jsonl"
    assert train.body["file_name"] == "guide-v0001-train.jsonl"
    (create,) = together.find("POST", "/v1/fine-tunes")
    files = {k: create.body.pop(k) for k in ("training_file", "validation_file")}
    assert create.body == {
        "model": MODEL, "n_evals": 5, "n_epochs": 3, "learning_rate": 0.0001,
        "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                          "lora_trainable_modules": "all-linear"},
        "training_method": {"method": "sft"}, "train_on_inputs": False, "suffix": "guide",
    }
    assert set(files.values()) <= set(together.files)
    (job,) = together.jobs.values()
    assert job.status == "completed"
    assert f"created job {job.id} on together" in out
    assert together.keys_seen == {KEY}
    assert KEY not in out

    assert run(project, "jobs", "show", job.id) == 0
    shown = capsys.readouterr().out
    assert f"job {job.id} (together): succeeded" in shown and "fake-user/" in shown
    assert run(project, "jobs", "events", job.id) == 0
    assert "Checkpoint saved at step 20" in capsys.readouterr().out
    assert run(project, "jobs", "checkpoints", job.id) == 0
    assert f"step     20  {job.id}:20" in capsys.readouterr().out
    assert run(project, "jobs", "results", job.id) == 0
    csv_path = project.parent / "out" / "datasets" / "guide" / "v0001" / "finetune" / job.id / "step_metrics.csv"
    assert csv_path.read_text().splitlines()[0] == "step,event,message"
    assert run(project, "jobs", "list") == 0
    assert job.id in capsys.readouterr().out
    output = job.api(together.user)["model_output_name"]
    assert run(project, "models", "delete", output) == 0
    assert f"deleted model {output}" in capsys.readouterr().out
    assert together.jobs == {} and together.find("DELETE", f"/v1/fine-tunes/{job.id}")


def test_cancel_reaches_together_and_pause_is_refused_in_one_line(project, together, capsys):
    assert run(project, "finetune") == 0
    (job,) = together.jobs.values()
    capsys.readouterr()
    assert run(project, "jobs", "cancel", job.id) == 0
    assert f"job {job.id} is now cancelled" in capsys.readouterr().out
    assert run(project, "jobs", "pause", job.id) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot be paused" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, named", [
    ("  seed: 7\n", "finetune.seed"),
    ("  wandb: {project: p}\n", "finetune.wandb"),
])
def test_a_setting_together_lacks_is_refused_before_any_upload(project, together, capsys, extra, named):
    project.write_text(config_text(together, extra), encoding="utf-8")
    assert run(project, "finetune") == 1
    err = capsys.readouterr().err.strip()
    assert named in err and "nothing was uploaded" in err and len(err.splitlines()) == 1
    assert together.requests == []


def test_dpo_needs_preference_pairs_and_says_so_before_upload(project, together, capsys):
    project.write_text(config_text(together, "  training_method: dpo\n"), encoding="utf-8")
    assert run(project, "finetune") == 1
    assert "training_method dpo needs preference pairs" in capsys.readouterr().err
    assert together.requests == []


EDITS = ["검토자가 고친 답변: 배치 작업은 관리 화면에서 등록하고 매일 밤 실행됩니다.",  # distinct, or dedup drops one
         "Reviewer's answer: the HTTP channel answers each request synchronously within thirty seconds."]


def test_reviewer_edits_become_preference_pairs_that_a_dpo_job_trains_on(project, together, capsys):
    import json

    from transforms.decisions import store_decisions

    version = project.parent / "out" / "datasets" / "guide" / "v0001"
    meta = [json.loads(line) for line in (version / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [m for m in meta if m["split"] == "train"][:2]
    originals = [json.loads(line)["messages"][-1]["content"]
                 for line in (version / "train.jsonl").read_text(encoding="utf-8").splitlines()[:2]]
    store_decisions(state_path(project.parent / "out"), "guide",
                    [(m["example_id"], "edit", edit, m["url"]) for m, edit in zip(train, EDITS)],
                    source="test")
    build(load_config(project))
    v2 = project.parent / "out" / "datasets" / "guide" / "v0002"
    pairs = [json.loads(line) for line in (v2 / "preference.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["preferred_output"][0]["content"] for p in pairs] == EDITS
    assert [p["non_preferred_output"][0]["content"] for p in pairs] == originals
    assert all(p["input"]["messages"][-1]["role"] == "user" for p in pairs)
    manifest = json.loads((v2 / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["preference"] == 2 and "preference.jsonl" in manifest["files"]
    assert run(project, "validate", str(v2 / "preference.jsonl")) == 1  # 2 pairs: OpenAI's minimum is 10
    assert "insufficient_examples" in capsys.readouterr().out

    project.write_text(config_text(together, "  training_method: dpo\n"), encoding="utf-8")
    assert run(project, "finetune", "--wait") == 0
    assert "preference pairs (reviewer edits) 2 examples, no validation file" in capsys.readouterr().out
    (upload,) = together.find("POST", "/v1/files/upload")
    assert upload.body["file_name"] == "guide-v0002-preference.jsonl"
    (create,) = together.find("POST", "/v1/fine-tunes")
    assert create.body["training_method"]["method"] == "dpo" and "validation_file" not in create.body
    assert {j.status for j in together.jobs.values()} == {"completed"}


def test_chat_asks_a_model_through_together_s_chat_completions(project, together):
    from configs import SamplingConfig
    from finetune.providers import create_backend

    backend = create_backend(load_config(project).finetune)
    replies = backend.chat(MODEL, [{"role": "user", "content": "q"}], sampling=SamplingConfig(n=2, max_tokens=5))
    assert [r.text for r in replies] == [f"answer 0 from {MODEL}", f"answer 1 from {MODEL}"]
    (request,) = together.find("POST", "/v1/chat/completions")
    assert request.body["max_tokens"] == 5 and request.body["n"] == 2

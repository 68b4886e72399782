"""`provider: fireworks` against the fake of Fireworks' API: datasets created, uploaded and validated, a LoRA
supervised job followed with `finetune --wait`, the `jobs` verbs, `results`, model deletion, and the settings
Fireworks lacks refused before any upload."""

from __future__ import annotations

import pytest

from base.state import state_path
from configs import load_config
from crawlers.store import PageStore
from fake_fireworks import FakeFireworks
from pipeline import main
from test_finetune import documents
from transforms.build import build

MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
KEY = "fw-test-key-0123456789abcdef"


@pytest.fixture
def fireworks(monkeypatch):
    monkeypatch.setenv("FW_KEY_FOR_TESTS", KEY)
    with FakeFireworks(KEY, account="acct", models=(MODEL,)) as fake:
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
  provider: fireworks
  account: acct
  api_key_env: FW_KEY_FOR_TESTS
  base_url: {fake.base_url}
  base_models: [{{name: {MODEL}, context_tokens: 8192}}]
  poll_interval: 0
  n_epochs: 2
  learning_rate: 0.0002
  max_seq_length: 4096
  lora: {{r: 16}}
  suffix: guide
{extra}"""


@pytest.fixture
def project(tmp_path, fireworks):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(fireworks), encoding="utf-8")
    with PageStore(state_path(tmp_path / "out")) as store:
        for doc in documents():
            store.save_document(doc, status=200, etag=None, last_modified=None)
    build(load_config(path))
    return path


def run(path, *argv) -> int:
    return main([*argv, "--config", str(path)])


def test_finetune_wait_creates_datasets_and_a_lora_job_and_follows_it_to_its_output_model(project, fireworks, capsys):
    assert run(project, "finetune", "--wait") == 0
    out = capsys.readouterr().out

    train, test = fireworks.find("POST", "/v1/accounts/acct/datasets")
    assert train.body["datasetId"].startswith("guide-v0001-train-")
    version = project.parent / "out" / "datasets" / "guide" / "v0001"
    assert train.body["dataset"]["exampleCount"] == str(len((version / "train.jsonl").read_text().splitlines()))
    assert fireworks.data[train.body["datasetId"]] == (version / "train.jsonl").read_bytes()
    (create,) = fireworks.find("POST", "/v1/accounts/acct/supervisedFineTuningJobs")
    assert create.body == {
        "dataset": f"accounts/acct/datasets/{train.body['datasetId']}", "baseModel": MODEL, "loraRank": 16,
        "maxContextLength": 4096, "epochs": 2, "learningRate": 0.0002,
        "evaluationDataset": f"accounts/acct/datasets/{test.body['datasetId']}", "displayName": "guide",
    }
    (ident,) = fireworks.jobs
    job = fireworks.jobs[ident]
    assert job["state"] == "JOB_STATE_COMPLETED"
    assert f"created job {ident} on fireworks" in out
    assert fireworks.keys_seen == {KEY} and KEY not in out

    assert run(project, "jobs", "show", ident) == 0
    assert f"accounts/acct/models/ft-{ident}" in capsys.readouterr().out
    assert run(project, "jobs", "events", ident) == 0
    assert "completed · epoch 2 · 100%" in capsys.readouterr().out
    assert run(project, "jobs", "results", ident) == 0
    csv_path = version / "finetune" / ident / "step_metrics.csv"
    assert csv_path.read_text().splitlines() == ["step,percent,inputTokens", "2,100,2000"]
    assert run(project, "models", "delete", f"accounts/acct/models/ft-{ident}") == 0
    assert fireworks.deleted_models == {f"accounts/acct/models/ft-{ident}"}


def test_a_file_over_150_mb_goes_to_the_signed_url_without_the_key(project, fireworks, monkeypatch):
    from finetune import fireworks_backend

    monkeypatch.setattr(fireworks_backend, "UPLOAD_MAX_BYTES", 1000)  # the sample's splits are a few kB
    assert run(project, "finetune", "--wait") == 0
    version = project.parent / "out" / "datasets" / "guide" / "v0001"
    train, test = fireworks.find("POST", "/v1/accounts/acct/datasets")
    assert not [r for r in fireworks.requests if r.path.endswith(":upload")]
    (asked, _) = [r for r in fireworks.requests if r.path.endswith(":getUploadEndpoint")]
    assert asked.body == {"filenameToSize": {"guide-v0001-train.jsonl": str((version / "train.jsonl").stat().st_size)}}
    assert fireworks.data[train.body["datasetId"]] == (version / "train.jsonl").read_bytes()
    assert len(fireworks.signed_puts) == 2 and not any("authorization" in h for h in fireworks.signed_puts)
    assert {j["state"] for j in fireworks.jobs.values()} == {"JOB_STATE_COMPLETED"}


def test_a_second_finetune_of_the_same_version_reuses_the_datasets_and_the_job(project, fireworks, capsys):
    assert run(project, "finetune") == 0
    assert run(project, "finetune") == 0
    assert len(fireworks.find("POST", "/v1/accounts/acct/datasets")) == 2  # train and test, once each
    assert len(fireworks.jobs) == 1


def test_cancel_reaches_fireworks(project, fireworks, capsys):
    assert run(project, "finetune") == 0
    (ident,) = fireworks.jobs
    assert run(project, "jobs", "cancel", ident) == 0
    assert f"job {ident} is now cancelled" in capsys.readouterr().out


@pytest.mark.parametrize("extra, named", [
    ("  batch_size: 8\n", "finetune.batch_size"),
    ("  training_method: dpo\n", "finetune.training_method"),
    ("  seed: 3\n", "finetune.seed"),
])
def test_a_setting_fireworks_lacks_is_refused_before_any_upload(project, fireworks, capsys, extra, named):
    project.write_text(config_text(fireworks, extra), encoding="utf-8")
    assert run(project, "finetune") == 1
    err = capsys.readouterr().err.strip()
    assert named in err and "nothing was uploaded" in err and len(err.splitlines()) == 1
    assert fireworks.requests == []


def test_lora_alpha_is_refused_since_fireworks_takes_only_the_rank(project, fireworks, capsys):
    project.write_text(config_text(fireworks).replace("lora: {r: 16}", "lora: {r: 16, alpha: 64}"), encoding="utf-8")
    assert run(project, "finetune") == 1
    assert "finetune.lora.alpha: Fireworks takes only the rank" in capsys.readouterr().err


def test_chat_asks_a_model_through_fireworks_inference_route(project, fireworks):
    from configs import SamplingConfig
    from finetune.providers import create_backend

    backend = create_backend(load_config(project).finetune)
    (reply,) = backend.chat(MODEL, [{"role": "user", "content": "q"}], sampling=SamplingConfig())
    assert reply.text == f"answer 0 from {MODEL}" and reply.completion_tokens == 4

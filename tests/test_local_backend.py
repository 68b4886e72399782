"""The local backend end to end, offline: a tiny causal LM and tokenizer built here, trained on a dataset the pipeline
built, in a real background process; `jobs` and `evaluate` go through the same commands as for OpenAI.

The model is a 2-layer Llama with 32-wide hidden states and random weights; the tokenizer a byte-level BPE trained
on the dataset's own text, with a chat template. Training it takes a second or two on a CPU.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the local backend's packages are not installed (pip install -e '.[local]')")
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's

import huggingface_hub.constants  # noqa: E402

from dataset_state import page, write_pages  # noqa: E402
from finetune.local import models as local_models  # noqa: E402
from pipeline import main  # noqa: E402

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIAL = ["<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def page_text(i: int) -> str:
    return (f"# 주제 {i} 안내\n\n주제 {i}는 배치 작업 {i}번을 등록하는 방법을 설명합니다.\n\n## 설정 {i}\n\n관리 화면에서 "
            f"작업 {i}을 선택하고 저장 버튼을 누르면 등록이 끝납니다. Retry policy number {i} applies to failed "
            f"transfers.\n\n## 오류 {i}\n\n오류 코드 E{i:03d}가 나오면 모니터링 화면에서 작업 {i}의 상태를 확인하고 "
            "다시 실행합니다.")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer Llama and a BPE tokenizer with a chat template, saved as a model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [page_text(i) for i in range(20)] + ["Category: [배치] 운영 가이드 관련 내용을 알려줘."] * 5
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<pad>",
                                        chat_template=TEMPLATE)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """Nothing may reach the hub: HF_HUB_OFFLINE for the trainer process, the hub client's constant for this one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(autouse=True)
def no_trainer_left():
    """A failed test must not leave its training process running."""
    from finetune.local import backend as local_backend

    before = set(local_backend._SPAWNED)
    yield
    for pid in set(local_backend._SPAWNED) - before:
        proc = local_backend._SPAWNED.pop(pid)
        if proc.poll() is None:
            os.killpg(pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Project:
    root: Path
    config: Path
    model: Path

    @property
    def version(self) -> Path:
        return (self.root / "out" / "datasets" / "guide" / "latest").resolve()

    def write_config(self, finetune: str = "", base_model: str | None = None) -> None:
        self.config.write_text(f"""
output_dir: out
sources:
  - name: guide
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
  granularity: section
  turns_per_example: 2
  train_on: last
finetune:
  provider: local
  base_model: {base_model or self.model}
  n_epochs: 3
  batch_size: 8
  learning_rate: 0.02
  max_seq_length: 256
  lora: {{r: 8, alpha: 16, dropout: 0.0}}
  seed: 1
  poll_interval: 0.1
  evaluation: {{max_tokens: 6, concurrency: 2}}
{finetune}""", encoding="utf-8")

    def run(self, *argv: str) -> int:
        return main([*argv, "--config", str(self.config)])

    def job_dir(self, job_id: str) -> Path:
        return self.root / "out" / "local_jobs" / job_id


@pytest.fixture
def project(tmp_path, tiny_model) -> Project:
    """Dataset v0001 built by the pipeline: multi-turn examples whose earlier answers carry weight 0."""
    from configs import load_config
    from transforms.build import build

    p = Project(tmp_path, tmp_path / "config.yaml", tiny_model)
    p.write_config()
    write_pages(tmp_path / "out", [page(f"t-{i:02d}", page_text(i), title=f"주제 {i} 안내", category="[배치] 운영 가이드")
                                   for i in range(15)])
    result = build(load_config(p.config))
    assert result.manifest.counts["train"] >= 10 and result.manifest.counts["test"] >= 2
    assert '"weight":0' in (p.version / "train.jsonl").read_text(encoding="utf-8")
    return p


def created_job(out: str) -> str:
    return re.search(r"created job (local-\S+) on local", out).group(1)


def trainer_job(model: Path, train: Path, n_epochs: int = 1) -> dict:
    """A job.json as the backend writes it."""
    return {"model": str(model), "training_path": str(train), "validation_path": None, "seed": 0,
            "hyperparameters": {"method": "lora", "n_epochs": n_epochs, "batch_size": 1, "learning_rate": 0.01,
                                "max_seq_length": 512, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                "lora_target_modules": "all-linear"}}


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][0]
    except FileNotFoundError:
        return None


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def metric_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------
# the whole run


def test_finetune_wait_trains_an_adapter_in_the_background_and_jobs_and_evaluate_use_it(project, capsys):
    assert project.run("finetune", "--wait") == 0
    out = capsys.readouterr().out
    job_id = created_job(out)
    job_dir = project.job_dir(job_id)
    assert f"checked guide v0001 for {project.model}: train " in out and "trained on this machine, no API cost" in out
    assert re.search(rf"created job {job_id} on local: {re.escape(str(project.model))}, batch_size 8, "
                     r"learning_rate 0.02, lora_alpha 16, lora_dropout 0.0, lora_r 8, lora_target_modules all-linear, "
                     r"max_seq_length 256, method lora, n_epochs 3", out)
    assert re.search(r"^  Loading .* on (cpu|cuda) \(", out, re.M)  # the GPU when there is one
    assert re.search(r"  train: \d+ examples laid out with the model's chat template, [\d,]+ tokens of which [\d,]+ "
                     r"are trained; \d+ assistant messages with weight 0 left out of the loss", out)
    assert re.search(r"\[running\] step \d+/\d+ · train loss \d", out)
    assert f"succeeded: local:{job_id}" in out
    assert f"python pipeline.py evaluate --model local:{job_id}" in out

    # the adapter, a checkpoint per epoch, and the losses going down
    assert (job_dir / "adapter" / "adapter_config.json").is_file()
    assert (job_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((job_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(project.model)
    checkpoints = sorted(p.name for p in (job_dir / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 3
    rows = metric_rows(job_dir / "step_metrics.csv")
    losses = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    steps_per_epoch = len(losses) // 3
    assert statistics.fmean(losses[-steps_per_epoch:]) < statistics.fmean(losses[:steps_per_epoch]) - 0.05
    valid = [float(r["valid_loss"]) for r in rows if r["valid_loss"]]
    assert len(valid) == 3 and valid[-1] < valid[0]

    # results beside the dataset version, as for OpenAI jobs
    results = project.version / "finetune" / job_id
    assert (results / "step_metrics.csv").read_bytes() == (job_dir / "step_metrics.csv").read_bytes()
    assert (results / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert project.run("jobs", "list") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{job_id}  succeeded ") and " local   guide v0001 " in line and f"local:{job_id}" in line

    assert project.run("jobs", "show", job_id) == 0
    show = capsys.readouterr().out.splitlines()
    assert show[0] == f"job {job_id} (local): succeeded"
    assert show[2] == f"  model: {project.model} → local:{job_id}"
    assert "seed 1" in show[3]

    assert project.run("jobs", "events", job_id) == 0
    events = capsys.readouterr().out
    assert "Training process started" in events and "Saved checkpoint at step" in events
    assert f"Saved the LoRA adapter to {job_dir / 'adapter'}" in events
    assert events.rstrip().endswith("The job has successfully completed")

    assert project.run("jobs", "checkpoints", job_id) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and re.match(rf"step +\d+  local:{job_id}:checkpoint-\d+  train_loss \d", lines[0])

    # evaluate asks the base model and the tuned adapter every test question
    assert project.run("evaluate", "--model", f"local:{job_id}") == 0
    out = capsys.readouterr().out
    assert f"asking {project.model} (base) and local:{job_id} (tuned)" in out
    report = next((project.version / "evaluations").glob("*/results.jsonl"))
    answers = [json.loads(l) for l in report.read_text(encoding="utf-8").splitlines()]
    test_lines = (project.version / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(answers) == len(test_lines)
    for row in answers:
        assert row["answers"]["tuned"]["model"] == f"local:{job_id}"
        assert row["answers"]["base"]["model"] == str(project.model)
        assert row["answers"]["tuned"]["finish_reason"] in ("stop", "length")
    assert (report.parent / "report.html").is_file()

    # a checkpoint is a model too
    assert project.run("evaluate", "--model", f"local:{job_id}:{checkpoints[0]}", "--dataset", "latest") == 0
    capsys.readouterr()

    # the same files and settings find the job instead of training again
    assert project.run("finetune") == 0
    assert (f"guide v0001 already has job {job_id} (succeeded, local:{job_id}) from the same files and settings; "
            "nothing new was started") in capsys.readouterr().out
    assert [p.name for p in (job_dir.parent).iterdir() if p.name != "files"] == [job_id]

    assert project.run("models", "delete", f"local:{job_id}") == 0
    assert capsys.readouterr().out == f"deleted model local:{job_id}\n"
    assert not (job_dir / "adapter").exists() and (job_dir / "checkpoints").is_dir()


def test_pause_resume_and_cancel_signal_the_job_s_process(project, capsys):
    assert project.run("finetune") == 0
    job_id = created_job(capsys.readouterr().out)
    job_dir = project.job_dir(job_id)
    pid = json.loads((job_dir / "process.json").read_text())["pid"]
    assert wait_for(lambda: json.loads((job_dir / "status.json").read_text())["status"] == "running")

    assert project.run("jobs", "pause", job_id) == 0
    assert capsys.readouterr().out == f"job {job_id} is now paused\n"
    assert wait_for(lambda: process_state(pid) == "T")  # stopped
    assert project.run("jobs", "wait", job_id) == 0
    assert f"job {job_id} is paused: continue it with `python pipeline.py jobs resume {job_id}" in capsys.readouterr().out

    assert project.run("jobs", "resume", job_id) == 0
    assert capsys.readouterr().out == f"job {job_id} is now running\n"
    assert process_state(pid) not in ("T", None)
    assert project.run("jobs", "cancel", job_id) == 0  # still loading: it ends at once
    assert capsys.readouterr().out == f"job {job_id} is now cancelled\n"
    assert process_state(pid) in (None, "Z")
    assert "Job cancelled" in (job_dir / "events.jsonl").read_text(encoding="utf-8")

    assert project.run("jobs", "cancel", job_id) == 1
    assert f"job {job_id} is already cancelled; there is nothing to cancel" in capsys.readouterr().err
    assert project.run("jobs", "list") == 0
    assert capsys.readouterr().out.startswith(f"{job_id}  cancelled ")


def test_sigterm_during_training_stops_after_the_step_and_keeps_no_adapter(project, tiny_model):
    """What `jobs cancel` does to a job that is training, run in this process to spare a second start-up."""
    from finetune.local import trainer as local_trainer
    from finetune.local.jobs import JobDir

    job_dir = JobDir(project.root / "out" / "local_jobs" / "local-20261121-000000-abcdef")
    job_dir.path.mkdir(parents=True)
    few = project.root / "few.jsonl"
    few.write_text("".join((project.version / "train.jsonl").read_text(encoding="utf-8").splitlines(True)[:4]))
    job_dir.job_file.write_text(json.dumps(trainer_job(tiny_model, few, n_epochs=30)))

    def cancel_at_step_2() -> None:
        wait_for(lambda: job_dir.events_file.exists() and "Step 2/" in job_dir.events_file.read_text(), 60)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=cancel_at_step_2, daemon=True).start()
    try:
        assert local_trainer.main([str(job_dir.path)]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert job_dir.status()["status"] == "cancelled"
    steps = [e["data"]["step"] for e in job_dir.events() if e["type"] == "metrics"]
    assert 2 <= max(steps) < 10 and job_dir.events()[-1]["message"] == "Job cancelled: training stopped"
    assert not job_dir.adapter.exists()


def test_a_training_process_that_dies_leaves_a_failed_job_with_the_end_of_its_log(project, capsys):
    assert project.run("finetune") == 0
    job_id = created_job(capsys.readouterr().out)
    job_dir = project.job_dir(job_id)
    pid = json.loads((job_dir / "process.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    (job_dir / "train.log").write_text("Killed\n", encoding="utf-8")
    assert project.run("jobs", "wait", job_id) == 1
    err = capsys.readouterr().err
    assert err == (f"error: job {job_id} failed: trainer_exited: the training process ended without reporting a "
                   f"result; its log ends: Killed — hint: the job's log says more: `python pipeline.py jobs events "
                   f"{job_id}`\n")


# --------------------------------------------------------------------------------------------------
# the loss mask


def test_weight_zero_answers_are_masked_out_of_the_loss_the_trainer_computes(project, tiny_model):
    """The SFTTrainer the job runs gets labels of -100 on every token of a weight-0 answer, and trains the rest."""
    from transformers import AutoTokenizer

    from finetune.local import trainer as local_trainer
    from finetune.local.jobs import JobDir

    examples = [json.loads(l) for l in (project.version / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    multi = next(e for e in examples if any(m.get("weight") == 0 for m in e["messages"]))
    path = project.root / "one.jsonl"
    path.write_text(json.dumps(multi, ensure_ascii=False) + "\n", encoding="utf-8")
    job_dir = JobDir(project.root / "job")
    job_dir.path.mkdir()
    trainer = local_trainer.build_trainer(trainer_job(tiny_model, path), job_dir, threading.Event())
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trained = tokenizer.decode([t for t, l in zip(ids, labels) if l != -100])
    unweighted, weighted = [m for m in multi["messages"] if m["role"] == "assistant"]
    assert unweighted["weight"] == 0 and weighted["weight"] == 1
    assert trained == weighted["content"] + "<|end|>"  # the answer and its end-of-turn token, nothing else
    assert unweighted["content"] in tokenizer.decode(ids)  # still in the context the model reads


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_reason(tiny_model):
    from transformers import AutoTokenizer

    from finetune.local.chat_template import TemplateError, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = ("{% for m in messages %}{% if loop.last or m['role'] != 'assistant' %}<|{{ m['role'] }}|>"
                               "{{ m['content'] }}<|end|>{% endif %}{% endfor %}")
    example = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    with pytest.raises(TemplateError, match="renders earlier turns differently"):
        encode(tokenizer, example)


# --------------------------------------------------------------------------------------------------
# refusals


def test_a_base_model_not_available_offline_is_refused_in_one_line_before_anything_starts(project, capsys):
    project.write_config(base_model="acme/never-downloaded-7b")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: model 'acme/never-downloaded-7b' is not available offline: it is not a local folder "
                          "nor in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it")
    assert not (project.root / "out" / "local_jobs").exists()


def test_loading_a_model_that_is_not_offline_fails_in_one_line(monkeypatch):
    with pytest.raises(local_models.ModelUnavailable) as caught:
        local_models.load_tokenizer("acme/never-downloaded-7b")
    message = str(caught.value)
    assert "\n" not in message and "not available offline" in message and "HF_HUB_OFFLINE=1" in message


def test_a_folder_that_holds_no_model_is_named(project, capsys):
    empty = project.root / "models" / "empty"
    empty.mkdir(parents=True)
    project.write_config(base_model=str(empty))
    assert project.run("finetune") == 1
    assert capsys.readouterr().err == (f"error: model '{empty}' is not a folder holding a model (config.json and "
                                       "weights); set finetune.base_model to the folder's path or to a Hugging Face "
                                       "hub id\n")


def test_without_the_optional_packages_the_command_to_install_them_is_printed(project, capsys, monkeypatch):
    monkeypatch.setattr(local_models, "missing_dependencies", lambda: ["trl", "peft"])
    assert project.run("finetune") == 1
    assert capsys.readouterr().err == (
        "error: the local fine-tuning backend needs torch, transformers, trl, peft, datasets, accelerate (missing: "
        "trl, peft); install them from the project folder with: python -m pip install -e '.[local]'\n")
    assert not (project.root / "out" / "local_jobs").exists()


def test_provider_local_without_a_base_model_fails_with_the_field_path(project, capsys):
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(re.sub(r"  base_model: .*\n", "", text), encoding="utf-8")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert "finetune: provider local needs finetune.base_model" in err and err.count("\n") == 1

"""Local training that tells the truth: the job record pins the base model's revision, its tokenizer and the chat
template's sha256; a template that would train nothing is refused before the job starts, named; the TRL options
and the several-GPU command."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

pytest.importorskip("torch", reason="the local backend's packages are not installed (pip install -e '.[local]')")

from test_local_backend import TEMPLATE, no_trainer_left, offline_hub, project, tiny_model  # noqa: E402,F401

# Renders only the user's turns: every assistant message comes out as no tokens, the empty mask.
USER_ONLY = ("{% for m in messages %}{% if m['role'] != 'assistant' %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
             "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_the_job_record_pins_revision_tokenizer_and_template_hash(project, capsys):
    from finetune.state import FinetuneState

    project.write_config("  n_epochs: 1\n")
    assert project.run("finetune") == 0
    with FinetuneState(project.root / "out") as state:
        (record,) = state.jobs()
    pins = record.request["pins"]
    assert pins["chat_template_sha256"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert pins["generation_markers"] is False
    config_sha = hashlib.sha256((project.model / "config.json").read_bytes()
                                + (project.model / "model.safetensors").read_bytes()).hexdigest()
    assert pins["base_model_revision"] == f"folder sha256:{config_sha}"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(project.model)
    assert pins["tokenizer"] == f"{type(tokenizer).__name__} {project.model}, {len(tokenizer)} tokens"


def test_a_template_that_renders_no_assistant_tokens_is_refused_with_the_template_named(project, tmp_path, capsys):
    from transformers import AutoTokenizer

    model = tmp_path / "user-only"
    tokenizer = AutoTokenizer.from_pretrained(project.model)
    tokenizer.chat_template = USER_ONLY
    tokenizer.save_pretrained(model)
    for f in ("config.json", "model.safetensors"):
        (model / f).write_bytes((project.model / f).read_bytes())
    project.write_config(base_model=str(model))

    assert project.run("finetune") == 1
    err = capsys.readouterr().err.strip()
    sha = hashlib.sha256(USER_ONLY.encode()).hexdigest()[:12]
    assert f"the chat template of {model} (sha256 {sha}) renders assistant message" in err
    assert "{% generation %}" in err and len(err.splitlines()) == 1
    assert not (project.root / "out" / "local_jobs").exists() or not any((project.root / "out" / "local_jobs").iterdir())


def test_examples_longer_than_max_seq_length_in_the_models_own_tokenizer_are_counted_before_the_job(project):
    from configs import load_config
    from finetune.launch import check_dataset, resolve_dataset

    config = load_config(project.config)
    ds = resolve_dataset(config, "latest")
    assert not [w for w in check_dataset(config, ds).warnings if "max_seq_length" in w]  # 256: every one fits
    short = config.model_copy(update={"finetune": config.finetune.model_copy(update={"max_seq_length": 16})})
    (warning,) = [w for w in check_dataset(short, ds).warnings if "max_seq_length" in w]
    n = len(ds.train.read_text(encoding="utf-8").splitlines())
    assert warning.startswith(f"{n} of {n} train examples are longer than finetune.max_seq_length 16 in ")
    assert "own tokenizer" in warning and "the trainer cuts them" in warning


def test_packing_padding_free_and_liger_reach_sft_config_and_gpu_only_ones_are_refused_on_the_cpu():
    from finetune.backend import FinetuneError
    from finetune.local.models import Device
    from finetune.local.trainer import sft_config

    job = {"seed": 0, "hyperparameters": {"method": "lora", "n_epochs": 1, "batch_size": 2, "learning_rate": 1e-3,
                                          "max_seq_length": 64, "packing": True}}
    args = sft_config(job, Device("cpu", "cpu"), "/tmp/unused-out", has_eval=False)
    assert args.packing is True and args.padding_free is False and args.use_liger_kernel is False
    job["hyperparameters"]["padding_free"] = True
    with pytest.raises(FinetuneError, match="finetune.padding_free needs a GPU"):
        sft_config(job, Device("cpu", "cpu"), "/tmp/unused-out", has_eval=False)


def test_liger_without_its_package_is_refused_in_one_line(project, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    project.write_config("  liger_kernel: true\n")
    assert project.run("finetune") == 1
    assert "pip install liger-kernel" in capsys.readouterr().err


def test_several_gpus_train_through_accelerate_launch_one_process_each(tmp_path):
    from finetune.local.backend import trainer_command

    assert trainer_command(tmp_path, 0) == [sys.executable, "-m", "finetune.local.trainer", str(tmp_path)]
    assert trainer_command(tmp_path, 1) == [sys.executable, "-m", "finetune.local.trainer", str(tmp_path)]
    assert trainer_command(tmp_path, 4) == [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4",
        "--num_machines", "1", "--mixed_precision", "bf16", "-m", "finetune.local.trainer", str(tmp_path)]

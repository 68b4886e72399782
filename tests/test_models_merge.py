"""`models merge local:<job> --out DIR`: the merged folder loads back with transformers alone and computes what
the base model with the adapter computes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")

from test_local_backend import offline_hub, tiny_model  # noqa: E402,F401
from pipeline import main  # noqa: E402


@pytest.fixture
def adapted_job(tmp_path, tiny_model):
    """A succeeded local job's folder whose adapter was made here, with random (non-zero) LoRA weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = tmp_path / "out" / "local_jobs" / "local-20261121-000000-abcdef"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"id": job.name, "model": str(tiny_model),
                                              "hyperparameters": {"method": "lora"}}))
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                                            task_type="CAUSAL_LM"))
    tuned.save_pretrained(job / "adapter")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(job / "adapter")
    config = tmp_path / "config.yaml"
    config.write_text("output_dir: out\nsources: [{name: s, start_urls: ['http://x.internal/']}]\n", encoding="utf-8")
    return config, job, tuned


def test_the_merged_folder_loads_with_transformers_and_matches_base_plus_adapter(adapted_job, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config, job, tuned = adapted_job
    out = tmp_path / "merged"
    assert main(["models", "merge", f"local:{job.name}", "--out", str(out), "--config", str(config)]) == 0
    assert f"merged local:{job.name} into {out}" in capsys.readouterr().out
    assert not (out / "adapter_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(job / "adapter").chat_template
    ids = torch.tensor([tokenizer.encode("배치 작업 등록")])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tuned.eval()(ids).logits, atol=1e-4)


def test_merging_into_a_folder_that_holds_files_is_refused(adapted_job, tmp_path, capsys):
    config, job, _ = adapted_job
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("keep")
    assert main(["models", "merge", f"local:{job.name}", "--out", str(out), "--config", str(config)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "x").read_text() == "keep"

"""`evaluate --save-dataset`: a retiring model's answers become a dataset version that `validate` passes and the
local backend trains (the tiny random Llama of test_local_backend, a second or two on a CPU)."""

from __future__ import annotations

import json

from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)
from test_local_backend import no_trainer_left, offline_hub, tiny_model  # noqa: F401  (the tiny local model)
from test_scorecard import write_recall_set


def test_a_models_answers_become_a_version_that_validate_passes_and_local_finetune_trains(
        project, capsys, tiny_model):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    records = write_recall_set(project.version)
    capsys.readouterr()
    assert project.run("evaluate", "--model", model, "--save-dataset", "guide-answers", "--questions", "all") == 0
    out = capsys.readouterr().out
    saved = (project.root / "out" / "datasets" / "guide-answers" / "latest").resolve()
    assert saved.name == "v0001" and "as guide-answers v0001: train" in out
    source_meta = [json.loads(l) for l in (project.version / "metadata.jsonl").read_text("utf-8").splitlines()]
    split_of = {m["url"]: m["split"] for m in source_meta}
    meta = [json.loads(l) for l in (saved / "metadata.jsonl").read_text("utf-8").splitlines()]
    n_train = sum(m["split"] == "train" for m in source_meta)
    n_test = len(source_meta) - n_train
    assert len(meta) == n_train + n_test + len(records) + 5  # train, heldout, recall, the built-in refusals
    assert all(m["split"] == split_of[m["url"]] for m in meta if m["url"] in split_of)  # the same document split
    assert sum(m["split"] == "test" for m in meta) == n_test
    manifest = json.loads((saved / "manifest.json").read_text("utf-8"))
    assert manifest["lineage"]["answered_by"] == model and manifest["lineage"]["sets"] == [
        "train", "heldout", "recall", "refusal"]
    assert manifest["lineage"]["sampling"]["temperature"] == 0.0
    first = json.loads((saved / "train.jsonl").read_text("utf-8").splitlines()[0])
    assert first["messages"][-1]["role"] == "assistant" and first["messages"][-1]["content"]
    assert project.run("validate", str(saved / "train.jsonl")) == 0

    project.write_config(finetune=f"  provider: local\n  base_model: {tiny_model}\n  n_epochs: 1\n  batch_size: 8\n"
                         "  max_seq_length: 256\n  lora: {r: 4, alpha: 8, dropout: 0.0}\n")
    capsys.readouterr()
    assert project.run("finetune", "--dataset", str(saved), "--wait") == 0
    out = capsys.readouterr().out
    assert "checked guide-answers v0001" in out and "succeeded: local:" in out

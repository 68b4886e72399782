"""`evaluate --save-dataset NAME`: a model's answers to a version's questions, saved as a new dataset version.

For a fine-tune about to go dark (OpenAI's gpt-4o and gpt-4.1 snapshots and their fine-tunes retire on
2027-01-14): its behaviour becomes data to train an open-weights model on. Each question keeps its prompt and
gets the model's answer as the assistant message. The version has the same layout as a build
(`transforms.write.DatasetWriter`: train/test JSONL, metadata.jsonl, manifest.json, `latest`), train/test by
the source version's document split (a question's URL keeps its split; one with no known URL, such as a
built-in refusal question, goes to train), is validated like any build before it is published, and its
manifest's `lineage` says which model answered, when, with which settings, from which version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from base.state import now
from configs import Config, EvaluationConfig, SamplingConfig, model_registry
from finetune.backend import Backend, Refused
from finetune.evaluate import Question, load_questions
from finetune.question_sets import load_set
from finetune.scorecard import _ask, _run_pool
from transforms.example import Example
from transforms.tokens import TokenCounter, count_messages
from transforms.validate import validate_file
from transforms.version import DatasetVersion, Manifest, read_manifest
from transforms.write import DatasetWriter


@dataclass(frozen=True)
class Saved:
    dataset: DatasetVersion
    train: int
    test: int
    empty: int  # questions whose answer was empty, left out


def train_questions(ds: DatasetVersion) -> list[Question]:
    """The train split's questions (`--questions all` asks them too), with their metadata."""
    return load_questions(ds, split="train")


def _splits(ds: DatasetVersion) -> dict[str, str]:
    """URL → split in the source version."""
    sidecar = ds.dir / "metadata.jsonl"
    if not sidecar.is_file():
        return {}
    rows = (json.loads(raw) for raw in sidecar.read_text(encoding="utf-8").splitlines() if raw.strip())
    return {row["url"]: row["split"] for row in rows if row.get("url") and row.get("split")}


def save_answers(config: Config, backend: Backend, ds: DatasetVersion, model: str, sets: list[str], name: str,
                 settings: EvaluationConfig, *, every_question: bool = False) -> Saved:
    """Ask `model` the questions of `sets` (with `every_question`, also the train split's) and publish its answers
    as the next version of dataset `name` under `<output_dir>/datasets/<name>/`."""
    if not name or Path(name).name != name or name.startswith("."):
        raise Refused(f"--save-dataset {name!r}: give a plain dataset name such as guide-answers")
    if name == config.dataset.name:
        raise Refused(f"--save-dataset {name}: that is the name `build` writes (dataset.name); give another, such "
                      f"as {name}-answers")
    questions: list[tuple[str, Question]] = []
    if every_question:
        questions += [("train", q) for q in train_questions(ds)]
    for set_name in sets:
        questions += [(set_name, q) for q in load_set(ds, set_name, settings.max_examples)]
    if not questions:
        raise Refused(f"{ds.label} holds no question to answer")
    sampling = SamplingConfig.model_validate(settings.model_dump(include=set(SamplingConfig.model_fields)))
    sampling = sampling.model_copy(update={"n": 1})
    replies, _ = _run_pool(settings, {i: (lambda q=q: _ask(backend, model, q.prompt, sampling, None))
                                      for i, (_, q) in enumerate(questions)}, lambda done, total: None)
    spec = model_registry.lookup(config.model)
    counter = TokenCounter(spec.encoding)
    split_of = _splits(ds)
    root = Path(config.output_dir) / "datasets" / name
    empty, counts = 0, {"train": 0, "test": 0}
    with DatasetWriter(root) as writer:
        for i, (set_name, q) in enumerate(questions):
            answer = replies[i][0].text.strip()
            if not answer:
                empty += 1
                continue
            url = q.meta.get("url")
            split = split_of.get(url) or ("test" if set_name == "heldout" else "train")
            messages = [*q.prompt, {"role": "assistant", "content": answer}]
            ident = hashlib.sha256(json.dumps([set_name, q.line, q.question], ensure_ascii=False).encode()).hexdigest()
            writer.add(Example(
                example_id=ident[:16], document_id=q.meta.get("document_id") or ident[16:32],
                url=url or f"question:{set_name}:{q.line}", source=q.meta.get("source") or ds.name,
                category=q.meta.get("category") or "", title=q.meta.get("title") or "", section=q.meta.get("section"),
                messages=messages, tokens=count_messages(counter.encoding, messages), language=q.meta.get("language"),
                split=split))
            counts[split] += 1
        if counts["train"] == 0:
            raise Refused(f"{model} answered no question of a train document; nothing to save")
        hashes = writer.file_hashes()
        for split, path in (("train", writer.tmp / "train.jsonl"), ("test", writer.tmp / "test.jsonl")):
            if counts[split]:
                report = validate_file(path, spec, counter, fmt="chat")
                errors = set(report.errors) - ({"insufficient_examples"} if split == "test" else set())
                if errors:  # a test file may be short: it validates, it is not trained on
                    raise Refused(f"the answers of {model} do not make a valid {split} file "
                                  f"({', '.join(sorted(errors))}); nothing was saved")
        manifest = Manifest.model_validate({
            "created_at": now("seconds"), "dataset": name, "model": spec.name, "format": "chat",
            "counts": {"examples": counts["train"] + counts["test"], "train": counts["train"], "test": counts["test"],
                       "dropped": {"empty_answer": empty} if empty else {}},
            "lineage": {"answered_by": model, "answered_at": now("seconds"), "source_version": str(ds.dir),
                        "source_label": ds.label, "sets": (["train"] if every_question else []) + sets,
                        "sampling": sampling.model_dump(), "split": "the source version's document split"},
            "files": hashes,
        })
        target = writer.commit(manifest)
    return Saved(DatasetVersion(dir=target.resolve(), manifest=read_manifest(target)), counts["train"],
                 counts["test"], empty)


"""Write a dataset version in the form a trainer loads directly: TRL, Axolotl, LLaMA-Factory, a Hugging Face dataset.

What a version means for training is its conversations and which assistant messages are trained (every one
unless it carries `weight: 0`, as OpenAI trains them). Each format says that its own way: Axolotl reads the
`weight` field as a per-message training flag; TRL trains every assistant turn of `messages` rows
(`assistant_only_loss`), or only the `completion` of prompt-completion rows; LLaMA-Factory trains every
assistant turn, or only the last one (`mask_history`); a Hugging Face dataset keeps the field as it is. An
export is written to a temp folder, read back the way its trainer reads it and compared with the version,
conversation by conversation and trained turn by trained turn; only an export that round-trips is published
(to `<version>/exports/<format>/`, or `--out`), with `export.json` recording the check. The readers here are
re-implementations; bench/export_readers.py loads the Axolotl and LLaMA-Factory exports with the tools' own code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from transforms.build import datasets_root
from transforms.version import SPLITS, DatasetVersion, resolve
from transforms.write import jsonl, sha256_file
from base.errors import Crawl2TuneError

FORMATS = ("trl", "axolotl", "llama-factory", "hf-dataset")
ROLES = ("system", "user", "assistant")

Turn = tuple[str, str, bool | None]  # role, content, trained (None for what is never trained)
Conversation = tuple[Turn, ...]


class ExportError(Crawl2TuneError, ValueError):
    """The version cannot be exported to that format, or the export does not read back as the version."""


# --------------------------------------------------------------------------------------------------
# the version as the trainers should see it


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def conversation(messages: list[dict[str, Any]]) -> Conversation:
    return tuple((m["role"], _text(m.get("content")), (m.get("weight") is None or m["weight"] != 0)
                  if m["role"] == "assistant" else None) for m in messages)


@dataclass(frozen=True)
class Source:
    dataset: DatasetVersion
    splits: dict[str, list[dict[str, Any]]]  # split -> the lines' objects, in order

    def conversations(self, split: str) -> list[Conversation]:
        return [conversation(row["messages"]) for row in self.splits[split]]

    @property
    def present(self) -> list[str]:
        return [s for s in SPLITS if self.splits[s]]


def read_source(root: Path, which: str) -> Source:
    version = resolve(root, which)
    if version is None or not version.train.is_file():
        raise ExportError(f"no dataset version with a train.jsonl at {which if Path(which).is_absolute() else root / which}; "
                          "build one with `python pipeline.py build` or pass --dataset DIR|latest")
    found = version.dir
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = found / f"{split}.jsonl"
        rows = []
        if path.is_file():
            for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{path} line {n} is not JSON ({exc.msg}); check it with `python pipeline.py "
                                      f"validate {path}`") from None
                _check_exportable(row, path, n)
                rows.append(row)
        splits[split] = rows
    if not splits["train"]:
        raise ExportError(f"{found / 'train.jsonl'} holds no example; nothing to export")
    return Source(version, splits)


def _check_exportable(row: Any, path: Path, n: int) -> None:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list):
        raise ExportError(f"{path} line {n} is not a chat example (`messages`); export takes the chat datasets "
                          "built for chat models")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or m.get("tool_calls") or m.get("function_call"):
            raise ExportError(f"{path} line {n}: export takes system, user and assistant messages with text "
                              f"content, not {json.dumps(m, ensure_ascii=False)[:80]}")


def trained_pattern(conv: Conversation) -> str:
    """all: every assistant turn trained; last: only the final message, an assistant one, among several;
    single: one assistant turn, trained; other: anything else (e.g. the last turn has weight 0)."""
    flags = [t for _, _, t in conv if t is not None]
    last_is_trained_assistant = bool(conv) and conv[-1][0] == "assistant" and conv[-1][2] is True
    if len(flags) == 1 and last_is_trained_assistant:
        return "single"
    if flags and all(flags):
        return "all"
    if last_is_trained_assistant and not any(flags[:-1]):
        return "last"
    return "other"


def only_last_trained(source: Source, fmt: str) -> bool:
    """Whether every example trains only its last turn (True) or every turn (False); refuse a mix."""
    patterns: dict[str, str] = {}
    for split in source.present:
        for n, conv in enumerate(source.conversations(split), start=1):
            patterns.setdefault(trained_pattern(conv), f"{split}.jsonl line {n}")
    if "other" in patterns:
        raise ExportError(f"{fmt} trains either every assistant message or only the last one, but "
                          f"{patterns['other']} trains others (its `weight` values); export it with --format axolotl "
                          "or hf-dataset, which keep per-message weights")
    if "all" in patterns and "last" in patterns:
        raise ExportError(f"{fmt} trains either every assistant message or only the last one for the whole dataset, "
                          f"but {patterns['all']} trains every turn and {patterns['last']} only its last; export it "
                          "with --format axolotl or hf-dataset, which keep per-message weights")
    return "last" in patterns


# --------------------------------------------------------------------------------------------------
# one writer and one reader per format


@dataclass
class Written:
    files: list[str] = field(default_factory=list)
    trained: str = "every assistant message without weight 0"
    usage: list[str] = field(default_factory=list)


def _write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    with open(path, "wb") as f:
        for row in rows:
            f.write(jsonl(row))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]


# ---- TRL


def write_trl(source: Source, out: Path, context: dict[str, Any]) -> Written:
    last = only_last_trained(source, "TRL")
    for split in source.present:
        if last:
            rows = ({"prompt": _plain(r["messages"][:-1]), "completion": _plain(r["messages"][-1:])}
                    for r in source.splits[split])
        else:
            rows = ({"messages": _plain(r["messages"])} for r in source.splits[split])
        _write_jsonl(out / f"{split}.jsonl", rows)
    files = {s: str(context["final"] / f"{s}.jsonl") for s in source.present}
    loss = ("completion_only_loss (the default for prompt-completion rows) trains each `completion`" if last else
            "SFTConfig(assistant_only_loss=True) trains every assistant turn (the chat template needs {% generation %} "
            "markers; without them TRL trains every token)")
    return Written([f"{s}.jsonl" for s in source.present],
                   "the last assistant message only (prompt-completion rows)" if last else "every assistant message",
                   [f"ds = datasets.load_dataset('json', data_files={json.dumps(files)})",
                    "SFTTrainer(model=..., train_dataset=ds['train'], eval_dataset=ds.get('test'), args=SFTConfig(...)); "
                    + loss])


def read_trl(out: Path, split: str) -> list[Conversation]:
    convs = []
    for row in _read_jsonl(out / f"{split}.jsonl"):
        if "messages" in row:
            convs.append(tuple((m["role"], m["content"], True if m["role"] == "assistant" else None)
                               for m in row["messages"]))
        else:
            convs.append(tuple((m["role"], m["content"], False if m["role"] == "assistant" else None)
                               for m in row["prompt"])
                         + tuple((m["role"], m["content"], True if m["role"] == "assistant" else None)
                                 for m in row["completion"]))
    return convs


# ---- Axolotl

# Axolotl trains a turn's end only where it finds the tokenizer's eos_token (train_on_eos) or one of eot_tokens
# (train_on_eot) right after the turn; many models end turns with a token that is not their eos_token (Llama 3
# base: <|end_of_text|> vs <|eot_id|>; Gemma: <eos> vs <end_of_turn>; Qwen base: <|endoftext|> vs <|im_end|>),
# so the terminators of the common templates are named. Axolotl keeps those the model's template contains.
TURN_TERMINATORS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>")


def write_axolotl(source: Source, out: Path, context: dict[str, Any]) -> Written:
    for split in source.present:
        _write_jsonl(out / f"{split}.jsonl", ({"messages": [
            {"role": m["role"], "content": _text(m.get("content")),
             **({"weight": m["weight"]} if m.get("weight") is not None else {})} for m in r["messages"]]}
            for r in source.splits[split]))
    final = context["final"]

    def entry(split: str) -> dict[str, Any]:
        return {"path": str(final / f"{split}.jsonl"), "ds_type": "json", "type": "chat_template",
                **({"split": "train"} if split == "test" else {}),
                "field_messages": "messages", "message_property_mappings": {"role": "role", "content": "content"},
                "roles_to_train": ["assistant"], "message_field_training": "weight", "train_on_eos": "turn",
                "train_on_eot": "turn"}

    config: dict[str, Any] = {}
    if context.get("base_model"):
        config["base_model"] = context["base_model"]
    config.update({"chat_template": "tokenizer_default", "eot_tokens": list(TURN_TERMINATORS), "datasets": [entry("train")]})
    if "test" in source.present:
        config["test_datasets"] = [entry("test")]
    config.update({"sequence_len": context["max_seq_length"], "output_dir": f"./outputs/{source.dataset.name}-{source.dataset.version}"})
    header = textwrap.dedent(f"""\
        # Axolotl config for {source.dataset.name} {source.dataset.version}, written by `python pipeline.py export --format axolotl`.
        # message_field_training: weight trains each assistant message unless its `weight` is 0, as OpenAI does;
        # eot_tokens: the turn-ending tokens of common templates, so the end of each trained turn is trained even where
        # it is not the tokenizer's eos_token (Axolotl warns about, and skips, those your model's template lacks).
        # {'Check' if context.get('base_model') else 'Set'} base_model and add your training settings (adapter, lora_*, num_epochs,
        # micro_batch_size, learning_rate…), then: axolotl train {final / 'axolotl.yaml'}
        """)
    (out / "axolotl.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                      encoding="utf-8")
    return Written([f"{s}.jsonl" for s in source.present] + ["axolotl.yaml"],
                   "every assistant message without weight 0 (message_field_training: weight)",
                   [f"axolotl train {final / 'axolotl.yaml'}"])


def read_axolotl(out: Path, split: str) -> list[Conversation]:
    config = yaml.safe_load((out / "axolotl.yaml").read_text(encoding="utf-8"))
    entry = (config["datasets"] if split == "train" else config["test_datasets"])[0]
    roles, flag = entry["roles_to_train"], entry["message_field_training"]
    convs = []
    for row in _read_jsonl(out / Path(entry["path"]).name):
        turns = []
        for m in row[entry["field_messages"]]:
            train = m.get(flag)
            trained = bool(train) if train is not None else m["role"] in roles
            turns.append((m["role"], m["content"], trained if m["role"] == "assistant" else None))
        convs.append(tuple(turns))
    return convs


# ---- LLaMA-Factory


def _lf_name(source: Source, split: str) -> str:
    return f"{source.dataset.name}_{source.dataset.version}_{split}"


def write_llama_factory(source: Source, out: Path, context: dict[str, Any]) -> Written:
    last = only_last_trained(source, "LLaMA-Factory")
    for split in source.present:
        for n, conv in enumerate(source.conversations(split), start=1):
            roles = [r for r, _, _ in conv]
            body = roles[1:] if roles[:1] == ["system"] else roles
            if len(body) % 2 or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(body)):
                raise ExportError(f"LLaMA-Factory needs a system message first (optional), then user and assistant "
                                  f"messages taking turns, ending with the assistant; {split}.jsonl line {n} has "
                                  f"{', '.join(roles)}")
        _write_jsonl(out / f"{split}.jsonl", ({"messages": _plain(r["messages"])} for r in source.splits[split]))
    info = {_lf_name(source, split): {
        "file_name": f"{split}.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}} for split in source.present}
    (out / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    final = context["final"]
    train: dict[str, Any] = {}
    if context.get("base_model"):
        train["model_name_or_path"] = context["base_model"]
    train.update({"stage": "sft", "do_train": True, "finetuning_type": "lora", "dataset_dir": str(final),
                  "dataset": _lf_name(source, "train")})
    if "test" in source.present:
        train["eval_dataset"] = _lf_name(source, "test")
    train.update({"cutoff_len": context["max_seq_length"], "mask_history": last,
                  "output_dir": f"./outputs/{source.dataset.name}-{source.dataset.version}"})
    header = textwrap.dedent(f"""\
        # LLaMA-Factory config for {source.dataset.name} {source.dataset.version}, written by `python pipeline.py export --format llama-factory`.
        # mask_history: {str(last).lower()} trains {'only the last assistant message' if last else 'every assistant message'}, as the dataset's weights say.
        # {'Check' if context.get('base_model') else 'Set'} model_name_or_path and add your training settings, then:
        # llamafactory-cli train {final / 'llamafactory.yaml'}
        # `template` is left unset: LLaMA-Factory then parses the tokenizer's own chat template, the one the model is served
        # with; set it (qwen, llama3, …) to use LLaMA-Factory's copy of a model family's template instead.
        """)
    (out / "llamafactory.yaml").write_text(header + yaml.safe_dump(train, sort_keys=False, allow_unicode=True),
                                           encoding="utf-8")
    return Written([f"{s}.jsonl" for s in source.present] + ["dataset_info.json", "llamafactory.yaml"],
                   "the last assistant message only (mask_history: true)" if last else "every assistant message",
                   [f"llamafactory-cli train {final / 'llamafactory.yaml'}  (dataset_dir {final}, dataset "
                    f"{_lf_name(source, 'train')})"])


def read_llama_factory(out: Path, split: str) -> list[Conversation]:
    """As LLaMA-Factory's sharegpt converter and supervised processor read it."""
    config = yaml.safe_load((out / "llamafactory.yaml").read_text(encoding="utf-8"))
    name = config["dataset"] if split == "train" else config["eval_dataset"]
    attr = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))[name]
    tags, column = attr["tags"], attr["columns"]["messages"]
    convs = []
    for row in _read_jsonl(out / attr["file_name"]):
        messages = row[column]
        turns: list[Turn] = []
        if messages and messages[0][tags["role_tag"]] == tags["system_tag"]:
            turns.append(("system", messages[0][tags["content_tag"]], None))
            messages = messages[1:]
        expected = (tags["user_tag"], tags["assistant_tag"])
        if len(messages) % 2 or any(m[tags["role_tag"]] != expected[i % 2] for i, m in enumerate(messages)):
            convs.append(())  # LLaMA-Factory skips it as an abnormal example
            continue
        answers = len(messages) // 2
        for i, m in enumerate(messages):
            if m[tags["role_tag"]] == tags["assistant_tag"]:
                trained = not config["mask_history"] or i // 2 == answers - 1
                turns.append(("assistant", m[tags["content_tag"]], trained))
            else:
                turns.append(("user", m[tags["content_tag"]], None))
        convs.append(tuple(turns))
    return convs


# ---- Hugging Face dataset (Parquet in the hub's layout)


def _require_arrow(fmt: str) -> None:
    missing = [name for name in ("pyarrow", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format {fmt} writes Parquet and is checked with the `datasets` library (missing: "
                          f"{', '.join(missing)}); install them from the project folder with: "
                          "python -m pip install -e '.[local]'")


def write_hf_dataset(source: Source, out: Path, context: dict[str, Any]) -> Written:
    _require_arrow("hf-dataset")
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("weight", pa.int64())])
    schema = pa.schema([("messages", pa.list_(message))])
    (out / "data").mkdir()
    files = []
    for split in source.present:
        rows = [{"messages": [{"role": m["role"], "content": _text(m.get("content")), "weight": m.get("weight")}
                              for m in r["messages"]]} for r in source.splits[split]]
        name = f"data/{split}-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / name)
        files.append(name)
    card = {"configs": [{"config_name": "default", "data_files": [
        {"split": split, "path": f"data/{split}-*.parquet"} for split in source.present]}]}
    (out / "README.md").write_text(
        "---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n"
        f"# {source.dataset.name} {source.dataset.version}\n\nChat fine-tuning examples built by crawl2tune from crawled "
        "documentation. Each row holds `messages` (role, content, weight); an assistant message is trained unless "
        "its `weight` is 0 (a missing weight means 1).\n", encoding="utf-8")
    final = context["final"]
    return Written(files + ["README.md"], "every assistant message without weight 0 (the `weight` column)",
                   [f"ds = datasets.load_dataset({str(final)!r})",
                    f"huggingface-cli upload <you>/{source.dataset.name} {final} --repo-type dataset  (to share it on the hub)"])


def read_hf_dataset(out: Path, split: str) -> list[Conversation]:
    import datasets

    with tempfile.TemporaryDirectory(prefix="crawl2tune-export-cache-") as cache:
        quiet = datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        try:
            rows = datasets.load_dataset(str(out), split=split, cache_dir=cache).to_list()
        finally:
            if not quiet:
                datasets.enable_progress_bars()
    return [conversation([{k: v for k, v in m.items() if v is not None} for m in row["messages"]]) for row in rows]


WRITERS: dict[str, tuple[Callable[[Source, Path, dict[str, Any]], Written], Callable[[Path, str], list[Conversation]]]] = {
    "trl": (write_trl, read_trl),
    "axolotl": (write_axolotl, read_axolotl),
    "llama-factory": (write_llama_factory, read_llama_factory),
    "hf-dataset": (write_hf_dataset, read_hf_dataset),
}


# --------------------------------------------------------------------------------------------------
# export


@dataclass(frozen=True)
class Exported:
    dir: Path
    format: str
    source: Source
    files: list[str]
    trained: str
    usage: list[str]

    def count(self, split: str) -> int:
        return len(self.source.splits[split])


def _differs(want: list[Conversation], got: list[Conversation]) -> str | None:
    if len(want) != len(got):
        return f"{len(got)} examples instead of {len(want)}"
    for n, (a, b) in enumerate(zip(want, got), start=1):
        if a != b:
            if [(r, c) for r, c, _ in a] != [(r, c) for r, c, _ in b]:
                return f"line {n}: the conversation differs"
            return (f"line {n}: trained turns {[i for i, t in enumerate(a) if t[2]]} became "
                    f"{[i for i, t in enumerate(b) if t[2]]}")
    return None


def export(config: Any, fmt: str, *, dataset: str = "latest", out: Path | None = None) -> Exported:
    if fmt not in WRITERS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    source = read_source(datasets_root(config), dataset)
    final = Path(out).resolve() if out else source.dataset.dir / "exports" / fmt
    if final.exists() and not (final / "export.json").is_file() and (not final.is_dir() or any(final.iterdir())):
        raise ExportError(f"{final} exists and is not an earlier export (it has no export.json); pass --out a new or "
                          "empty folder, nothing was written")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write, read = WRITERS[fmt]
        context = {"final": final, "base_model": config.finetune.base_model,
                   "max_seq_length": config.finetune.max_seq_length}
        written = write(source, tmp, context)
        for split in source.present:
            problem = _differs(source.conversations(split), read(tmp, split))
            if problem:
                raise ExportError(f"the {fmt} export of {source.dataset.name} {source.dataset.version} does not read back as the "
                                  f"version: {split}.jsonl {problem}; nothing was published")
        record = {
            "format": fmt, "dataset": source.dataset.name, "version": source.dataset.version, "source": str(source.dataset.dir),
            "counts": {s: len(source.splits[s]) for s in SPLITS},
            "files": {name: sha256_file(tmp / name) for name in written.files},
            "trained": written.trained,
            "round_trip": f"ok: read back as {fmt} reads it, every conversation and its trained turns match",
            "usage": written.usage,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "export.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(final, fmt, source, written.files + ["export.json"], written.trained, written.usage)

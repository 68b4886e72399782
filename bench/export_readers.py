"""The Axolotl and LLaMA-Factory exports read by the tools' own dataset code, their trained tokens compared with ours.

`export` checks its files against re-implementations of how the trainers read them; this bench loads them with
the real code instead: Axolotl's `load_cfg` + `load_datasets` (what `axolotl preprocess` runs) on the exported
axolotl.yaml, LLaMA-Factory's `get_train_args` + `get_dataset` (the first steps of `llamafactory-cli train`) on
llamafactory.yaml and dataset_info.json. Each tool's input_ids and labels are compared, example by example, with
what our local trainer lays out for the same example (finetune/local/chat_template.py): the same token ids, and
the same tokens trained (labels != -100 against our loss mask).

Datasets: the version the sample run built (`python pipeline.py run`, or --dataset DIR), and two multi-turn
versions built here from the same crawl (section granularity, two turns per example; train_on last and all), so
per-message weights (Axolotl) and mask_history (LLaMA-Factory) are both exercised. Tokenizers: byte-level BPEs
trained here on the dataset's text, each with a chat template in the shape of a model family (the tests' plain
one; ChatML with the eos_token of a Qwen instruct model and of a base one; Llama-3's headers and BOS); nothing is
downloaded. LLaMA-Factory is given no `template`, as the export leaves it, so it parses the tokenizer's own.
sequence_len / cutoff_len are raised above the longest example: the tools cut long examples differently (Axolotl
drops them, LLaMA-Factory shortens prompt and answer in proportion, our trainer cuts the end), which is not what
is compared here.

The two tools cannot share an environment with each other or with this project (Axolotl 0.21 pins trl 1.14 and
transformers 5.20 and asks for Python 3.12; LLaMA-Factory 0.9.5 needs trl <= 0.24, transformers <= 5.6, datasets
<= 4), so there is no extra for them: each goes in its own virtualenv over the system's torch 2.13 and
transformers, without its pinned dependencies (their dataset code runs with these), and each reader runs in a
child process of the interpreter named for it. What was installed here (from the repository root):

    python -m venv --system-site-packages ../venv-axolotl
    ../venv-axolotl/bin/pip install --no-deps --ignore-requires-python axolotl==0.21.0 addict posthog==6.7.11 \
        backoff distro "numba>=0.63.1,<1" llvmlite termcolor
    python -m venv --system-site-packages ../venv-llamafactory
    ../venv-llamafactory/bin/pip install --no-deps llamafactory==0.9.5 omegaconf trl==0.24.0
    # LLaMA-Factory imports torchaudio at module level (for audio files only); PyPI's newest (2.11) does not load
    # with torch 2.13, so an empty package stands in for it:
    ../venv-llamafactory/bin/python -c "import pathlib, site; p = pathlib.Path(site.getsitepackages()[0], \
        'torchaudio'); p.mkdir(); (p / '__init__.py').write_text('')"

    python pipeline.py run    # the sample's dataset version
    python bench/export_readers.py --axolotl-python ../venv-axolotl/bin/python \
        --llamafactory-python ../venv-llamafactory/bin/python [--dataset DIR] [--templates plain,chatml,llama3]

A reader whose interpreter cannot import its tool is skipped with a line saying so; with neither, the bench
exits 0 after saying how to install them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE_CONFIG = REPO / "configs" / "example.yaml"
READERS = {"axolotl": "axolotl", "llama-factory": "llamafactory"}  # export format -> the module its tool installs
TEMPLATES = {  # name -> (chat template, special tokens, eos, bos); chatml-base: ChatML on a base model's tokenizer,
    # whose eos_token is not the turn's end (as Qwen2.5's base models: <|endoftext|>, turns end with <|im_end|>)
    "plain": ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
              "{% if add_generation_prompt %}<|assistant|>{% endif %}",
              ["<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|end|>", None),
    "chatml": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
               ["<pad>", "<|im_start|>", "<|im_end|>"], "<|im_end|>", None),
    "chatml-base": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
                    ["<pad>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"], "<|endoftext|>", None),
    "llama3": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
               ["<pad>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|eot_id|>", "<|begin_of_text|>"),
}
MULTI_TURN = {"multi-turn, train_on last": {"granularity": "section", "turns_per_example": 2, "train_on": "last"},
              "multi-turn, train_on all": {"granularity": "section", "turns_per_example": 2, "train_on": "all"}}
INSTALL = ("install each tool in its own virtualenv and name its interpreter with --axolotl-python / "
           "--llamafactory-python (the commands are in this script's docstring)")


# --------------------------------------------------------------------------------------------------
# the child: one tool reads one export and writes its input_ids and labels


def read_with_axolotl(export: Path, tokenizer: str, seq: int, work: Path) -> dict[str, list[dict]]:
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets

    cfg = load_cfg(str(export / "axolotl.yaml"), base_model=tokenizer, sequence_len=seq, micro_batch_size=1,
                   gradient_accumulation_steps=1, num_epochs=1, learning_rate=1e-4, output_dir=str(work / "out"),
                   dataset_prepared_path=str(work / "prepared"), shuffle_merged_datasets=False, dataset_num_proc=1)
    meta = load_datasets(cfg=cfg)
    splits = {"train": meta.train_dataset, "test": meta.eval_dataset}
    return {s: [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds] for s, ds in splits.items() if ds}


def read_with_llama_factory(export: Path, tokenizer: str, seq: int, work: Path) -> dict[str, list[dict]]:
    import yaml
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = yaml.safe_load((export / "llamafactory.yaml").read_text(encoding="utf-8"))
    args.update(model_name_or_path=tokenizer, output_dir=str(work / "out"), cutoff_len=seq, overwrite_cache=True,
                report_to="none")
    model_args, data_args, training_args, _, _ = get_train_args(args)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    data = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)
    splits = {"train": data.get("train_dataset"), "test": data.get("eval_dataset")}
    return {s: [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds] for s, ds in splits.items() if ds}


def child(args: argparse.Namespace) -> int:
    module = READERS[args.read]
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1",  # before the
                       "DO_NOT_TRACK": "1", "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"})  # hub is imported
    try:
        tool = __import__(module)
    except Exception as exc:  # a missing or broken install is reported by the parent, in one line
        print(f"{type(exc).__name__}: {exc}".splitlines()[0])
        return 3
    if args.jobs is None:
        print(getattr(tool, "__version__", "?"))
        return 0
    read = read_with_axolotl if args.read == "axolotl" else read_with_llama_factory
    jobs = json.loads(Path(args.jobs).read_text(encoding="utf-8"))
    for job in jobs:
        with tempfile.TemporaryDirectory(prefix="export-readers-") as work:
            rows = read(Path(job["export"]), job["tokenizer"], job["seq"], Path(work))
        Path(job["out"]).write_text(json.dumps(rows), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------------
# the parent: versions, tokenizers, exports, and the comparison


def versions(args: argparse.Namespace, work: Path) -> list[tuple[str, Path]]:
    """(label, version folder): the sample's version, and the multi-turn ones built from the same crawl state."""
    import yaml
    from configs import load_config
    from transforms.build import build
    from transforms.version import resolve

    root = REPO / "data" / "output"
    found = Path(args.dataset).resolve() if args.dataset else None
    if found is None:
        candidates = sorted((root / "datasets").glob("*/latest"))
        found = candidates[0].resolve() if candidates else None
    if found is None or not (found / "train.jsonl").is_file():
        raise SystemExit(f"error: no dataset version at {args.dataset or root / 'datasets'}; run `python pipeline.py "
                         "run` first (it builds the sample), or pass --dataset DIR")
    out = [(f"{found.parent.name} {found.name}", found)]
    state = root / "state.sqlite"
    if args.dataset is None and state.is_file():
        raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
        for label, settings in MULTI_TURN.items():
            folder = work / "builds" / label.split(", ")[1].replace(" ", "-")
            folder.mkdir(parents=True)
            shutil.copy(state, folder / "state.sqlite")
            config = load_config(SAMPLE_CONFIG, output_dir=str(folder), dataset={**raw["dataset"], **settings})
            build(config)
            version = resolve(folder / "datasets" / config.dataset.name, "latest")
            out.append((label, version.dir))
    return out


def make_tokenizer(name: str, corpus: list[str], folder: Path) -> Path:
    """A byte-level BPE trained on the dataset's text with the named chat template, and a model config beside it
    (both tools read the model's config before anything else); no weights."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    template, special, eos, bos = TEMPLATES[name]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=special, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:  # as Llama-3's tokenizer.json does: encoding text starts with the BOS, and so does the template
        bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bpe.token_to_id(bos))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, pad_token="<pad>", bos_token=bos,
                                        chat_template=template)
    tokenizer.save_pretrained(folder)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=65536,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id).save_pretrained(folder)
    return folder


def split_rows(version: Path) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "test"):
        path = version / f"{split}.jsonl"
        if path.is_file():
            out[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


def ours(tokenizer, rows: dict[str, list[dict]]) -> dict[str, list[tuple[list[int], set[int]]]]:
    """Our local trainer's layout of each example: its token ids and the positions it trains."""
    from finetune.local.chat_template import encode

    laid = {}
    for split, examples in rows.items():
        laid[split] = []
        for example in examples:
            enc = encode(tokenizer, example)
            laid[split].append((enc.input_ids, {i for i, m in enumerate(enc.assistant_masks) if m}))
    return laid


def compare(tokenizer, mine: dict, theirs: dict, tool: str) -> dict:
    """Counts, the first mismatch in detail, and the tokens only one side trains across every example."""
    stats = {"compared": 0, "identical": 0, "ours": 0, "theirs": 0, "first": None,
             "ours_only": Counter(), "theirs_only": Counter()}
    for split, laid in mine.items():
        got = theirs.get(split, [])
        if len(got) != len(laid) and stats["first"] is None:
            stats["first"] = f"{split}.jsonl: {tool} yields {len(got)} examples, the version has {len(laid)}"
        for n, ((ids, trained), row) in enumerate(zip(laid, got), start=1):
            their_ids = row["input_ids"]
            their_trained = {i for i, label in enumerate(row["labels"]) if label != -100}
            stats["compared"] += 1
            stats["ours"] += len(trained)
            stats["theirs"] += len(their_trained)
            if ids == their_ids and trained == their_trained:
                stats["identical"] += 1
                continue
            if ids != their_ids:
                at = next((i for i, (a, b) in enumerate(zip(ids, their_ids)) if a != b), min(len(ids), len(their_ids)))
                detail = (f"{split}.jsonl line {n}: the token ids differ from position {at} ({len(ids)} ours, "
                          f"{len(their_ids)} {tool}): ours {tokenizer.decode(ids[at:at + 8])!r}, "
                          f"{tool} {tokenizer.decode(their_ids[at:at + 8])!r}")
            else:
                only_ours, only_theirs = sorted(trained - their_trained), sorted(their_trained - trained)
                stats["ours_only"].update(tokenizer.decode([ids[i]]) for i in only_ours)
                stats["theirs_only"].update(tokenizer.decode([ids[i]]) for i in only_theirs)
                detail = (f"{split}.jsonl line {n}: same {len(ids)} token ids; ours trains {len(trained)}, {tool} "
                          f"{len(their_trained)}; trained only by ours: {_show(tokenizer, ids, only_ours)}; only by "
                          f"{tool}: {_show(tokenizer, ids, only_theirs)}")
            if stats["first"] is None:
                stats["first"] = detail
    return stats


def _show(tokenizer, ids: list[int], positions: list[int]) -> str:
    if not positions:
        return "none"
    shown = ", ".join(f"{i} {tokenizer.decode([ids[i]])!r} after {tokenizer.decode(ids[max(0, i - 3):i])!r}"
                      for i in positions[:3])
    return shown + (f" (+{len(positions) - 3} more)" if len(positions) > 3 else "")


def run_reader(python: str, fmt: str, jobs: list[dict], work: Path) -> list[dict]:
    """One child process of the tool's interpreter reads every export; returns its rows, job by job."""
    for n, job in enumerate(jobs):
        job["out"] = str(work / f"{fmt}-read-{n}.json")
    (work / f"{fmt}-jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    log = work / f"{fmt}.log"
    with open(log, "w") as f:
        done = subprocess.run([python, __file__, "--read", fmt, "--jobs", str(work / f"{fmt}-jobs.json")],
                              stdout=f, stderr=subprocess.STDOUT, cwd=work)
    if done.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise SystemExit(f"error: {fmt} could not read the exports (exit {done.returncode}):\n  " + "\n  ".join(tail))
    return [json.loads(Path(job["out"]).read_text(encoding="utf-8")) for job in jobs]


def probe(python: str, fmt: str) -> tuple[bool, str]:
    try:
        done = subprocess.run([python, __file__, "--read", fmt], capture_output=True, text=True)
    except OSError as exc:
        return False, f"{exc.strerror or exc}: {python}"
    line = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
    return done.returncode == 0, line


def parent(args: argparse.Namespace) -> int:
    pythons = {fmt: os.path.abspath(p) if os.sep in p else p  # the children run in a temp folder; not resolved:
               for fmt, p in (("axolotl", args.axolotl_python), ("llama-factory", args.llamafactory_python))}  # a venv's python is a link
    usable, missing = {}, []
    for fmt, python in pythons.items():
        ok, line = probe(python, fmt)
        if ok:
            usable[fmt] = (python, line)
        else:
            missing.append(f"{python} cannot import {READERS[fmt]} ({line})")
    if not usable:
        print(f"skipped: {'; '.join(missing)}; {INSTALL}")
        return 0
    for line in missing:
        print(f"skipped one reader: {line}")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        print("skipped: our side needs transformers (python -m pip install -e '.[local]')")
        return 0
    from configs import load_config
    from transforms.export import export

    templates = [t.strip() for t in args.templates.split(",") if t.strip()]
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown:
        print(f"error: unknown template {', '.join(unknown)}; use some of {', '.join(TEMPLATES)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="export-readers-") as tmp:
        work = Path(tmp)
        found = versions(args, work)
        corpus = [m["content"] for _, v in found for rows in split_rows(v).values() for r in rows for m in r["messages"]]
        tokenizers = {name: make_tokenizer(name, corpus, work / "tokenizers" / name) for name in templates}
        tokenizer = {name: AutoTokenizer.from_pretrained(folder) for name, folder in tokenizers.items()}
        cases = []  # (which version, its label, its rows, the template, our layout)
        for n, (label, folder) in enumerate(found):
            rows = split_rows(folder)
            cases += [(n, label, rows, name, ours(tokenizer[name], rows)) for name in templates]
        for fmt, (python, version) in usable.items():
            config = load_config(SAMPLE_CONFIG, output_dir=str(work / "export-config"))
            exports = [export(config, fmt, dataset=str(folder), out=work / "exports" / fmt / str(n)).dir
                       for n, (_, folder) in enumerate(found)]
            jobs = [{"export": str(exports[n]), "tokenizer": str(tokenizers[name]),
                     "seq": max(len(ids) for laid in mine.values() for ids, _ in laid) + 64}
                    for n, _, _, name, mine in cases]
            read = run_reader(python, fmt, jobs, work)
            print(f"{fmt} {version} ({python})")
            totals = Counter()
            for (_, label, rows, name, mine), theirs in zip(cases, read):
                stats = compare(tokenizer[name], mine, theirs, fmt)
                totals.update({k: stats[k] for k in ("compared", "identical", "ours", "theirs")})
                diff = stats["theirs"] - stats["ours"]
                print(f"  {label} ({sum(len(r) for r in rows.values())} examples) · {name} template: "
                      f"{stats['compared']} compared, {stats['identical']} identical; trained tokens ours "
                      f"{stats['ours']:,}, {fmt} {stats['theirs']:,}" + (f" ({diff:+,})" if diff else ""))
                if stats["first"]:
                    print(f"    first mismatch: {stats['first']}")
                for side, counter in (("ours", stats["ours_only"]), (fmt, stats["theirs_only"])):
                    if counter:
                        print(f"    trained only by {side}, over all examples: "
                              + ", ".join(f"{n} × {tok!r}" for tok, n in counter.most_common(4)))
            print(f"  {fmt} in all: {totals['compared']} examples compared, {totals['identical']} identical; trained "
                  f"tokens ours {totals['ours']:,}, {fmt} {totals['theirs']:,}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="a dataset version folder (default: the sample's latest, plus multi-turn builds)")
    parser.add_argument("--templates", default=",".join(TEMPLATES), help="chat templates to lay the examples out with")
    parser.add_argument("--axolotl-python", default=sys.executable, help="an interpreter that imports axolotl")
    parser.add_argument("--llamafactory-python", default=sys.executable, help="an interpreter that imports llamafactory")
    parser.add_argument("--read", choices=list(READERS), help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--jobs", help=argparse.SUPPRESS)  # a JSON list of {export, tokenizer, seq, out}
    args = parser.parse_args(argv)
    return child(args) if args.read else parent(args)


if __name__ == "__main__":
    sys.exit(main())

"""`export`: a version the pipeline built, written for TRL, Axolotl, LLaMA-Factory and as a Hugging Face dataset; each
export is loaded back with the trainer's own loader where it is installed, and a writer that loses anything is
caught by the round-trip check before the export is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dataset_state import page, write_pages
from pipeline import main
from transforms import export as export_module


def page_text(i: int) -> str:
    return (f"# 주제 {i} 안내\n\n주제 {i}는 배치 작업 {i}번을 등록하는 방법을 설명합니다.\n\n## 설정 {i}\n\n관리 화면에서 "
            f"작업 {i}을 선택하고 저장 버튼을 누르면 등록이 끝납니다. Retry policy number {i} applies.\n\n## 오류 {i}\n\n"
            f"오류 코드 E{i:03d}가 나오면 모니터링 화면에서 작업 {i}의 상태를 확인하고 다시 실행합니다.")


def build_project(tmp_path: Path, dataset: str) -> Path:
    """A config and dataset v0001 built by the pipeline from 12 stored pages; returns the config path."""
    from configs import load_config
    from transforms.build import build

    config = tmp_path / "config.yaml"
    config.write_text(f"""
output_dir: out
sources:
  - name: guide
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.25
{dataset}
finetune:
  max_seq_length: 1024
""", encoding="utf-8")
    write_pages(tmp_path / "out", [page(f"t-{i:02d}", page_text(i), title=f"주제 {i} 안내", category="[배치] 운영 가이드")
                                   for i in range(12)])
    build(load_config(config))
    return config


WEIGHTED = "  granularity: section\n  turns_per_example: 2\n  train_on: last\n"


@pytest.fixture
def weighted(tmp_path) -> Path:
    """Multi-turn examples whose earlier answers carry weight 0, and single-turn ones."""
    return build_project(tmp_path, WEIGHTED)


@pytest.fixture
def plain(tmp_path) -> Path:
    """One answer per page, every answer trained."""
    (tmp_path / "plain").mkdir()
    return build_project(tmp_path / "plain", "")


def version_of(config: Path) -> Path:
    return (config.parent / "out" / "datasets" / "guide" / "latest").resolve()


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def trained_turns(messages: list[dict]) -> list[bool]:
    return [m.get("weight", 1) != 0 for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("fmt", export_module.FORMATS)
def test_every_format_is_written_beside_the_version_and_round_trips(weighted, capsys, fmt):
    assert main(["export", "--format", fmt, "--config", str(weighted)]) == 0
    out = capsys.readouterr().out.splitlines()
    version = version_of(weighted)
    folder = version / "exports" / fmt
    assert out[0].startswith(f"exported guide v0001 for {fmt}: train ")
    assert f"→ out/datasets/guide/v0001/exports/{fmt}/ (" in out[0] or str(folder) in out[0]
    assert "round trip checked" in out[1]
    record = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    assert record["round_trip"].startswith("ok") and record["version"] == "v0001"
    assert record["counts"] == {"train": len(rows(version / "train.jsonl")), "test": len(rows(version / "test.jsonl"))}
    for name, digest in record["files"].items():
        import hashlib

        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_trl_gets_prompt_completion_rows_when_only_the_last_answer_is_trained(weighted, capsys):
    datasets = pytest.importorskip("datasets")
    assert main(["export", "--format", "trl", "--config", str(weighted)]) == 0
    folder = version_of(weighted) / "exports" / "trl"
    loaded = datasets.load_dataset("json", data_files={"train": str(folder / "train.jsonl"),
                                                       "test": str(folder / "test.jsonl")})
    source = rows(version_of(weighted) / "train.jsonl")
    assert loaded["train"].column_names == ["prompt", "completion"] and len(loaded["train"]) == len(source)
    for row, original in zip(loaded["train"], source):
        assert row["prompt"] + row["completion"] == [{"role": m["role"], "content": m["content"]}
                                                     for m in original["messages"]]
        assert [m["role"] for m in row["completion"]] == ["assistant"]  # TRL's conversational prompt-completion


def test_trl_gets_messages_rows_when_every_answer_is_trained(plain, capsys):
    assert main(["export", "--format", "trl", "--config", str(plain)]) == 0
    assert "trained: every assistant message" in capsys.readouterr().out
    folder = version_of(plain) / "exports" / "trl"
    assert rows(folder / "train.jsonl") == rows(version_of(plain) / "train.jsonl")


def test_axolotl_reads_the_weights_as_per_message_training_flags(weighted):
    assert main(["export", "--format", "axolotl", "--config", str(weighted)]) == 0
    folder = version_of(weighted) / "exports" / "axolotl"
    config = yaml.safe_load((folder / "axolotl.yaml").read_text(encoding="utf-8"))
    (train,) = config["datasets"]
    assert train["type"] == "chat_template" and train["message_field_training"] == "weight"
    assert train["path"] == str(folder / "train.jsonl") and config["test_datasets"][0]["split"] == "train"
    assert config["sequence_len"] == 1024
    # a turn's end is trained where it is not the eos_token too (Gemma's <end_of_turn>, Qwen base's <|im_end|>…)
    assert train["train_on_eos"] == train["train_on_eot"] == "turn"
    assert {"<|im_end|>", "<|eot_id|>", "<end_of_turn>"} <= set(config["eot_tokens"])
    exported, source = rows(folder / "train.jsonl"), rows(version_of(weighted) / "train.jsonl")
    assert [trained_turns(r["messages"]) for r in exported] == [trained_turns(r["messages"]) for r in source]
    assert any(False in trained_turns(r["messages"]) for r in exported)


def test_llama_factory_trains_only_the_last_turn_with_mask_history(weighted, plain):
    assert main(["export", "--format", "llama-factory", "--config", str(weighted)]) == 0
    folder = version_of(weighted) / "exports" / "llama-factory"
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"guide_v0001_train", "guide_v0001_test"}
    assert info["guide_v0001_train"]["formatting"] == "sharegpt"
    text = (folder / "llamafactory.yaml").read_text(encoding="utf-8")
    train = yaml.safe_load(text)
    assert train["mask_history"] is True and train["dataset_dir"] == str(folder)
    assert "template" not in train and "parses the tokenizer's own chat template" in text
    assert train["dataset"] == "guide_v0001_train" and train["eval_dataset"] == "guide_v0001_test"

    assert main(["export", "--format", "llama-factory", "--config", str(plain)]) == 0
    train = yaml.safe_load((version_of(plain) / "exports" / "llama-factory" / "llamafactory.yaml").read_text())
    assert train["mask_history"] is False


def test_the_hf_dataset_loads_with_load_dataset_and_keeps_the_weights(weighted, tmp_path):
    datasets = pytest.importorskip("datasets")
    assert main(["export", "--format", "hf-dataset", "--config", str(weighted)]) == 0
    folder = version_of(weighted) / "exports" / "hf-dataset"
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    source = rows(version_of(weighted) / "train.jsonl")
    got = [[{k: v for k, v in m.items() if v is not None} for m in r["messages"]] for r in loaded["train"]]
    assert got == [r["messages"] for r in source]


def test_an_export_that_does_not_read_back_is_not_published(weighted, capsys, monkeypatch):
    write, read = export_module.WRITERS["axolotl"]

    def lossy(source, out, context):
        written = write(source, out, context)
        lines = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
        broken = json.loads(lines[2])
        for m in broken["messages"]:
            m.pop("weight", None)  # a writer that forgets the weights
        (out / "train.jsonl").write_text("\n".join(lines[:2] + [json.dumps(broken)] + lines[3:]) + "\n")
        return written

    monkeypatch.setitem(export_module.WRITERS, "axolotl", (lossy, read))
    assert main(["export", "--format", "axolotl", "--config", str(weighted)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ("the axolotl export of guide v0001 does not read back as the version: train.jsonl line 3: trained turns "
            in err) and err.rstrip().endswith("nothing was published")
    assert not (version_of(weighted) / "exports" / "axolotl").exists()
    assert not [p for p in (version_of(weighted) / "exports").iterdir()]


def test_weights_trl_cannot_express_are_refused_for_trl_and_kept_for_axolotl(tmp_path, capsys):
    version = tmp_path / "out" / "datasets" / "guide" / "v0001"
    version.mkdir(parents=True)
    example = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 1},
                            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 0}]}
    (version / "train.jsonl").write_text(json.dumps(example) + "\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text("output_dir: out\nsources:\n  - name: guide\n    start_urls: ['http://guide.example.internal/']\n",
                      encoding="utf-8")
    assert main(["export", "--format", "trl", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "error: TRL trains either every assistant message or only the last one, but train.jsonl line 1 trains others "
        "(its `weight` values); export it with --format axolotl or hf-dataset, which keep per-message weights\n")
    assert main(["export", "--format", "axolotl", "--config", str(config), "--out", str(tmp_path / "ax")]) == 0
    assert rows(tmp_path / "ax" / "train.jsonl") == [example]


def test_exporting_again_replaces_the_previous_export(weighted, tmp_path):
    out = tmp_path / "elsewhere" / "trl"
    assert main(["export", "--format", "trl", "--config", str(weighted), "--out", str(out)]) == 0
    (out / "stale.txt").write_text("left from before")
    first = (out / "train.jsonl").read_bytes()
    assert main(["export", "--format", "trl", "--config", str(weighted), "--out", str(out)]) == 0
    assert (out / "train.jsonl").read_bytes() == first and not (out / "stale.txt").exists()


def test_out_never_replaces_a_folder_that_is_not_an_export(weighted, tmp_path, capsys):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    assert main(["export", "--format", "trl", "--config", str(weighted), "--out", str(mine)]) == 1
    assert capsys.readouterr().err == (f"error: {mine} exists and is not an earlier export (it has no export.json); "
                                       "pass --out a new or empty folder, nothing was written\n")
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]


def test_a_missing_version_says_how_to_build_one(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("output_dir: out\nsources:\n  - name: guide\n    start_urls: ['http://guide.example.internal/']\n",
                      encoding="utf-8")
    assert main(["export", "--format", "trl", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no dataset version with a train.jsonl" in err and "python pipeline.py build" in err


def test_the_readers_bench_skips_in_one_line_without_the_tools(tmp_path):
    """bench/export_readers.py loads the exports with Axolotl's and LLaMA-Factory's own code, each from its own
    virtualenv; without an interpreter that imports them it says so in one line and exits 0."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench" / "export_readers.py"
    missing = tmp_path / "no-venv" / "bin" / "python"
    done = subprocess.run([sys.executable, str(bench), "--axolotl-python", str(missing), "--llamafactory-python",
                           str(missing)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.count("\n") == 1 and done.stdout.startswith(f"skipped: {missing} cannot import axolotl (")
    assert "--axolotl-python / --llamafactory-python" in done.stdout

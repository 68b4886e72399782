"""bench/gpu_train.py on a machine without a GPU: it skips with the reason, and --tiny runs the code path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_why_it_skipped(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load().main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA GPU on this machine")


def test_tiny_trains_lora_on_a_dataset_file_and_prints_tokens_per_second(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    example = {"messages": [{"role": "user", "content": "배치 작업은 어떻게 등록하나요?"},
                            {"role": "assistant", "content": "관리 화면에서 작업을 선택하고 저장합니다."}]}
    train.write_text("\n".join(json.dumps(example, ensure_ascii=False) for _ in range(5)) + "\n", encoding="utf-8")
    assert load().main(["--tiny", "--steps", "2", "--warmup", "1", "--dataset", str(train)]) == 0
    out = capsys.readouterr().out
    assert "tiny: 0.1M params" in out and " tokens/s, loss " in out


def test_mfu_uses_the_detected_gpu_s_dense_bf16_peak():
    bench = load()
    assert bench.peak_flops("NVIDIA H200", None)[0] == 989e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB", None)[0] == 312e12
    assert bench.peak_flops("Mystery GPU", None)[0] is None
    assert bench.peak_flops("Mystery GPU", 100)[0] == 100e12

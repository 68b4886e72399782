"""`models merge local:<job> --out DIR`: the base model with a job's LoRA adapter folded in, as a plain model
folder (weights, config, tokenizer with the chat template trained with) that vLLM, llama.cpp's converter, Ollama
or transformers load without PEFT."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from finetune.backend import Refused
from finetune.local.backend import LocalBackend
from finetune.local.models import Device, load_model, load_tokenizer, require_dependencies


def merge(backend: LocalBackend, model: str, out: Path) -> Path:
    """Write the merged model to `out` (atomically: a folder beside it, renamed when complete)."""
    require_dependencies("models merge")
    from peft import PeftModel

    ref = backend.resolve_model(model)
    if ref.adapter is None:
        raise Refused(f"{model} is a full fine-tune, already a model folder ({ref.base}); there is nothing to merge")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise Refused(f"{out} exists and is not empty; pass another --out or remove it")
    tuned = PeftModel.from_pretrained(load_model(ref.base, Device("cpu", "cpu")), str(ref.adapter))
    merged = tuned.merge_and_unload()
    tokenizer = load_tokenizer(str(ref.adapter) if (ref.adapter / "tokenizer_config.json").is_file() else ref.base)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out

"""Answering chat messages with a local base model or a tuned adapter, for `evaluate` through the local backend.

A base model is loaded once per process; every adapter trained from it is attached to that one copy (PEFT), and
base answers are generated with the adapters disabled, so comparing base and tuned costs one model's memory.
Generation is serialised by a lock: `evaluate` asks from several threads, and one model on one device answers
one question at a time anyway.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.backend import ChatReply
from finetune.local_models import Device, load_model, load_tokenizer, pick_device, require_dependencies
from finetune.local_tokenize import template_messages

DEFAULT_MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class ModelRef:
    """What to load: a base model (folder or hub id) and, for a tuned one, the adapter folder on top of it."""

    base: str
    adapter: Path | None = None


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: Device
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> PEFT adapter name


class LocalModels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, _Loaded] = {}

    def _load(self, ref: ModelRef) -> tuple[_Loaded, str | None]:
        entry = self._loaded.get(ref.base)
        if entry is None:
            require_dependencies("answering with a local model")
            device = pick_device()
            tokenizer = load_tokenizer(ref.base)
            model = load_model(ref.base, device).to(device.type).eval()
            entry = self._loaded[ref.base] = _Loaded(model, tokenizer, device)
        if ref.adapter is None:
            return entry, None
        key = str(ref.adapter)
        if key not in entry.adapters:
            from peft import PeftModel

            name = f"adapter{len(entry.adapters)}"
            if isinstance(entry.model, PeftModel):
                entry.model.load_adapter(key, adapter_name=name)
            else:
                entry.model = PeftModel.from_pretrained(entry.model, key, adapter_name=name).eval()
            entry.adapters[key] = name
        return entry, entry.adapters[key]

    def chat(self, ref: ModelRef, messages: list[dict[str, Any]], *, temperature: float,
             max_tokens: int | None = None) -> ChatReply:
        import torch

        with self._lock:
            entry, adapter = self._load(ref)
            tokenizer, model = entry.tokenizer, entry.model
            prompt = tokenizer.apply_chat_template(template_messages(messages), add_generation_prompt=True,
                                                   tokenize=True, return_dict=True, return_tensors="pt")
            prompt = {k: v.to(entry.device.type) for k, v in prompt.items()}
            settings: dict[str, Any] = {"max_new_tokens": max_tokens or DEFAULT_MAX_NEW_TOKENS,
                                        "do_sample": temperature > 0, "pad_token_id": tokenizer.pad_token_id}
            if temperature > 0:
                settings["temperature"] = temperature
            if entry.adapters and adapter is None:
                context: Any = model.disable_adapter()  # the base model's own answer
            else:
                context = nullcontext()
                if adapter is not None:
                    model.set_adapter(adapter)
            with torch.inference_mode(), context:
                output = model.generate(**prompt, **settings)
        new = output[0, prompt["input_ids"].shape[1]:].tolist()
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
        return ChatReply(text=tokenizer.decode(new, skip_special_tokens=True).strip(),
                         finish_reason="stop" if stops & set(new) else "length",
                         prompt_tokens=int(prompt["input_ids"].shape[1]), completion_tokens=len(new))

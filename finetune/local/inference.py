"""Answering chat messages with a local base model or a tuned adapter, for `evaluate` through the local backend.

A base model is loaded once per process; every adapter trained from it is attached to that one copy (PEFT), and
base answers are generated with the adapters disabled, so comparing base and tuned costs one model's memory.
Generation is serialised by a lock: `evaluate` asks from several threads, and one model on one device answers
one question at a time anyway.

The sampling settings mean what they mean at the chat completions API: temperature 0 is greedy decoding,
top_p is nucleus sampling with no top-k cut, and the frequency and presence penalties are the API's own
formula (`Penalties`), not transformers' multiplicative repetition penalty, which is switched off together
with any sampling defaults the model's generation_config brings (Qwen's top_k 20, repetition_penalty 1.05).
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.backend import ChatReply
from finetune.local.chat_template import template_messages
from finetune.local.models import Device, load_model, load_tokenizer, pick_device, require_dependencies

if TYPE_CHECKING:
    from configs import SamplingConfig

DEFAULT_MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class Penalties:
    """The chat completions API's penalties as a logits processor: a token's logit is lowered by
    `frequency` times the number of times it was generated so far, plus `presence` once it was generated at all.
    Only the answer counts, not the prompt (`prompt_length` tokens), as at the API."""

    prompt_length: int
    frequency: float
    presence: float

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


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

    def chat(self, ref: ModelRef, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        import torch

        with self._lock:
            entry, adapter = self._load(ref)
            tokenizer, model = entry.tokenizer, entry.model
            prompt = tokenizer.apply_chat_template(template_messages(messages), add_generation_prompt=True,
                                                   tokenize=True, return_dict=True, return_tensors="pt")
            prompt = {k: v.to(entry.device.type) for k, v in prompt.items()}
            length = int(prompt["input_ids"].shape[1])
            greedy = sampling.temperature == 0
            settings: dict[str, Any] = {"max_new_tokens": sampling.max_tokens or DEFAULT_MAX_NEW_TOKENS,
                                        "do_sample": not greedy, "repetition_penalty": 1.0,
                                        "pad_token_id": tokenizer.pad_token_id}
            if not greedy:
                settings.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                                num_return_sequences=sampling.n)
            if sampling.frequency_penalty or sampling.presence_penalty:
                from transformers import LogitsProcessorList

                settings["logits_processor"] = LogitsProcessorList([Penalties(length, sampling.frequency_penalty,
                                                                              sampling.presence_penalty)])
            if entry.adapters and adapter is None:
                context: Any = model.disable_adapter()  # the base model's own answer
            else:
                context = nullcontext()
                if adapter is not None:
                    model.set_adapter(adapter)
            with torch.inference_mode(), context:
                output = model.generate(**prompt, **settings)
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
        replies = []
        for row in output[:, length:].tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in stops), None)
            new = row[:end]
            replies.append(ChatReply(text=tokenizer.decode(new, skip_special_tokens=True).strip(),
                                     finish_reason="stop" if end else "length", prompt_tokens=length,
                                     completion_tokens=len(new)))
        return replies * sampling.n if greedy else replies  # greedy answers are all alike: one, handed out n times

"""`generate` with `provider: local`: an open-weights chat model on this machine (transformers, the `local` extra)
behind the one call of the openai SDK that generation makes, `chat.completions.create`.

Generation's threads each ask for one section; a single worker thread gathers the requests that arrive together
(up to `batch_size`, waiting at most `GATHER_SECONDS` for more) and answers them in one left-padded `generate`
call, so `concurrency` is the batch size. transformers and torch are imported when the model is loaded.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

GATHER_SECONDS = 0.02


@dataclass
class _Ask:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    seed: int | None
    answer: Future = field(default_factory=Future)


class LocalChat:
    """A local causal LM answering `chat.completions.create(model=…, messages=…, max_tokens=…, temperature=…)`."""

    def __init__(self, model: str, batch_size: int):
        self.model_name = model
        self.base_url = f"local:{model}"
        self.batch_size = batch_size
        self.batches: list[int] = []  # the size of every batch generated, for the curious (and the tests)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))
        self._asks: queue.Queue[_Ask] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._loaded: tuple[Any, Any] | None = None

    def create(self, *, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0,
               seed: int | None = None, **_: Any) -> Any:
        """Answer as the SDK would: `.choices[0].message.content` and `.usage`; response_format is not
        enforced (the reply is parsed from its text)."""
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="local-chat", daemon=True)
                self._worker.start()
        ask = _Ask(messages, max_tokens, temperature, seed)
        self._asks.put(ask)
        return ask.answer.result()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transforms.generate import GenerateError

            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError:
                raise GenerateError("dataset.generate.provider local needs transformers and torch: "
                                    "python -m pip install -e '.[local]'") from None
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                model = AutoModelForCausalLM.from_pretrained(self.model_name)
            except OSError as exc:
                raise GenerateError(f"dataset.generate.model {self.model_name!r}: cannot load it ({' '.join(str(exc).split())[:200]}); "
                                    "give a local model folder or a hub id in the cache (HF_HUB_OFFLINE=1)") from None
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.eval()
            self._loaded = tokenizer, model
        return self._loaded

    def _serve(self) -> None:
        while True:
            batch = [self._asks.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._asks.get(timeout=GATHER_SECONDS))
                except queue.Empty:
                    break
            try:
                answers = self._generate(batch)
            except Exception as exc:  # noqa: BLE001 - handed to the asking thread, which reports it
                for ask in batch:
                    ask.answer.set_exception(exc)
                continue
            for ask, answer in zip(batch, answers):
                ask.answer.set_result(answer)

    def _generate(self, batch: list[_Ask]) -> list[Any]:
        import torch

        tokenizer, model = self._load()
        self.batches.append(len(batch))
        prompts = [tokenizer.apply_chat_template(a.messages, tokenize=False, add_generation_prompt=True) for a in batch]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sample = batch[0].temperature > 0  # a batch samples as its first request asks (all but the judge's alike)
        if batch[0].seed is not None:
            torch.manual_seed(batch[0].seed)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max(a.max_tokens for a in batch), do_sample=sample,
                                    temperature=batch[0].temperature if sample else None, top_p=None, top_k=None,
                                    pad_token_id=tokenizer.pad_token_id)
        width = inputs["input_ids"].shape[1]
        answers = []
        for row, mask, ask in zip(output, inputs["attention_mask"], batch):
            new = row[width:][: ask.max_tokens]
            text = tokenizer.decode(new, skip_special_tokens=True)
            usage = SimpleNamespace(prompt_tokens=int(mask.sum()), completion_tokens=int((new != tokenizer.pad_token_id).sum()))
            answers.append(SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))], usage=usage))
        return answers

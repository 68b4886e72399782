"""Loading open-weights models for the local backend: the optional dependencies, the device, and offline loading.

Everything here fails with one line that says what to do: a missing package names the install command, and a
model that is neither a folder nor in the Hugging Face cache says so (and whether HF_HUB_OFFLINE forbade the
download) instead of a traceback from deep inside the hub client. The heavy imports happen inside the
functions, so `jobs list` or `--help` never pay for torch.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.backend import FinetuneError, Refused

REQUIRED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
INSTALL = "python -m pip install -e '.[local]'"


class MissingDependencies(Refused):
    """The local backend's optional packages are not installed."""


class ModelUnavailable(FinetuneError):
    """The base model (or an adapter) cannot be loaded from disk or the hub cache."""


def missing_dependencies() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def require_dependencies(what: str = "the local fine-tuning backend") -> None:
    missing = missing_dependencies()
    if missing:
        raise MissingDependencies(
            f"{what} needs {', '.join(REQUIRED)} (missing: {', '.join(missing)}); install them from the project "
            f"folder with: {INSTALL}"
        )


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_local(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name


def _unavailable(name: str, reason: str | None = None) -> ModelUnavailable:
    if looks_like_path(name):
        return ModelUnavailable(f"model {name!r} is not a folder holding a model (config.json and weights); set "
                                "finetune.base_model to the folder's path or to a Hugging Face hub id")
    why = f" ({reason})" if reason else ""
    if offline():
        return ModelUnavailable(
            f"model {name!r} is not available offline: it is not a local folder nor in the Hugging Face cache"
            f"{why}, and HF_HUB_OFFLINE=1 forbids downloading it; download it where there is network "
            f"(`huggingface-cli download {name}`) and copy the cache (HF_HOME), or set finetune.base_model to a "
            "local folder"
        )
    return ModelUnavailable(
        f"model {name!r} could not be loaded from the Hugging Face hub nor its cache{why}; check the name, or "
        f"download it where there is network (`huggingface-cli download {name}`), copy the cache (HF_HOME) and "
        "set HF_HUB_OFFLINE=1, or set finetune.base_model to a local folder"
    )


def check_available(name: str) -> None:
    """Cheap check before a job starts: a folder with a config.json, or (offline) a hub id already cached."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _unavailable(name)
        return
    if looks_like_path(name):
        raise _unavailable(name)
    if offline():
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        if not isinstance(found, str):
            raise _unavailable(name)


def _one_line(exc: BaseException) -> str:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first[:300]


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if is_local(name) else name)
    except OSError as exc:
        raise _unavailable(name, _one_line(exc)) from None
    except ValueError as exc:
        raise ModelUnavailable(f"the tokenizer of {name!r} cannot be loaded: {_one_line(exc)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ModelUnavailable(f"the tokenizer of {name!r} has no chat template, so chat examples cannot be laid "
                               "out the way the model expects; use an instruct/chat variant of the model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass(frozen=True)
class Device:
    type: str  # cuda or cpu
    label: str  # what the job log says

    @property
    def dtype(self) -> Any:
        import torch

        if self.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32


def pick_device() -> Device:
    """The GPU when there is one (CUDA), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return Device("cuda", f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU)")
    return Device("cpu", f"cpu ({os.cpu_count()} cores, no GPU found)")


def load_model(name: str, device: Device) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(Path(name).expanduser()) if is_local(name) else name,
                                                    dtype=device.dtype)
    except OSError as exc:
        raise _unavailable(name, _one_line(exc)) from None
    except ValueError as exc:
        raise ModelUnavailable(f"{name!r} cannot be loaded as a causal language model: {_one_line(exc)}") from None

"""What a local job was trained with, pinned in its request: the base model's revision, its tokenizer and the
sha256 of the chat template, so training and serving can be checked to use the same template."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from finetune.local.models import is_local


def template_text(tokenizer: Any) -> str:
    template = tokenizer.chat_template
    return template if isinstance(template, str) else json.dumps(template, sort_keys=True)


def template_sha256(tokenizer: Any) -> str:
    return hashlib.sha256(template_text(tokenizer).encode("utf-8")).hexdigest()


def template_label(tokenizer: Any) -> str:
    """How an error names the template: whose it is and its hash."""
    return f"the chat template of {tokenizer.name_or_path} (sha256 {template_sha256(tokenizer)[:12]})"


def revision(name: str) -> str:
    """The hub commit of a cached model, or for a folder the sha256 of its config.json and weights index."""
    if is_local(name):
        folder = Path(name).expanduser()
        digest = hashlib.sha256()
        for part in ("config.json", "model.safetensors.index.json", "model.safetensors"):
            path = folder / part
            if path.is_file() and (part != "model.safetensors" or not (folder / "model.safetensors.index.json").exists()):
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        return f"folder sha256:{digest.hexdigest()}"
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, local_files_only=True)).name  # …/snapshots/<commit>


def pins(name: str, tokenizer: Any) -> dict[str, Any]:
    return {"base_model_revision": revision(name),
            "tokenizer": f"{type(tokenizer).__name__} {tokenizer.name_or_path}, {len(tokenizer)} tokens",
            "chat_template_sha256": template_sha256(tokenizer),
            "generation_markers": "{% generation %}" in template_text(tokenizer)}

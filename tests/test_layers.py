"""Imports point downward only: base ← configs ← crawlers ← transforms ← finetune ← ops ← pipeline.py.

Every import counts, those inside functions included. With the layers in one strict order, no upward import
also means no cycle between packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["base", "configs", "crawlers", "transforms", "finetune", "ops", "pipeline"]


def upward_imports(root: Path) -> list[str]:
    """`file:line imports module` for every import of a layer above the file's own."""
    files = [root / "pipeline.py", *(p for layer in LAYERS[:-1] for p in sorted((root / layer).rglob("*.py")))]
    found = []
    for path in files:
        layer = LAYERS.index(path.relative_to(root).parts[0].removesuffix(".py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > layer:
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {module}")
    return found


def test_every_import_points_downward():
    assert upward_imports(ROOT) == []


def test_a_planted_upward_import_is_named(tmp_path):
    for layer in LAYERS[:-1]:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("import base.errors\n", encoding="utf-8")
    (tmp_path / "pipeline.py").write_text("import ops\n", encoding="utf-8")
    assert upward_imports(tmp_path) == []
    (tmp_path / "crawlers" / "store.py").write_text(
        "import json\n\n\ndef open_state():\n    from ops.lock import Lock\n", encoding="utf-8")
    assert upward_imports(tmp_path) == ["crawlers/store.py:5 imports ops.lock"]

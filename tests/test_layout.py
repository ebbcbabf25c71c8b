"""DESIGN.md's layout rules that a reader cannot see at a glance: file sizes and where accelerate is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PTA = Path(__file__).resolve().parents[1] / "pta"
MAX_LINES = 400  # DESIGN.md section 3, rule 7
# pta.accelerate_options imports accelerate's option classes at run time (docs/mixins.md, "Departures")
ACCELERATE_IMPORTERS = {"_accelerate.py", "accelerate_options.py"}


def _modules() -> list[Path]:
    return sorted(PTA.rglob("*.py"))


def test_no_pta_file_is_over_400_lines() -> None:
    sizes = {str(path.relative_to(PTA)): len(path.read_text().splitlines()) for path in _modules()}
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}


def _imports_accelerate(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(name == "accelerate" or name.startswith("accelerate.") for name in names):
            return True
    return False


def test_only_the_adapter_imports_accelerate() -> None:
    importers = {str(path.relative_to(PTA)) for path in _modules() if _imports_accelerate(path)}
    assert importers == ACCELERATE_IMPORTERS

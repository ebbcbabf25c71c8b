"""The README links every page of docs/, and its example is reproducible (issue 12, items 5 and 8)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_links_every_docs_page() -> None:
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README.read_text()))
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()
    assert all((ROOT / link).exists() for link in linked)


def _no_print(*args: object, **kwargs: object) -> None:
    """The example's own printing, silenced."""


def _run_first_example() -> list[float]:
    block = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)[0]
    namespace: dict[str, Any] = {"__name__": "readme", "print": _no_print}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  # our own documentation
    losses: list[float] = namespace["trainer"].run_history.get_metric_values("eval_loss_epoch")
    return losses


def test_readme_example_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    first = _run_first_example()
    torch.rand(5)  # whatever ran in between
    assert _run_first_example() == first
    capsys.readouterr()


def test_readme_says_what_seed_seeds() -> None:
    text = README.read_text()
    assert "set_seed(0)" in text and "seed + process index" in text

"""The distribution is called ``pta-trainer`` (``pta`` on the package index is an unrelated project):
every install hint pta gives uses that name (issue 12, item 1)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = "pta-trainer"


def test_distribution_name() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST


def _hint_files() -> list[Path]:
    return [*sorted((ROOT / "pta").rglob("*.py")), *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def test_every_install_hint_names_the_distribution() -> None:
    # `pip install pta`, `pip install 'pta[plot]'`, `pip install "pta[...]"`: the wrong project
    wrong = re.compile(r"""pip install\s+(-U\s+)?['"]?pta(\[|['"\s`]|$)""", re.MULTILINE)
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0)!r}"
                 for path in _hint_files() for match in wrong.finditer(path.read_text())]
    assert offenders == []
    extras = re.compile(r"""pip install\s+['"]?([\w-]+)\[""")
    named = {match.group(1) for path in _hint_files() for match in extras.finditer(path.read_text())}
    assert named <= {DIST}, named
    assert DIST in named  # the plot extra is advertised under the right name


def test_readme_installs_this_project_by_name() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {DIST}" in readme or f"pip install '{DIST}" in readme

"""Issue 9, item 6: the editable install of the README's command is visible to mypy and pyright.

setuptools' default editable install for a flat layout is an import-hook finder that type checkers
cannot follow ("Cannot find implementation or library stub for module named pta"). With
``package-dir = {"" = "."}`` it is a plain path entry in a ``.pth`` file, which both follow. This
builds the editable wheel (no download, no install) and checks which of the two it is.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_editable_wheel_is_a_plain_path_entry(tmp_path: Path) -> None:
    code = (
        "import sys; from setuptools import build_meta; "
        f"print(build_meta.build_editable({str(tmp_path)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = tmp_path / result.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        pth = [name for name in names if name.endswith(".pth")]
        assert len(pth) == 1, names
        lines = archive.read(pth[0]).decode().split()
    assert not [name for name in names if name.endswith("_finder.py")], "an import-hook finder: invisible to checkers"
    assert lines == [str(REPO_ROOT)], lines  # a directory on sys.path, with no `import` line

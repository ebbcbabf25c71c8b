"""pyright strict over the whole configured project: pta, tests, examples, benchmarks and tools.

``mypy`` runs on all of them in CI (``.ci/run``); this test is pyright's side of that promise. It runs
pyright once with the project's ``pyrightconfig.json`` (untyped third-party libraries are typed by the
stubs in ``typings/``) and lists every error it reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_typing import _pyright

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("pta", "tests", "examples", "benchmarks", "tools")


def _run_pyright() -> dict[str, Any]:
    result = subprocess.run(
        [*_pyright(), "--outputjson", "--pythonpath", sys.executable, "-p", str(REPO_ROOT / "pyrightconfig.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright gave no JSON report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return report


@pytest.mark.slow
def test_pyright_strict_reports_no_error_in_the_project() -> None:
    config = json.loads((REPO_ROOT / "pyrightconfig.json").read_text())
    assert config["typeCheckingMode"] == "strict"
    assert sorted(config["include"]) == sorted(CHECKED)

    report = _run_pyright()
    errors = [
        f"{Path(d['file']).relative_to(REPO_ROOT)}:{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '')})"
        for d in report["generalDiagnostics"] if d["severity"] == "error"
    ]
    assert errors == [], f"{len(errors)} pyright errors:\n" + "\n".join(errors)
    # a wrong root or include would check nothing and report no error: every project file was analysed
    project_files = [p for folder in CHECKED for p in (REPO_ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]
    assert report["summary"]["filesAnalyzed"] >= len(project_files), report["summary"]

"""The main example (examples/quickstart.py) and the README's code and commands work as documented."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
README = ROOT / "README.md"


def load_quickstart_main() -> Callable[[list[str] | None], float]:
    """``main`` of examples/quickstart.py, loaded from its path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pta_example_quickstart", QUICKSTART)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[[list[str] | None], float], module.main)


def test_quickstart_two_epochs_in_process() -> None:
    """Two epochs already classify most digits (0.91 measured; seeded, so the value is stable)."""
    pytest.importorskip("sklearn")
    accuracy = load_quickstart_main()(["--epochs", "2", "--no-progress-bar"])
    assert 0.85 <= accuracy <= 1.0


@pytest.mark.slow
def test_quickstart_default_run_reaches_95_percent() -> None:
    """``python examples/quickstart.py`` as a user runs it (about 6 s on a 2-core CPU; speed is the
    benchmark's business, the timeout only bounds a hang)."""
    pytest.importorskip("sklearn")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(QUICKSTART), "--no-progress-bar"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"test accuracy: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout[-3000:]
    assert float(match.group(1)) >= 0.95


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_code_runs() -> None:
    """The README's Python blocks, run in order in one namespace (the second reuses the first's data)."""
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  # our own documentation
    assert len(namespace["trainer"].run_history.get_metric_values("train_loss_epoch")) == 2


def _readme_shell_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    assert first_block is not None and text.index(first_block.group(0)) < text.index("\n## "), \
        "README must start with the install-and-run commands"
    return [line for line in first_block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_the_example_and_test_commands() -> None:
    run_example, run_tests = _readme_shell_lines()
    assert run_example.startswith("pip install torch==") and run_example.endswith("python examples/quickstart.py")
    assert run_tests.startswith("pip install torch==") and "pip install -e \".[dev]\"" in run_tests
    assert run_tests.endswith("pytest -q")


def test_ci_runs_the_readme_test_command() -> None:
    _, run_tests = _readme_shell_lines()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(run_tests + " ") or line == run_tests for line in ci_lines), \
        ".ci/run must run exactly the README's test command"

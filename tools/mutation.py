"""Mutation testing of pta's core modules with mutmut, ``@override`` methods included.

mutmut does not mutate decorated functions (it cannot install its trampoline around an arbitrary
decorator), and every hook a mixin or callback overrides is decorated with ``@override``. At run time
``typing_extensions.override`` and ``final`` only set an attribute that nothing in pta's own classes
needs, so this script runs mutmut on a copy of the project in ``.mutation/`` whose ``pta/`` has those
two decorators removed (each replaced by an empty line, so line numbers still match the source).

    python tools/mutation.py run                      # every core module ([tool.mutmut] in pyproject.toml)
    python tools/mutation.py run "pta.mixins.*"       # some modules
    python tools/mutation.py results                  # the survivors; `show NAME` shows one as a diff

Any arguments are passed to mutmut, which runs in ``.mutation/``; its results stay there between runs,
so a second run only runs the mutants of code that changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
COPIED = ("pyproject.toml", "README.md", "pta", "tests", "docs", "examples")
RUNTIME_NOOP_DECORATOR = re.compile(r"^[ \t]*@(override|final)[ \t]*$", re.MULTILINE)


def refresh_copy() -> None:
    """Copy the project into WORK (mutmut's own ``mutants/`` there is kept), decorators stripped."""
    WORK.mkdir(exist_ok=True)
    for name in COPIED:
        source, target = ROOT / name, WORK / name
        if target.is_dir():
            shutil.rmtree(target)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    for path in (WORK / "pta").rglob("*.py"):
        text = path.read_text()
        stripped = RUNTIME_NOOP_DECORATOR.sub("", text)
        if stripped != text:
            path.write_text(stripped)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "run":
        refresh_copy()
    # Tests and the worker processes some tests start import mutmut's mutated copy, never a checkout.
    env = {**os.environ, "PYTHONPATH": str(WORK / "mutants")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call([sys.executable, "-m", "mutmut", *argv], cwd=WORK, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

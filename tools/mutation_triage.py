"""Re-check mutmut's mutants quickly against chosen tests, in-process: the triage of survivors.

mutmut runs every test that reaches a mutated function, which on two cores takes minutes per survivor
of the loop. While writing a test for a survivor, this script answers "does it kill the mutant now?"
in seconds: for each mutant it forks, swaps the mutant's code (and default values) into the live
function, and runs the given tests in that process with ``-x``. It reads the mutants that
``tools/mutation.py run`` generated in ``.mutation/mutants/``; the source there must match the checkout
(regenerate after changing a function). mutmut's own run stays the reference for scores.

    python tools/mutation_triage.py NAME... -- tests/test_parity.py tests/test_resume.py
    python tools/mutation_triage.py @names.txt -- tests/test_parity.py      # names one per line

Prints one line per mutant: ``killed by <first failing test>``, ``SURVIVED`` or ``ERROR: ...``.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys
import textwrap
from pathlib import Path
from types import FunctionType
from typing import Any, cast

import pytest

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / ".mutation" / "mutants"
NAME = re.compile(r"^(?P<module>[\w.]+?)\.(?P<key>x(?:ǁ(?P<cls>\w+)ǁ(?P<method>\w+)|_(?P<function>\w+))__mutmut_\d+)$")


def _mutant_source(module: str, key: str) -> str:
    """The mutant's ``def``, dedented, from mutmut's copy of the module."""
    path = MUTANTS / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == key:
            return textwrap.dedent("".join(source.splitlines(keepends=True)[node.lineno - 1:node.end_lineno]))
    raise LookupError(f"{key} is not in {path}: regenerate with tools/mutation.py run")


def _function(found: Any) -> FunctionType:
    """The plain function behind a class attribute (a property's getter, a classmethod's function)."""
    unwrap: dict[type[object], str] = {property: "fget", classmethod: "__func__", staticmethod: "__func__"}
    inner = unwrap.get(cast("type[object]", type(found)))
    function: object = getattr(found, inner) if inner else found
    assert isinstance(function, FunctionType), found
    return function


def install(name: str) -> None:
    """Swap the mutant's code into the live function (in this process only)."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a mutmut mutant name")
    module = importlib.import_module(match["module"])
    real = match["method"] or match["function"]
    source = _mutant_source(match["module"], match["key"]).replace(f"def {match['key']}(", f"def {real}(", 1)
    if match["cls"]:  # compiled in a class body, so that a zero-argument super() gets its __class__ cell
        source = f"class {match['cls']}:\n" + textwrap.indent(source, "    ")
    namespace = dict(vars(module))
    exec(compile("from __future__ import annotations\n" + source, f"{module.__file__}<mutant>", "exec"), namespace)
    cls: str | None = match["cls"]
    owner = cast("dict[str, Any]", vars(getattr(module, cls)) if cls else vars(module))
    live = _function(owner[real])
    mutant = _function(cast("dict[str, Any]", vars(namespace[cls]))[real] if cls else namespace[real])
    if live.__code__.co_freevars == mutant.__code__.co_freevars:
        live.__code__, live.__defaults__, live.__kwdefaults__ = mutant.__code__, mutant.__defaults__, mutant.__kwdefaults__
    elif cls and not mutant.__code__.co_freevars and type(owner[real]) is FunctionType:
        # The mutant dropped the method's super() call, so it needs no __class__ cell: install it whole.
        replacement = FunctionType(mutant.__code__, live.__globals__, real, mutant.__defaults__)
        replacement.__kwdefaults__ = mutant.__kwdefaults__
        setattr(getattr(module, cls), real, replacement)
    else:
        raise RuntimeError("the mutant changed the function's closure in a way this script cannot install")


def _run(name: str, tests: list[str], log: Path) -> str:
    pid = os.fork()
    if pid == 0:
        status = 3
        try:
            install(name)
            with log.open("w") as output:
                sys.stdout = sys.stderr = output
                status = 0 if pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider"]) == 0 else 1
        except BaseException as error:  # noqa: BLE001 - reported by the parent
            log.write_text(f"{type(error).__name__}: {error}")
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "SURVIVED"
    if code == 3:
        return "ERROR: " + log.read_text()
    failed = [line.split()[1] for line in log.read_text().splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return f"killed by {failed[0]}" if failed else f"killed (exit code {code})"


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") in (0, len(argv) - 1):
        print(__doc__)
        return 2
    split = argv.index("--")
    names: list[str] = []
    for arg in argv[:split]:
        names += Path(arg[1:]).read_text().split() if arg.startswith("@") else [arg]
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Worker processes some tests start import the checkout (unmutated: such tests cannot kill a mutant here).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    importlib.import_module("pta")  # once, before the forks: each mutant then starts in milliseconds
    log = Path(".mutation") / "triage.log"
    for name in names:
        print(f"{name}: {_run(name, argv[split + 1:], log)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

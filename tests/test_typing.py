"""mypy and pyright on small user-code snippets: correct code is clean, misuse is reported where it is written.

All snippets (tests/_typing_snippets.py) are checked by ONE mypy run and ONE pyright run (their cold
starts are the slow part). mypy uses the repository's ``mypy.ini`` (``strict`` and ``explicit-override``);
pyright runs in strict mode with pta found at this repository. A snippet marks the lines where a
checker must report an error (``E: [code] text`` for mypy, ``P: [rule] text`` for pyright); a line or
snippet without markers must be clean. Every other error is a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api as mypy_api

from tests._typing_snippets import BAD, OK, PRELUDE, SNIPPETS

REPO_ROOT = Path(__file__).resolve().parent.parent
MYPY_INI = REPO_ROOT / "mypy.ini"
# Fails only because pta.callbacks.base still makes ``trainer`` positional-only (issue 11 changes that).

_MYPY_MARK = re.compile(r"E:\s*\[(?P<codes>[\w,-]+)\]\s*(?P<text>.*?)\s*(?=\bP:|$)")
_PYRIGHT_MARK = re.compile(r"\bP:\s*\[(?P<codes>[\w,-]+)\]\s*(?P<text>.*?)\s*$")
_MYPY_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")


@dataclass(frozen=True)
class Expected:
    line: int
    codes: frozenset[str]
    text: str


@dataclass(frozen=True)
class Reported:
    line: int
    code: str
    message: str


@dataclass(frozen=True)
class CheckerRun:
    errors: dict[str, list[Reported]]
    """Errors per snippet name."""
    other: list[str]
    """Errors in files that are not snippets (pta itself must be clean)."""


def source(name: str) -> str:
    return PRELUDE + textwrap.dedent(SNIPPETS[name])


def expected(name: str, checker: str) -> list[Expected]:
    pattern = _MYPY_MARK if checker == "mypy" else _PYRIGHT_MARK
    found: list[Expected] = []
    for number, text in enumerate(source(name).splitlines(), start=1):
        comment = text.partition("#")[2]
        match = pattern.search(comment)
        if match:
            found.append(Expected(number, frozenset(match["codes"].split(",")), match["text"]))
    return found


@pytest.fixture(scope="module")
def snippet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("typing_snippets")
    for name in SNIPPETS:
        (folder / f"snippet_{name}.py").write_text(source(name))
    return folder


def _snippet_of(path: str) -> str | None:
    stem = Path(path).stem
    return stem.removeprefix("snippet_") if stem.startswith("snippet_") and stem[8:] in SNIPPETS else None


@pytest.fixture(scope="module")
def mypy_run(snippet_dir: Path) -> Iterator[CheckerRun]:
    args = [
        # Only the repository's configuration (strict, explicit-override, ...): extra flags that change
        # type checking would invalidate mypy's cache of torch and pta and make this run slow.
        "--config-file", str(MYPY_INI), "--show-error-codes", "--no-error-summary", "--hide-error-context",
        "--no-pretty", "--no-color-output", *sorted(str(p) for p in snippet_dir.glob("snippet_*.py")),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)  # from the repository root mypy finds this checkout's pta and reuses its cache
        stdout, stderr, _status = mypy_api.run(args)
    assert not stderr.strip(), stderr
    errors: dict[str, list[Reported]] = {name: [] for name in SNIPPETS}
    other: list[str] = []
    for text in stdout.splitlines():
        match = _MYPY_LINE.match(text)
        if match is None:
            continue
        snippet = _snippet_of(match["path"])  # by file name: mypy may report an unchanged module's earlier path
        if snippet is None:
            other.append(text)
        else:
            errors[snippet].append(Reported(int(match["line"]), match["code"] or "", match["msg"]))
    yield CheckerRun(errors, other)


def _pyright() -> list[str]:
    exe = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which("pyright")
    if exe is None:
        pytest.fail("pyright is not installed: pip install -e '.[dev]' (it pins pyright[nodejs])")
    return [exe]


@pytest.fixture(scope="module")
def pyright_run(snippet_dir: Path) -> Iterator[CheckerRun]:
    config = {"typeCheckingMode": "strict", "pythonVersion": "3.11", "extraPaths": [str(REPO_ROOT)],
              "include": ["."]}
    (snippet_dir / "pyrightconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [*_pyright(), "--outputjson", "--pythonpath", sys.executable, "-p", str(snippet_dir)],
        cwd=snippet_dir, capture_output=True, text=True, timeout=900, check=False,
    )
    report = json.loads(result.stdout)
    errors: dict[str, list[Reported]] = {name: [] for name in SNIPPETS}
    other: list[str] = []
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] != "error":
            continue
        snippet = _snippet_of(diagnostic["file"])
        reported = Reported(diagnostic["range"]["start"]["line"] + 1, diagnostic.get("rule", ""), diagnostic["message"])
        if snippet is None:
            other.append(f"{diagnostic['file']}: {reported}")
        else:
            errors[snippet].append(reported)
    yield CheckerRun(errors, other)


def _run(request: pytest.FixtureRequest, checker: str) -> CheckerRun:
    run: CheckerRun = request.getfixturevalue(f"{checker}_run")
    return run


CHECKERS = ("mypy", "pyright")


@pytest.mark.parametrize("checker", CHECKERS)
def test_nothing_is_reported_outside_the_snippets(request: pytest.FixtureRequest, checker: str) -> None:
    assert _run(request, checker).other == []


def test_the_snippets_are_many_and_marked() -> None:
    config = MYPY_INI.read_text()
    assert re.search(r"^strict\s*=\s*True", config, re.MULTILINE)
    assert "explicit-override" in config
    assert len(BAD) >= 40
    for name in SNIPPETS:
        marked = bool(expected(name, "mypy") or expected(name, "pyright"))
        assert marked == name.startswith("bad_"), name
        assert name in OK or name in BAD


@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize("name", sorted(OK))
def test_correct_user_code_is_clean(request: pytest.FixtureRequest, checker: str, name: str) -> None:
    errors = _run(request, checker).errors[name]
    assert errors == [], "\n".join(str(e) for e in errors)


@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize("name", sorted(BAD))
def test_misuse_is_reported_where_it_is(request: pytest.FixtureRequest, checker: str, name: str) -> None:
    reported = _run(request, checker).errors[name]
    wanted = expected(name, checker)
    assert {(e.line, e.code) for e in reported} == {(w.line, code) for w in wanted for code in w.codes}, (
        f"expected {wanted}\ngot {reported}"
    )
    for want in wanted:
        messages = [e.message for e in reported if e.line == want.line]
        assert any(want.text in message for message in messages), (want, messages)

"""pytorch-accelerated-style callbacks and trainer subclasses type-check clean under mypy --strict and pyright strict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

REPO_ROOT = Path(__file__).resolve().parent.parent

SNIPPET = '''
from typing import Any

from typing_extensions import override

from pta import Trainer
from pta.callbacks import TrainerCallback
from pta.protocols import TrainerLike


class PaStyle(TrainerCallback):
    @override
    def on_eval_step_end(self, trainer: TrainerLike, batch: Any, batch_output: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_train_step_end(self, trainer: TrainerLike, batch: Any, batch_output: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        pass

    def verify_train_batch(self, trainer: TrainerLike, xb: Any, yb: Any) -> None:
        pass


class PtaStyle(TrainerCallback):
    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: Any, **kwargs: Any) -> None:
        pass


class TimmStyle(Trainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_updates = None

    @override
    def scheduler_step(self) -> None:
        self.num_updates += 1


def use(trainer: TrainerLike, subclass: TimmStyle, callback: PaStyle) -> None:
    callback.on_train_epoch_end(trainer=trainer)
    callback.on_eval_step_end(trainer, batch=None, batch_output={})
    subclass.callback_handler.call_event("verify_train_batch", trainer=trainer, xb=1, yb=2)
    subclass.callback_handler.call_event("on_train_epoch_end", trainer)
    subclass.run_config = subclass.run_config
'''


@pytest.fixture(scope="module")
def snippet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pa_compat_typing") / "snippet_pa_compat.py"
    path.write_text(SNIPPET)
    return path


def test_mypy_strict_accepts_pa_style_code(snippet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the repository's mypy.ini (strict, explicit-override) and its cache
    stdout, stderr, status = mypy_api.run(["--config-file", str(REPO_ROOT / "mypy.ini"), "--no-error-summary",
                                           str(snippet)])
    assert (stdout, stderr, status) == ("", "", 0)


@pytest.mark.skipif(shutil.which("pyright") is None, reason="pyright is not installed")
def test_pyright_strict_accepts_pa_style_code(snippet: Path) -> None:
    config = {"typeCheckingMode": "strict", "extraPaths": [str(REPO_ROOT)],
              "pythonVersion": f"{sys.version_info.major}.{sys.version_info.minor}"}
    (snippet.parent / "pyrightconfig.json").write_text(json.dumps(config))
    pyright = shutil.which("pyright")
    assert pyright is not None
    result = subprocess.run([pyright, "--outputjson", "--pythonpath", sys.executable, snippet.name],
                            cwd=snippet.parent, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(result.stdout)
    assert report["generalDiagnostics"] == [], result.stdout

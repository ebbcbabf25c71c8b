"""mypy on small user-code snippets: correct code is clean, misuse is reported where it is written.

All snippets are checked by ONE mypy run (its cold start is the slow part) with the repository's
``mypy.ini`` plus ``--strict`` and ``explicit-override`` forced on. Each snippet marks the lines where
mypy must report an error with ``# E: [code] text`` (``text`` is an optional substring of the
message); a snippet without markers must be clean. Every other error is a failure.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api as mypy_api

REPO_ROOT = Path(__file__).resolve().parent.parent
MYPY_INI = REPO_ROOT / "mypy.ini"

_PRELUDE = """\
from __future__ import annotations

import functools
from typing import Any, assert_type

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import (
    BatchOutput, DefaultTrainer, DevicePlacementMixin, GradAccumMixin, SchedulerMixin, TrainerBase,
    TrainerCallback,
)
from pta.protocols import TrainerLike
from pta.trainer import TrainerPlaceholderValues

Batch = tuple[Tensor, Tensor]


def make_data() -> TensorDataset:
    return TensorDataset(torch.randn(8, 2), torch.randn(8, 1))


def make_model() -> nn.Module:
    return nn.Linear(2, 1)
"""

SNIPPETS: dict[str, str] = {
    # ------------------------------------------------------------------ correct user code
    "ok_typed_trainer": """
        class MyOutput(BatchOutput):
            logits: Tensor


        class RegressionTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                assert_type(batch, tuple[Tensor, Tensor])
                xb, yb = batch
                logits = self.model(xb)
                out: MyOutput = {"loss": nn.functional.mse_loss(logits, yb), "logits": logits, "batch_size": xb.shape[0]}
                return out

            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> BatchOutput:
                xb, yb = batch
                return {"loss": nn.functional.mse_loss(self.model(xb), yb)}

            @override
            def train_epoch_start(self) -> None:
                super().train_epoch_start()


        def main() -> None:
            model = make_model()
            trainer = RegressionTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                                        mixed_precision="bf16", seed=0)
            trainer.train(make_data(), num_epochs=1, eval_dataset=make_data(), per_device_batch_size=4)
            trainer.evaluate(make_data())
    """,
    "ok_custom_composition": """
        class MyTrainer(GradAccumMixin, DevicePlacementMixin, TrainerBase):
            pass


        class MyTypedTrainer(GradAccumMixin[Batch], SchedulerMixin[Batch], DevicePlacementMixin[Batch], TrainerBase[Batch]):
            @override
            def configure_run(self) -> None:
                super().configure_run()

            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"loss": nn.functional.mse_loss(self.model(batch[0]), batch[1]), "batch_size": 8}


        def main() -> None:
            model = make_model()
            MyTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1)).train(
                make_data(), 1, gradient_accumulation_steps=2
            )
            MyTypedTrainer(model, nn.MSELoss(), None).evaluate(make_data())
    """,
    "ok_callbacks": """
        class StepCounter(TrainerCallback):
            def __init__(self) -> None:
                self.steps = 0

            @override
            def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
                self.steps += 1


        class LossPrinter(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
                trainer.print(float(batch_output["loss"]))

            @override
            def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
                trainer.print(trainer.run_history.get_latest_metric("eval_loss_epoch"))


        def main() -> None:
            model = make_model()
            DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                           callbacks=[StepCounter, LossPrinter()])
    """,
    "ok_scheduler_factory": """
        def main() -> None:
            model = make_model()
            trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1))
            one_cycle = functools.partial(
                torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            )
            trainer.train(make_data(), 1, create_scheduler_fn=one_cycle)
            step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=TrainerPlaceholderValues.NUM_EPOCHS * 2)
            trainer.train(make_data(), 2, create_scheduler_fn=step_lr)
    """,
    # ------------------------------------------------------------------ misuse
    "bad_misspelled_hook": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_los(self, batch: Batch) -> BatchOutput:  # E: [misc] no base method was found
                return {"loss": batch[0].sum()}
    """,
    "bad_missing_override_decorator": """
        class MyTrainer(DefaultTrainer[Batch]):
            def train_epoch_start(self) -> None:  # E: [explicit-override] not using @override
                super().train_epoch_start()
    """,
    "bad_hook_signature": """
        class ExtraArg(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch, extra: int) -> BatchOutput:  # E: [override] calculate_train_batch_loss
                return {"loss": batch[0].sum()}


        class WrongBatchType(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: str) -> BatchOutput:  # E: [override] tuple[Tensor, Tensor]
                return {"loss": torch.zeros(())}


        class WrongReturn(DefaultTrainer[Batch]):
            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> Tensor:  # E: [override] Return type
                return batch[0]
    """,
    "bad_batch_output_without_loss": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"batch_size": 3, "model_outputs": batch[0]}  # E: [typeddict-item] Missing key "loss"
    """,
    "bad_scheduler_instance": """
        def main() -> None:
            model = make_model()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            trainer = DefaultTrainer(model, nn.MSELoss(), optimizer)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
            trainer.train(make_data(), 1, create_scheduler_fn=scheduler)  # E: [arg-type] create_scheduler_fn
    """,
    "bad_callback_signature": """
        class PositionalNoKwargs(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, batch_output: BatchOutput) -> None:  # E: [override] on_train_step_end
                pass


        class WrongKeywordType(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, *, batch_output: int, **kwargs: Any) -> None:  # E: [override] on_train_step_end
                pass


        class WrongTrainerType(TrainerCallback):
            @override
            def on_eval_epoch_end(self, trainer: int, /, **kwargs: Any) -> None:  # E: [override] on_eval_epoch_end
                pass
    """,
    "bad_not_strict_enough": """
        def untyped_helper(x):  # E: [no-untyped-def] missing a type annotation
            return x


        class NoDecorator(TrainerCallback):
            def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:  # E: [explicit-override] not using @override
                pass
    """,
    "bad_mixed_precision": """
        def main() -> None:
            model = make_model()
            DefaultTrainer(model, nn.MSELoss(), None, mixed_precision="fp32")  # E: [arg-type] mixed_precision
    """,
}

_MARKER = re.compile(r"#\s*E:\s*\[(?P<code>[a-z-]+)\]\s*(?P<text>.*?)\s*$")
_MYPY_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")


@dataclass(frozen=True)
class Expected:
    line: int
    code: str
    text: str


@dataclass(frozen=True)
class Reported:
    line: int
    code: str
    message: str


@dataclass(frozen=True)
class MypyRun:
    errors: dict[str, list[Reported]]
    """Errors per snippet name."""
    other: list[str]
    """Error lines in files that are not snippets (pta itself must be clean)."""
    stdout: str


def _source(name: str) -> str:
    return _PRELUDE + textwrap.dedent(SNIPPETS[name])


def _expected(name: str) -> list[Expected]:
    found = []
    for number, text in enumerate(_source(name).splitlines(), start=1):
        match = _MARKER.search(text)
        if match:
            found.append(Expected(number, match["code"], match["text"]))
    return found


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MypyRun]:
    folder = tmp_path_factory.mktemp("typing_snippets")
    paths = {}
    for name in SNIPPETS:
        path = folder / f"snippet_{name}.py"
        path.write_text(_source(name))
        paths[path.name] = name
    args = [
        # Only the repository's configuration (strict, explicit-override, ...): extra flags that change
        # type checking would invalidate mypy's cache of torch and pta and make this run slow.
        "--config-file", str(MYPY_INI), "--show-error-codes", "--no-error-summary", "--hide-error-context", "--no-pretty",
        "--no-color-output", *(str(folder / file) for file in paths),
    ]
    # From the repository root mypy finds ``pta`` (an editable install it cannot follow) and reuses its cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        stdout, stderr, _status = mypy_api.run(args)
    assert not stderr.strip(), stderr
    errors: dict[str, list[Reported]] = {name: [] for name in SNIPPETS}
    other = []
    for text in stdout.splitlines():
        match = _MYPY_LINE.match(text)
        if match is None:
            continue
        # by file name: mypy may report a module unchanged since an earlier run under its earlier path
        snippet = paths.get(Path(match["path"]).name)
        if snippet is None:
            other.append(text)
        else:
            errors[snippet].append(Reported(int(match["line"]), match["code"] or "", match["msg"]))
    yield MypyRun(errors, other, stdout)


def test_mypy_reports_nothing_outside_the_snippets(mypy_run: MypyRun) -> None:
    assert mypy_run.other == []


def test_the_snippets_are_checked_strictly(mypy_run: MypyRun) -> None:
    config = MYPY_INI.read_text()
    assert re.search(r"^strict\s*=\s*True", config, re.MULTILINE)
    assert "explicit-override" in config
    # (bad_not_strict_enough shows that both are in force for the snippets)
    # the markers are where they should be: every misuse snippet expects at least one error
    for name in SNIPPETS:
        assert bool(_expected(name)) == name.startswith("bad_"), name


@pytest.mark.parametrize("name", [name for name in SNIPPETS if name.startswith("ok_")])
def test_correct_user_code_is_clean(mypy_run: MypyRun, name: str) -> None:
    assert mypy_run.errors[name] == [], "\n".join(str(e) for e in mypy_run.errors[name])


@pytest.mark.parametrize("name", [name for name in SNIPPETS if name.startswith("bad_")])
def test_misuse_is_reported_where_it_is(mypy_run: MypyRun, name: str) -> None:
    reported = mypy_run.errors[name]
    expected = _expected(name)
    assert {(e.line, e.code) for e in reported} == {(e.line, e.code) for e in expected}, (
        f"expected {expected}\ngot {reported}"
    )
    for want in expected:
        messages = [e.message for e in reported if (e.line, e.code) == (want.line, want.code)]
        assert any(want.text in message for message in messages), (want, messages)

"""A save that fails on one of two processes raises ``CheckpointError`` on both (no hang) and keeps the
earlier state, also when it is the background commit of the main process that fails; a state saved by
2 processes resumes and is checked like a single-process one.

``two_process_worker`` is what each of the 2 processes runs (a scenario of the shared launch)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from typing_extensions import override

import pta.state
from pta import CheckpointError, DefaultTrainer, TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import linear_model, regression_data
from tests.distributed._launch import ScenarioLaunch

TWO_PROCESSES = f"{__name__}:two_process_worker"


class FailOnRank1(TrainerCallback):
    """Saves ``good`` after update 2; at update 4 the disk of rank 1 is full while both save ``bad``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.num_updates == 2:
            trainer.save_training_state(self.directory / "good")
        if trainer.num_updates == 4:
            if os.environ["RANK"] == "1":
                def no_space(*args: Any, **kw: Any) -> None:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                torch.save = no_space  # this worker process only
            trainer.save_training_state(self.directory / "bad")


class BackgroundFailOnRank0(TrainerCallback):
    """Saves ``good`` in the background after update 2; the commit of ``bad`` (update 4) fails on rank 0,
    the only process that commits: both processes learn it when ``train()`` waits for it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        pta_trainer = cast(DefaultTrainer, trainer)
        if trainer.num_updates == 2:
            pta_trainer.save_training_state_in_background(self.directory / "good")
        if trainer.num_updates == 4:
            pta_trainer.wait_for_save()  # "good" is committed before rank 0's renames start failing
            if os.environ["RANK"] == "0":
                def failing(source: Path, destination: Path) -> None:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))

                pta.state._rename = failing  # this worker process only
            pta_trainer.save_training_state_in_background(self.directory / "bad")


def _background(directory: Path) -> dict[str, Any]:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[BackgroundFailOnRank0(directory)])
    real_rename = pta.state._rename
    try:
        trainer.train(regression_data(32), 2, per_device_batch_size=4)
        error = ""
    except CheckpointError as caught:
        error = str(caught)
    pta.state._rename = real_rename
    model = linear_model()
    resumed = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    resumed.train(regression_data(32), 2, per_device_batch_size=4, resume_from=directory / "latest")
    return {"error": error, "updates": resumed.num_updates}


def _blocking(directory: Path) -> dict[str, Any]:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[FailOnRank1(directory)])
    real_save = torch.save
    try:
        trainer.train(regression_data(32), 2, per_device_batch_size=4)
        error = ""
    except CheckpointError as caught:
        error = str(caught)
    torch.save = real_save
    model = linear_model()
    resumed = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    resumed.train(regression_data(32), 2, per_device_batch_size=4, resume_from=directory / "latest")
    return {"error": error, "updates": resumed.num_updates}


def two_process_worker(directory: Path) -> dict[str, Any]:
    return {"blocking": _blocking(directory / "blocking"), "background": _background(directory / "background")}


@pytest.fixture(scope="module")
def launched(two_process_scenarios: ScenarioLaunch) -> tuple[Path, list[dict[str, Any]]]:
    results = two_process_scenarios.results(TWO_PROCESSES)  # fails the test on a hang or a failed process
    return two_process_scenarios.directory(TWO_PROCESSES), results


@pytest.mark.two_process_scenario(TWO_PROCESSES)
@pytest.mark.parametrize(("scenario", "failing_rank", "cause"), [
    ("blocking", 1, "no space left on device"),  # a write fails on one process
    ("background", 0, "input/output error"),  # the main process's background commit fails; train() waits for it
])
def test_a_save_failing_on_one_process_fails_on_both_and_keeps_earlier_states(
    launched: tuple[Path, list[dict[str, Any]]], scenario: str, failing_rank: int, cause: str
) -> None:
    directory, results = launched
    errors = [result[scenario]["error"] for result in results]
    assert cause in errors[failing_rank]
    assert "another process failed to write its part" in errors[1 - failing_rank]
    for result in results:
        assert str(directory / scenario / "bad") in result[scenario]["error"]
        assert result[scenario]["updates"] == 8  # resumed from "good" (2 updates) and finished 2 epochs of 4 updates
    assert sorted(p.name for p in (directory / scenario).iterdir()) == ["good"]

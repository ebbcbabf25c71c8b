"""Saves onto a really full disk: a 4 MiB tmpfs mounted in a private user and mount namespace
(``unshare -Urm``, no root needed; skipped where the system forbids it).

This file is also the worker script run inside the namespace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

import pta._training_state
from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.interrupt import TrainingInterrupted
from pta.protocols import TrainerLike
from tests._helpers import linear_model, regression_data

REPO = Path(__file__).resolve().parents[1]


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` with a file so that about ``leave`` bytes stay free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


class FullDisk(TrainerCallback):
    def __init__(self, disk: Path, result: dict[str, Any]) -> None:
        self.disk, self.result = disk, result

    def _save(self, trainer: TrainerLike, name: str) -> None:
        try:
            trainer.save_training_state(self.disk / name)
            self.result[name] = "saved"
        except CheckpointError as error:
            self.result[name] = str(error)
        self.result[f"{name}_listing"] = sorted(os.listdir(self.disk))
        (self.disk / "filler").unlink()

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.num_updates == 2:
            trainer.save_training_state(self.disk / "good")
        if trainer.num_updates == 3:  # the free-space check refuses before writing anything
            _fill(self.disk, 64 * 1024)
            self._save(trainer, "refused")
        if trainer.num_updates == 4:  # the check passes (estimate without margin), the writers run out of space
            pta._training_state._MARGIN = 0
            _fill(self.disk, 8 * 1024)
            self._save(trainer, "failed")
            pta._training_state._MARGIN = 1 << 20
        if trainer.num_updates == 5:  # a SIGTERM whose save hits the full disk
            _fill(self.disk, 8 * 1024)
            os.kill(os.getpid(), signal.SIGTERM)


def _trainer(callbacks: list[TrainerCallback], **kwargs: Any) -> DefaultTrainer:
    reset_accelerate_state()
    model = linear_model()
    return DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=0.1), callbacks=callbacks,
                          **kwargs)


def _worker(disk: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    trainer = _trainer([FullDisk(disk, result)], interrupt_state_dir=disk / "interrupted")
    try:
        trainer.train(regression_data(64), 2, per_device_batch_size=8)
    except TrainingInterrupted as interrupted:
        result["interrupted"] = {"code": interrupted.code, "state_dir": interrupted.state_dir,
                                 "save_error": str(interrupted.save_error)}
    result["interrupted_listing"] = sorted(os.listdir(disk))
    (disk / "filler").unlink()
    resumed = _trainer([])
    resumed.train(regression_data(64), 2, per_device_batch_size=8, resume_from=disk / "latest")
    result["resumed_updates"] = resumed.num_updates
    return result


def test_saves_onto_a_full_tmpfs(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "-Urm", "true"], capture_output=True, timeout=30, check=False
    ).returncode != 0:
        pytest.skip("unprivileged user and mount namespaces are not available here")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"mount -t tmpfs -o size=4m tmpfs {disk} && exec {sys.executable} {__file__} {disk} {tmp_path}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=180,
                          env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())

    assert "no space left on device" in result["refused"] and "bytes free" in result["refused"]
    assert str(disk / "refused") in result["refused"]
    assert result["refused_listing"] == ["filler", "good"]  # nothing written

    assert "no space left on device" in result["failed"].lower() and str(disk / "failed") in result["failed"]
    assert result["failed_listing"] == ["filler", "good"]  # the partial output is gone

    interrupted = result["interrupted"]
    assert interrupted["code"] == 128 + signal.SIGTERM and interrupted["state_dir"] is None
    assert "no space left on device" in interrupted["save_error"].lower()
    assert result["interrupted_listing"] == ["filler", "good"]

    assert result["resumed_updates"] == 16  # resumed from "good", intact, and finished the run


if __name__ == "__main__":
    torch.set_num_threads(1)
    _result = _worker(Path(sys.argv[1]))
    (Path(sys.argv[2]) / "result.json").write_text(json.dumps(_result))

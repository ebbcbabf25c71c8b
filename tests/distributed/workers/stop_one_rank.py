"""Issue 10 item 1: one rank stops (or fails) alone while a final save is pending; no rank may hang.

    torchrun --nproc_per_node 2 tests/distributed/workers/stop_one_rank.py OUT_DIR MODE

MODE ``stop``: rank 1 raises ``StopTrainingError`` in ``on_train_step_end`` of step 15, with
``SaveTrainingStateCallback(save_every_n_steps=5, save_at_end=True)`` after it; both ranks must save
``step_15``, train on to the next agreement point (the epoch's end, step 16), stop there together and
save ``final`` together. MODE ``error``: rank 1 raises ``RuntimeError`` there instead; both ranks must end at once,
with no final save. MODE ``block``: at step 3 each rank writes ``pid<rank>`` into OUT_DIR, then rank 1
sleeps for good (rank 0 waits in a collective for it): the test kills the launcher, and both workers
must exit on their own. MODE ``sigterm``: as ``block``, but both ranks go on training slowly; the test
sends SIGTERM to torchrun, which forwards it: both must save ``interrupted`` together and exit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer
from pta.callbacks import SaveTrainingStateCallback, StopTrainingError, TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data
from tests.distributed.workers._common import accelerator_options, rank, run_worker

STOP_AT_STEP = 15
"""Training step (counted from 1) at whose end rank 1 stops: 16 batches per epoch on each rank."""
AGREED_STEP = 16
"""The next point at which the processes agree (every ``agreement_interval`` = 10 steps here, or the
epoch's end, at step 16): both stop there."""
BLOCK_AT_STEP = 3
GRACE_S = 5.0
"""The trainer's ``interrupt_grace_s`` here: how long a worker may stay blocked after its SIGTERM."""


class QuickTrainer(DefaultTrainer):
    interrupt_grace_s: ClassVar[float] = GRACE_S
    agreement_interval: ClassVar[int | None] = 10  # fixed: the steps at which they agree do not depend on timing


class StopOnRankOne(TrainerCallback):
    def __init__(self, mode: str, out_dir: Path) -> None:
        self.mode, self.out_dir = mode, out_dir
        self.steps = 0
        self.stop_events = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1
        if self.mode in ("block", "sigterm") and self.steps == BLOCK_AT_STEP:
            (self.out_dir / f"pid{rank()}").write_text(str(os.getpid()))
            while self.mode == "block" and rank() == 1:
                time.sleep(1)  # SIGTERM's Python handler runs here, then the sleep goes on: only the watchdog ends it
        if self.mode == "sigterm" and self.steps >= BLOCK_AT_STEP:
            time.sleep(0.5)  # slow steps: the signal arrives mid-run
        if self.mode in ("stop", "error") and rank() == 1 and self.steps == STOP_AT_STEP:
            if self.mode == "error":
                raise RuntimeError("rank 1 failed on purpose")
            raise StopTrainingError("rank 1 asked to stop")

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.stop_events += 1


def main(out_dir: Path) -> dict[str, Any]:
    mode = sys.argv[2]
    model = mlp(seed=0)
    observer = StopOnRankOne(mode, out_dir)
    # The saver runs after the callback that stops: on rank 1 too, or rank 0 would wait in its save alone.
    saver = SaveTrainingStateCallback(out_dir / "states", save_every_n_steps=5, save_at_end=True)
    trainer = QuickTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                             callbacks=[observer, saver], accelerator_options=accelerator_options(),
                             interrupt_state_dir=out_dir / "interrupted")
    started = time.monotonic()
    raised, message = "nothing", ""
    try:
        trainer.train(regression_data(64, seed=1), num_epochs=2, per_device_batch_size=2)
    except Exception as error:  # noqa: BLE001 - the test inspects what each rank saw
        raised, message = type(error).__name__, str(error)
    return {
        "raised": raised, "message": message, "steps": observer.steps, "stop_events": observer.stop_events,
        "final_saved": (out_dir / "states" / "final").is_dir(), "seconds": time.monotonic() - started,
        "weights": [p.detach().clone() for p in trainer.get_model().parameters()],
    }


if __name__ == "__main__":
    run_worker(main)

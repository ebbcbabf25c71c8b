"""Issue 10, auto-resume: ``train(resume_from="auto")`` under elastic restarts and on two "nodes".

    torchrun --nproc_per_node 2 [--max-restarts 3] tests/distributed/workers/elastic_resume.py OUT_DIR MODE

MODE ``reference``: the uninterrupted run. MODE ``kill``: rank 1 SIGKILLs itself once, after update
``KILL_AT`` (a marker file in OUT_DIR makes it happen only in the first attempt); torchrun restarts
both workers, which continue from the latest state. MODE ``stop``: rank 1 stops the run after update
``STOP_AT`` (the processes agree; ``final`` is not saved), so that a second launch in MODE ``auto``
finishes it. Every mode saves a state every 2 updates into OUT_DIR/states and resumes with "auto".
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback
from pta.callbacks import SaveTrainingStateCallback, StopTrainingError
from pta.protocols import TrainerLike
from tests._helpers import manual_seed
from tests.distributed.workers._common import accelerator_options, rank, run_worker
from tests.distributed.workers.resume_every_step import data

EPOCHS, UPDATES_PER_EPOCH = 3, 4
KILL_AT, STOP_AT = 7, 6


class EveryStepAgreement(DefaultTrainer):
    agreement_interval = 1  # both nodes stop right after the update at which node 1 stops


class Fault(TrainerCallback):
    def __init__(self, mode: str, out_dir: Path) -> None:
        self.mode, self.marker = mode, out_dir / "killed_once"

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if rank() != 1:
            return
        if self.mode == "kill" and trainer.num_updates == KILL_AT and not self.marker.exists():
            self.marker.write_text("rank 1 killed itself here once\n")
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "stop" and trainer.num_updates == STOP_AT:
            raise StopTrainingError(f"rank 1 stops after update {STOP_AT}")


def main(out_dir: Path) -> dict[str, Any]:
    mode = sys.argv[2]
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))
    saver = SaveTrainingStateCallback(out_dir / "states", save_every_n_steps=2, save_at_end=False)
    trainer = EveryStepAgreement(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2),
                             callbacks=[Fault(mode, out_dir), saver], accelerator_options=accelerator_options(),
                             seed=5, interrupt_state_dir=out_dir / "interrupted")
    trainer.train(data(30, 0), EPOCHS, eval_dataset=data(13, 1), per_device_batch_size=4, resume_from="auto")
    history = trainer.run_history
    return {"params": [p.detach().clone() for p in trainer.get_model().parameters()],
            "history": {name: history.get_metric_values(name) for name in sorted(history.get_metric_names())},
            "num_updates": trainer.num_updates, "num_processes": trainer.run_config.num_processes,
            "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))}


if __name__ == "__main__":
    run_worker(main)

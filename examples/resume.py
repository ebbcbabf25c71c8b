"""Save a training state in the middle of a run, then resume from it and end exactly where the
uninterrupted run ended.

A callback calls ``trainer.save_training_state(dir)`` during epoch 2 (every process must call it; the
directory is written atomically). A new model, optimizer and trainer then continue with
``train(..., resume_from=dir)``: model, optimizer, scheduler, every RNG, the sampler position and the
run history are restored, only the remaining work is done, and on CPU in fp32 the final weights are
bit-identical to the uninterrupted run's. A SIGTERM/SIGINT during training saves such a state too
(``interrupt_state_dir``); ``resume_from="<dir>/latest"`` picks the newest complete state in ``<dir>``.

    python examples/resume.py --state-dir /tmp/pta_resume
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, TrainerPlaceholderValues, set_seed
from pta.callbacks import get_default_callbacks
from pta.protocols import TrainerLike


class SaveStateAt(TrainerCallback):
    """Saves a training state after training step ``step`` (counted from 0) of epoch ``epoch``."""

    def __init__(self, directory: Path, epoch: int, step: int) -> None:
        self.directory, self.epoch, self.step = directory, epoch, step

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
        if trainer.run_history.current_epoch == self.epoch and step == self.step:
            trainer.save_training_state(self.directory, checkpoint_kwargs={"note": "saved by SaveStateAt"})
            trainer.print(f"\nsaved a training state to {self.directory} (epoch {self.epoch}, step {step})")


Callbacks = list[TrainerCallback | type[TrainerCallback]]


def run(epochs: int, callbacks: Callbacks, resume_from: Path | None = None) -> DefaultTrainer:
    set_seed(1 if resume_from else 0)  # a resumed run's fresh model is overwritten by the state
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    trainer: DefaultTrainer = DefaultTrainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=callbacks, seed=0)
    train_set, test_set = digits_datasets()
    schedule = partial(OneCycleLR, max_lr=3e-3, epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                       steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH)
    trainer.train(train_set, num_epochs=epochs, eval_dataset=test_set, per_device_batch_size=32,
                  create_scheduler_fn=schedule, resume_from=resume_from)
    return trainer


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--save-at-step", type=int, default=10, help="the step of epoch 2 after which to save")
    parser.add_argument("--state-dir", type=Path, default=Path("training_state/resume_example"))
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)
    console: Callbacks = list(get_default_callbacks(progress_bar=not args.no_progress_bar))

    full = run(args.epochs, [SaveStateAt(args.state_dir, epoch=2, step=args.save_at_step), *console])
    resumed = run(args.epochs, [*console], resume_from=args.state_dir)

    weights_full, weights_resumed = full.get_model().state_dict(), resumed.get_model().state_dict()
    difference = max(float((weights_full[k] - weights_resumed[k]).abs().max()) for k in weights_full)
    same_history = all(full.run_history.get_metric_values(name) == resumed.run_history.get_metric_values(name)
                       for name in full.run_history.get_metric_names())
    full.print(f"\nmax weight difference, uninterrupted vs resumed: {difference}")
    full.print(f"identical run histories: {same_history}")
    return {"max_weight_difference": difference, "same_history": float(same_history),
            "eval_loss_epoch": float(resumed.run_history.get_latest_metric("eval_loss_epoch"))}


if __name__ == "__main__":
    main()

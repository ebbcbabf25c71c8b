"""SchedulerMixin alone on top of TrainerBase: what it adds.

``train(create_scheduler_fn=...)`` takes a factory, not a scheduler: the optimizer it must wrap is
created (prepared) by the trainer. ``TrainerPlaceholderValues`` stand for run facts that do not exist
yet and are resolved to what the scheduler will see: here OneCycleLR gets exactly the number of
optimizer updates of the run, so it ends at its minimum and is never stepped past its end (which
raises in OneCycleLR). The scheduler steps once per optimizer update and is saved in training states.

    python examples/mixin_scheduler.py
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from typing_extensions import override

from pta import SchedulerMixin, TrainerBase, TrainerCallback, TrainerPlaceholderValues, set_seed
from pta.protocols import TrainerLike


class ScheduledTrainer(SchedulerMixin, TrainerBase):
    """MRO: ScheduledTrainer, SchedulerMixin, TrainerBase, TrainerHooks, Generic, object."""


class RecordLearningRate(TrainerCallback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        assert trainer.optimizer is not None
        self.rates.append(float(trainer.optimizer.param_groups[0]["lr"]))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-lr", type=float, default=1e-2)
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    recorder = RecordLearningRate()
    trainer = ScheduledTrainer(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=args.max_lr),
                               callbacks=[recorder], seed=0)
    one_cycle = partial(
        OneCycleLR,
        max_lr=args.max_lr,
        epochs=TrainerPlaceholderValues.NUM_EPOCHS,
        steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
    )
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=32,
                  create_scheduler_fn=one_cycle)

    rates = recorder.rates
    result = {
        "optimizer_updates": float(len(rates)),
        "expected_updates": float(args.epochs * trainer.run_config.num_update_steps_per_epoch),
        "peak_lr": max(rates),
        "peak_at_update": float(rates.index(max(rates)) + 1),
        "final_lr": rates[-1],
        "eval_loss_epoch": float(trainer.run_history.get_latest_metric("eval_loss_epoch")),
    }
    for name, value in result.items():
        trainer.print(f"{name}: {value:.4g}")
    return result


if __name__ == "__main__":
    main()

"""DevicePlacementMixin alone on top of TrainerBase: what it adds.

Accelerate prepares the model, optimizer and dataloaders: parameters and batches are on the device
Accelerate chose (a GPU when there is one), the model is wrapped for DDP in a multi-process launch, a
loss function with buffers (here class weights) follows the model, and after the run ``trainer.model``
is your own unwrapped model again. ``TrainerBase`` without it refuses a multi-process launch.

    python examples/mixin_device.py
    torchrun --nproc_per_node 2 examples/mixin_device.py     # DDP over gloo on CPU
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from typing_extensions import override

from pta import DevicePlacementMixin, TrainerBase, TrainerCallback, set_seed
from pta._types import BatchOutput
from pta.protocols import TrainerLike


class PlacedTrainer(DevicePlacementMixin, TrainerBase):
    """MRO: PlacedTrainer, DevicePlacementMixin, TrainerBase, TrainerHooks, Generic, object."""


class ShowPlacement(TrainerCallback):
    """Records where things are during the first training step."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, **kwargs: Any
    ) -> None:
        if not self.seen:
            self.seen = {
                "trainer.device": str(trainer.device),
                "model during the run": type(trainer.model).__name__,
                "parameters": str(next(trainer.model.parameters()).device),
                "batch": str(batch[0].device),
            }


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    loss_func = nn.CrossEntropyLoss(weight=torch.ones(10))  # a module with a buffer
    show = ShowPlacement()
    trainer = PlacedTrainer(model, loss_func, torch.optim.AdamW(model.parameters(), lr=3e-3), callbacks=[show], seed=0)
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=32)

    seen = {
        **show.seen,
        "loss weights": str(loss_func.weight.device) if loss_func.weight is not None else "none",
        "model after the run is yours": str(trainer.model is model),
        "processes": str(trainer.run_config.num_processes),
        "eval_loss_epoch": f"{trainer.run_history.get_latest_metric('eval_loss_epoch'):.4f}",
    }
    for name, value in seen.items():
        trainer.print(f"{name}: {value}")
    return seen


if __name__ == "__main__":
    main()

"""Compose your own trainer from pta's mixins and override a hook.

``MyTrainer`` takes only gradient accumulation and device placement (no mixed precision, no scheduler,
no distributed evaluation), types its batches, and overrides ``calculate_train_batch_loss`` to add an
L2 penalty on the weights to the loss it back-propagates, while recording the plain data loss apart.

    python examples/custom_trainer.py
    torchrun --nproc_per_node 2 examples/custom_trainer.py
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import Tensor, nn
from typing_extensions import override

from pta import BatchOutput, DevicePlacementMixin, GradAccumMixin, TrainerBase, TrainerCallback, set_seed
from pta.callbacks import LogMetricsCallback
from pta.protocols import TrainerLike

Batch = list[Tensor]
"""What a DataLoader over a ``TensorDataset`` yields: ``[inputs, targets]``."""


class MyTrainer(GradAccumMixin[Batch], DevicePlacementMixin[Batch], TrainerBase[Batch]):
    """Gradient accumulation + device placement, and a loss with an L2 penalty.

    MRO: MyTrainer, GradAccumMixin, DevicePlacementMixin, TrainerBase, TrainerHooks, Generic, object.
    """

    l2: float = 1e-4

    @override
    def training_run_start(self) -> None:
        super().training_run_start()  # cooperative hooks call super(): first in *_start hooks
        self.data_loss_sum = torch.zeros((), device=self.device)
        self.data_loss_count = 0

    @override
    def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
        inputs, targets = batch  # typed: the trainer is parametrised with its batch type
        assert self.loss_func is not None
        outputs = self.model(inputs)
        data_loss = self.loss_func(outputs, targets)
        weights = [p for p in self.model.parameters() if p.ndim > 1]
        penalty = sum((w.pow(2).sum() for w in weights), torch.zeros((), device=self.device))
        self.data_loss_sum += data_loss.detach()  # stays on the device: no host sync per step
        self.data_loss_count += 1
        return {"loss": data_loss + self.l2 * penalty, "model_outputs": outputs, "batch_size": targets.size(0)}

    @override
    def train_epoch_end(self) -> None:
        super().train_epoch_end()
        mean = float(self.data_loss_sum.item()) / max(self.data_loss_count, 1)
        self.run_history.update_metric("train_data_loss", mean)
        self.data_loss_sum.zero_()
        self.data_loss_count = 0


class PrintEpoch(TrainerCallback):
    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print(f"\nepoch {trainer.run_history.current_epoch}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--accumulation", type=int, default=2)
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    trainer = MyTrainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=3e-3),
        callbacks=[PrintEpoch(), LogMetricsCallback()],
        seed=0,
    )
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set,
                  per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation)
    history = trainer.run_history
    return {name: float(history.get_latest_metric(name)) for name in sorted(history.get_metric_names())}


if __name__ == "__main__":
    main()

"""DistributedEvalMixin (with the DevicePlacementMixin it needs) on top of TrainerBase: what it adds.

Across processes, evaluation counts every sample exactly once. Accelerate would pad the last batches
with repeated samples; here the 360 test samples in batches of 16 make 23 batches, 12 on one process
and 11 on the other: the process that runs out repeats a batch only to keep collectives in step
(``trainer.eval_step_is_padding``), and ``trainer.gather`` and the loss leave that step out.
``eval_loss_epoch`` is the exact mean over all samples, and ``trainer.predict`` returns one row per
sample, in dataset order, on every process.

    python examples/mixin_distributed_eval.py
    torchrun --nproc_per_node 2 examples/mixin_distributed_eval.py     # two CPU processes, gloo
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from typing_extensions import override

from pta import DevicePlacementMixin, DistributedEvalMixin, TrainerBase, TrainerCallback, set_seed
from pta.protocols import TrainerLike


class ExactEvalTrainer(DistributedEvalMixin, DevicePlacementMixin, TrainerBase):
    """MRO: ExactEvalTrainer, DistributedEvalMixin, DevicePlacementMixin, TrainerBase, TrainerHooks, Generic, object."""


class CountGathered(TrainerCallback):
    """Gathers the targets of every evaluation step from all processes and counts them."""

    def __init__(self) -> None:
        self.gathered = 0

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.gathered = 0

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch: Any, **kwargs: Any) -> None:
        self.gathered += trainer.gather(batch[1]).shape[0]  # padding steps contribute no rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    counter = CountGathered()
    trainer = ExactEvalTrainer(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3),
                               callbacks=[counter], seed=0)
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=32,
                  eval_dataloader_kwargs={"batch_size": args.eval_batch_size})

    predictions = trainer.predict(test_set, per_device_batch_size=args.eval_batch_size)
    inputs, targets = test_set.tensors
    with torch.no_grad():  # the same numbers computed in one piece, on this process alone
        reference_outputs = trainer.get_model().eval()(inputs.to(trainer.device)).cpu()
    result = {
        "processes": float(trainer.run_config.num_processes),
        "test_samples": float(len(test_set)),
        "gathered_in_last_eval": float(counter.gathered),
        "prediction_rows": float(predictions.shape[0]),
        "eval_loss_epoch": float(trainer.run_history.get_latest_metric("eval_loss_epoch")),
        "reference_loss": float(nn.functional.cross_entropy(reference_outputs, targets)),
        "max_prediction_difference": float((predictions - reference_outputs).abs().max()),
    }
    for name, value in result.items():
        trainer.print(f"{name}: {value:.6g}")
    return result


if __name__ == "__main__":
    main()

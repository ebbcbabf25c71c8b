"""Claims 1-4 on two processes: DDP sync, exact distributed eval losses, gather in dataset order
(uneven shards and padding steps included) and ``max_num_train_steps``.

    torchrun --nproc_per_node 2 tests/distributed/workers/train_eval.py OUT_DIR

Data, model and datasets come from ``tests._helpers`` with fixed seeds, so the pytest side rebuilds
them to compute the single-process reference values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from pta import ConfigurationError, DefaultTrainer
from pta.callbacks import TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data
from tests.distributed.workers._common import accelerator_options, run_worker

TRAIN_SIZE, EVAL_SIZE, UNEVEN_EVAL_SIZE = 48, 37, 33
BATCH_SIZE, EPOCHS, LR = 4, 3, 0.05
MAX_STEPS, MAX_STEPS_ACCUM, ACCUM = 8, 5, 2


def datasets() -> dict[str, Any]:
    return {
        "train": regression_data(TRAIN_SIZE, seed=1),
        "eval": regression_data(EVAL_SIZE, seed=2),
        "uneven_eval": regression_data(UNEVEN_EVAL_SIZE, seed=3),
    }


class Recorder(TrainerCallback):
    """Records what each rank saw; gathers eval outputs, targets and inputs every eval step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.train_losses: list[float] = []
        self.train_sizes: list[int] = []
        self.model_types: set[str] = set()
        self.eval_epochs: list[dict[str, Any]] = []
        self._current: dict[str, Any] = {}

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: Any, batch: Any, step: int,
                          **kwargs: Any) -> None:
        self.train_losses.append(float(batch_output["loss"].detach()))
        self.train_sizes.append(int(batch[1].shape[0]))
        self.model_types.add(type(trainer.model).__name__)

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        weights = {k: v.detach().clone() for k, v in trainer.get_model().state_dict().items()}
        self._current = {"weights": weights, "outputs": [], "targets": [], "inputs": [], "padding": [],
                         "local_rows": []}

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: Any, batch: Any, **kwargs: Any) -> None:
        current = self._current
        current["padding"].append(trainer.eval_step_is_padding)
        current["local_rows"].append(int(batch[1].shape[0]))
        current["outputs"].append(trainer.gather(batch_output["model_outputs"]).cpu())
        current["targets"].append(trainer.gather(batch[1]).cpu())
        current["inputs"].append(trainer.gather(batch[0]).cpu())

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        current = self._current
        for key in ("outputs", "targets", "inputs"):
            current[key] = torch.cat(current[key])
        self.eval_epochs.append(current)


def count_updates(optimizer: torch.optim.Optimizer) -> list[int]:
    """A list that grows by one on every real ``optimizer.step()`` (Accelerate's wrapper calls it)."""
    calls: list[int] = []

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        calls.append(1)

    optimizer.register_step_post_hook(hook)
    return calls


def make_trainer(recorder: Recorder) -> tuple[DefaultTrainer, list[int]]:
    model = mlp(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    updates = count_updates(optimizer)
    trainer: DefaultTrainer = DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=[recorder],
                                             accelerator_options=accelerator_options())
    return trainer, updates


def params(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def main(out_dir: Path) -> dict[str, Any]:
    data = datasets()
    result: dict[str, Any] = {}

    # 1 + 2: train with evaluation after every epoch, in a fixed data order.
    recorder = Recorder()
    trainer, updates = make_trainer(recorder)
    result["initial"] = params(trainer.model)
    trainer.train(data["train"], num_epochs=EPOCHS, eval_dataset=data["eval"], per_device_batch_size=BATCH_SIZE,
                  train_dataloader_kwargs={"shuffle": False})
    config = trainer.run_config
    result["train"] = {
        "num_processes": config.num_processes,
        "is_distributed": config.is_distributed,
        "is_world_process_zero": config.is_world_process_zero,
        "is_world_main_process": trainer.is_world_main_process,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "final": params(trainer.get_model()),
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
        "eval_loss_epoch": trainer.run_history.get_metric_values("eval_loss_epoch"),
        "train_losses": recorder.train_losses,
        "train_sizes": recorder.train_sizes,
        "model_types": sorted(recorder.model_types),
        "updates": len(updates),
        "eval_epochs": recorder.eval_epochs,
    }

    # 2 + 3: evaluate() with the trained weights: even shards (37 = 9 full batches + 1 of one sample,
    # 5 steps per rank) and uneven ones (33 = 8 full + 1: rank 0 has 5 batches, rank 1 has 4).
    for name in ("eval", "uneven_eval"):
        recorder.reset()
        trainer.evaluate(data[name], per_device_batch_size=BATCH_SIZE)
        result[name] = {
            "evaluation_loss": trainer.run_history.get_metric_values("evaluation_loss"),
            "local_batches": len(trainer.eval_dataloader or ()),
            "epochs": recorder.eval_epochs,
        }

    # 4: max_num_train_steps counts optimizer updates, with and without accumulation.
    for name, max_steps, accumulation in (("max_steps", MAX_STEPS, 1), ("max_steps_accum", MAX_STEPS_ACCUM, ACCUM)):
        recorder = Recorder()
        trainer, updates = make_trainer(recorder)
        trainer.train(data["train"], num_epochs=50, per_device_batch_size=BATCH_SIZE, max_num_train_steps=max_steps,
                      gradient_accumulation_steps=accumulation)
        result[name] = {
            "updates": len(updates),
            "steps": len(recorder.train_losses),
            "epochs": len(trainer.run_history.get_metric_values("train_loss_epoch")),
            "final": params(trainer.get_model()),
        }

    # 5: an eval set too small to give every process a batch is refused before any eval step.
    try:
        trainer.evaluate(regression_data(3, seed=4), per_device_batch_size=BATCH_SIZE)
        result["tiny_eval"] = ""
    except ConfigurationError as error:
        result["tiny_eval"] = str(error)
    return result


if __name__ == "__main__":
    run_worker(main)

"""Runs an evaluation epoch every N optimizer updates, in the middle of training epochs."""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from pta._types import BatchOutput
from pta.callbacks._trainer_access import UpdateCounter, check_positive, intermediate_evaluation
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class StepBasedEvaluationCallback(TrainerCallback):
    """Evaluates on the eval dataset after every ``eval_every_n_steps`` optimizer updates.

    Updates are counted over the whole run (across epochs, and continuing after a resume); under
    gradient accumulation one update is ``gradient_accumulation_steps`` batches. The evaluation runs in
    ``on_train_step_end``, which pta calls after the step's backward pass and optimizer update, through
    ``trainer.run_intermediate_evaluation()``: under ``torch.no_grad``, outside the step's autograd
    graph, recording ``intermediate_eval_loss`` and calling ``on_eval_epoch_start/end`` with
    ``is_intermediate=True``. The model is back in training mode afterwards.

    :param eval_every_n_steps: the number of optimizer updates between evaluations
    """

    def __init__(self, eval_every_n_steps: int) -> None:
        check_positive("eval_every_n_steps", eval_every_n_steps)
        self.eval_every_n_steps = eval_every_n_steps
        self._updates = UpdateCounter()

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        intermediate_evaluation(trainer, type(self).__name__)
        if trainer.eval_dataloader is None:
            raise ValueError("StepBasedEvaluationCallback needs an eval_dataset passed to train()")
        self._updates.start(trainer)

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        if not self._updates.step_end(trainer, step) or self._updates.count % self.eval_every_n_steps:
            return
        trainer.print(f"\nRunning evaluation after {self._updates.count} optimizer updates")
        intermediate_evaluation(trainer, type(self).__name__).run_intermediate_evaluation()
        trainer.model.train()
        trainer.print("\nResuming training...")

"""Keeps an exponential moving average (EMA) of the model's weights, evaluates it and saves the best one."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from typing_extensions import override

from pta._types import BatchOutput
from pta.callbacks._trainer_access import UpdateCounter, extra_eval_epochs
from pta.callbacks.base import CallbackHandler, TrainerCallback
from pta.callbacks.save_best import SaveBestModelCallback
from pta.protocols import TrainerLike
from pta.utils import ModelEma


class ModelEmaCallback(SaveBestModelCallback):
    """Maintains an EMA of the model's weights (:class:`pta.utils.ModelEma`), updated after every
    optimizer update, and saves it to ``save_path``.

    - The EMA is created from the (unwrapped) model at the start of each training run and updated after
      each optimizer update (not after each batch under gradient accumulation), from
      ``trainer.get_model()``, so DDP or ``torch.compile`` wrappers are looked through.
    - ``evaluate_during_training=True``: after each epoch's evaluation, one more evaluation epoch runs with
      the EMA weights swapped in for the model (then the model is swapped back), recording
      ``ema_model_eval_loss_epoch`` (the run history's prefix is ``ema_model_`` during it); only
      ``callbacks`` are called during that epoch. The EMA is saved whenever ``watch_metric`` improves
      (``SaveBestModelCallback``'s rules; the optimizer and scheduler are not saved with the EMA). Needs
      an ``eval_dataset``. Intermediate evaluations (``StepBasedEvaluationCallback``) do not evaluate the EMA.
    - ``evaluate_during_training=False``: the EMA is saved after every epoch.

    The EMA weights and the best value are saved in training states (``state_dict``), so a resumed run
    continues the same EMA. The model is never replaced by the EMA at the end of the run. Place this
    callback after callbacks that record metrics and before callbacks that log them.

    :param decay: the EMA decay per optimizer update (``ema = decay * ema + (1 - decay) * weights``)
    :param evaluate_during_training: evaluate the EMA after each epoch and save the best one
    :param save_path: the EMA checkpoint file
    :param watch_metric: the metric that decides which EMA is best
    :param greater_is_better: whether a higher ``watch_metric`` is better
    :param model_ema: the EMA class, called as ``model_ema(model, decay=decay)``
    :param callbacks: callbacks (instances or classes) called during the EMA's evaluation epochs
    """

    def __init__(
        self,
        decay: float = 0.99,
        evaluate_during_training: bool = True,
        save_path: str | Path = "ema_model.pt",
        watch_metric: str = "ema_model_eval_loss_epoch",
        greater_is_better: bool = False,
        model_ema: type[ModelEma] = ModelEma,
        callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = (),
    ) -> None:
        super().__init__(
            save_path=save_path,
            watch_metric=watch_metric,
            greater_is_better=greater_is_better,
            reset_on_train=False,
            save_optimizer=False,
            save_scheduler=False,
        )
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        self.decay = decay
        self.evaluate_during_training = evaluate_during_training
        self.model_ema_cls = model_ema
        self.callback_handler = CallbackHandler(callbacks)
        self.ema_model: ModelEma | None = None
        self._track_prefix = "ema_model_"
        self._updates = UpdateCounter()

    def _ema(self) -> ModelEma:
        if self.ema_model is None:
            raise RuntimeError("ModelEmaCallback: the EMA exists once a training run has started")
        return self.ema_model

    @contextmanager
    def _ema_swapped_in(self, trainer: TrainerLike) -> Generator[nn.Module, None, None]:
        """``trainer.model`` is the EMA module inside the block, the model again afterwards."""
        model, trainer.model = trainer.model, self._ema().module
        try:
            yield trainer.model
        finally:
            trainer.model = model

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        super().on_training_run_start(trainer)
        if self.evaluate_during_training and trainer.eval_dataloader is None:
            raise ValueError("ModelEmaCallback(evaluate_during_training=True) needs an eval_dataset passed to train(); "
                             "pass evaluate_during_training=False to only save the EMA after each epoch")
        self.ema_model = self.model_ema_cls(trainer.get_model(keep_torch_compile=False), decay=self.decay)
        self.ema_model.to(trainer.device)
        self._updates.start(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        """The best value and the EMA weights, saved in training states so a resumed run continues the EMA."""
        return {**super().state_dict(), "ema": self._ema().state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        super().load_state_dict(state_dict)
        self._ema().load_state_dict(state_dict["ema"])

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        if self._updates.step_end(trainer, step):
            self._ema().update(trainer.get_model(keep_torch_compile=False))

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        if not self.evaluate_during_training or is_intermediate:
            return
        runner = extra_eval_epochs(trainer, type(self).__name__)
        if runner.callback_handler is self.callback_handler:
            return  # this is the EMA's own evaluation epoch ending
        handler, history = runner.callback_handler, trainer.run_history
        prefix = history.metric_name_prefix
        trainer.print("Running evaluation on EMA model")
        with self._ema_swapped_in(trainer):
            runner.callback_handler = self.callback_handler
            history.set_metric_name_prefix(self._track_prefix)
            try:
                runner.run_evaluation_epoch("eval_loss_epoch")
            finally:
                runner.callback_handler = handler
                history.set_metric_name_prefix(prefix)

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        with self._ema_swapped_in(trainer):
            if self.evaluate_during_training:
                self._save_if_best(trainer)
            else:
                trainer.save_checkpoint(save_path=self.save_path, save_optimizer=False, save_scheduler=False)
                self.checkpoint_saved = True

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """The model keeps its own weights: the EMA is not loaded into it."""

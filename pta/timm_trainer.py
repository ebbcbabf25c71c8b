"""TrainerWithTimmScheduler: a DefaultTrainer driving timm-style schedulers (per-update and per-epoch steps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from torch.optim import Optimizer
from typing_extensions import override

from pta._types import BatchT
from pta.protocols import SchedulerFactory
from pta.schedulers.scheduler_base import SchedulerBase
from pta.default_trainer import DefaultTrainer


@runtime_checkable
class TimmSchedulerLike(Protocol):
    """What the trainer uses of a timm scheduler (``timm.scheduler.Scheduler``); timm is not a dependency.

    ``step(epoch, metric)`` sets the lr for epoch ``epoch`` (counted from 0) and ``step_update(num_updates)``
    the lr after ``num_updates`` optimizer updates; schedulers use one or the other (timm's ``t_in_epochs``).
    """

    def step(self, epoch: int, metric: float | None = None) -> None: ...

    def step_update(self, num_updates: int, metric: float | None = None) -> None: ...


def timm_scheduler_fn(factory: Callable[[Optimizer], TimmSchedulerLike]) -> SchedulerFactory:
    """Type a timm scheduler factory for ``train(create_scheduler_fn=...)``; returns ``factory`` itself.

    ``train()`` is typed for ``torch.optim`` style schedulers (``step()`` without arguments); a timm
    scheduler's ``step`` needs an epoch, so mypy rejects ``partial(timm.scheduler.CosineLRScheduler, ...)``
    there. Placeholders inside a ``functools.partial`` are still resolved by the trainer::

        trainer.train(ds, num_epochs=10, create_scheduler_fn=timm_scheduler_fn(
            partial(CosineLRScheduler, t_initial=TrainerPlaceholderValues.NUM_EPOCHS)))
    """
    return cast(SchedulerFactory, factory)  # the trainer checks the scheduler's shape when it creates it


class TrainerWithTimmScheduler(DefaultTrainer[BatchT, TimmSchedulerLike]):
    """A :class:`pta.DefaultTrainer` for timm schedulers (``step(epoch, metric)``, ``step_update(num_updates)``).

    Needs: a ``create_scheduler_fn`` whose scheduler has timm's ``step`` and ``step_update`` (checked when
        it is created; ``TypeError`` otherwise, also for ``pta.schedulers``, which belong in ``DefaultTrainer``).
    Provides: ``step_update(num_updates)`` after every optimizer update that was not skipped, with
        ``num_updates`` the optimizer updates of the run so far (continuing across epochs, counted like
        ``max_num_train_steps``, so gradient accumulation windows count once); ``step(epoch, metric)`` once
        at the end of every epoch, with or without an eval set, ``epoch`` being the number of completed
        epochs (timm's ``epoch + 1``) and ``metric`` what :meth:`scheduler_metric` returns.
    Overrides: ``configure_run``, ``scheduler_step``, ``training_run_epoch_end``.
    State: none (the update count is the trainer's own).
    """

    @override
    def configure_run(self) -> None:
        super().configure_run()
        self._timm_scheduler()

    def _timm_scheduler(self) -> TimmSchedulerLike | None:
        scheduler = cast(object, self.scheduler)  # typed as the timm protocol, but None outside a run or unchecked
        if scheduler is None:
            return None
        if isinstance(scheduler, SchedulerBase) or not isinstance(scheduler, TimmSchedulerLike):
            raise TypeError(
                f"TrainerWithTimmScheduler needs a timm-style scheduler with step(epoch, metric) and "
                f"step_update(num_updates); got {type(scheduler).__name__}. Use DefaultTrainer for "
                "torch.optim.lr_scheduler or pta.schedulers schedulers."
            )
        return scheduler

    def scheduler_metric(self) -> float | None:
        """The metric passed to the scheduler's ``step(epoch, metric)`` at each epoch end (default: none).

        Override it for metric-driven schedulers such as timm's ``PlateauLRScheduler``, e.g.
        ``return self.run_history.get_latest_metric("eval_loss_epoch")`` (mind the scheduler's ``mode``).
        """
        return None

    @override
    def scheduler_step(self) -> None:
        """``step_update`` with the number of updates including the one just made.

        Deliberately does not call ``super().scheduler_step()``: that calls ``scheduler.step()`` without an
        epoch, which a timm scheduler rejects (and which would advance its epoch schedule once per update).
        """
        scheduler = self._timm_scheduler()
        if scheduler is not None:
            # TrainerBase counts an update after its scheduler_step, so the update just made is not in it yet.
            scheduler.step_update(num_updates=self._num_updates + 1)

    @override
    def training_run_epoch_end(self) -> None:
        scheduler = self._timm_scheduler()
        if scheduler is not None:
            # current_epoch counts from 1 and moves on after this hook: it is the number of completed epochs.
            scheduler.step(self.run_history.current_epoch, self.scheduler_metric())
        super().training_run_epoch_end()

"""SchedulerMixin: learning-rate schedulers stepped once per optimizer update."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, cast

from typing_extensions import TypeVar, override

from pta._types import BatchT
from pta.base import TrainerBase
from pta.placeholders import replace_trainer_placeholder_values
from pta.protocols import SchedulerLike

SchedulerT = TypeVar("SchedulerT", default=Any)
"""The scheduler's own type (e.g. ``torch.optim.lr_scheduler.OneCycleLR``): ``DefaultTrainer[Batch, OneCycleLR]``.
The default, ``Any``, keeps every method of whatever scheduler the factory makes usable without a cast."""


class SchedulerMixin(TrainerBase[BatchT], Generic[BatchT, SchedulerT]):
    """Creates the scheduler from ``train(create_scheduler_fn=...)`` once the optimizer is prepared.

    Needs: nothing.
    Provides: ``create_scheduler_fn=`` in ``train()`` (a type error on trainers without this mixin);
        ``self.scheduler`` (``None`` until ``train()`` creates one, and in runs without a factory);
        ``TrainerPlaceholderValues`` resolved to what the scheduler will see (updates per epoch on each
        process, epochs, dataloader lengths); one ``scheduler.step()`` per optimizer update, none when
        the update was skipped (the base loop asks ``optimizer_step_was_skipped``).
    Overrides: ``configure_run``, ``create_scheduler``, ``training_state_dict``, ``load_training_state_dict``.
    State: ``scheduler``, created per training run; saved in training states.
    """

    supports_schedulers: ClassVar[Literal[True]] = True
    scheduler: SchedulerT
    """The run's scheduler (``None`` before the first ``train()``); declared here only, so that reading
    ``self.scheduler`` is a type error in a trainer without this mixin."""
    if not TYPE_CHECKING:
        scheduler = None  # a plain attribute here, over the base class's property for trainers without this mixin

    @override
    def configure_run(self) -> None:
        super().configure_run()
        if self._train_dataloader is not None:  # a training run (evaluate() keeps the last run's scheduler)
            made = self.create_scheduler() if self.create_scheduler_fn is not None else None
            self.scheduler = cast(SchedulerT, made)  # typed as the user parametrised the trainer (Any by default)

    @override
    def _scheduler_or_none(self) -> SchedulerLike | None:
        scheduler: SchedulerLike | None = getattr(self, "scheduler", None)  # per update: no cast() call
        return scheduler

    @override
    def create_scheduler(self) -> SchedulerLike:
        if self.create_scheduler_fn is None or self.optimizer is None:
            return super().create_scheduler()
        factory = replace_trainer_placeholder_values(self, self.create_scheduler_fn)
        scheduler: SchedulerLike = factory(self.optimizer)
        return scheduler

    @override
    def training_state_dict(self) -> dict[str, Any]:
        state = super().training_state_dict()
        scheduler = self._scheduler_or_none()
        state["scheduler"] = dict(scheduler.state_dict()) if scheduler is not None else None
        return state

    @override
    def load_training_state_dict(self, state: dict[str, Any]) -> None:
        super().load_training_state_dict(state)
        scheduler = self._scheduler_or_none()
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])

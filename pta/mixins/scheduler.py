"""SchedulerMixin: learning-rate schedulers stepped once per optimizer update."""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from pta._types import BatchT
from pta.base import TrainerBase
from pta.placeholders import replace_trainer_placeholder_values
from pta.protocols import SchedulerLike


class SchedulerMixin(TrainerBase[BatchT]):
    """Creates the scheduler from ``train(create_scheduler_fn=...)`` once the optimizer is prepared.

    Needs: nothing.
    Provides: ``TrainerPlaceholderValues`` resolved to what the scheduler will see (updates per epoch
        on each process, epochs, dataloader lengths); one ``scheduler.step()`` per optimizer update,
        none when the update was skipped (the base loop asks ``optimizer_step_was_skipped``).
    Overrides: ``configure_run``, ``create_scheduler``, ``training_state_dict``, ``load_training_state_dict``.
    State: ``scheduler`` (declared on ``TrainerBase``), created per training run; saved in training states.
    """

    supports_schedulers = True

    @override
    def configure_run(self) -> None:
        super().configure_run()
        if self.create_scheduler_fn is not None and self._train_dataloader is not None:
            self.scheduler = self.create_scheduler()

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
        state["scheduler"] = dict(self.scheduler.state_dict()) if self.scheduler is not None else None
        return state

    @override
    def load_training_state_dict(self, state: dict[str, Any]) -> None:
        super().load_training_state_dict(state)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

"""SchedulerMixin: learning-rate schedulers stepped once per optimizer update."""

from __future__ import annotations

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
    Overrides: ``configure_run``, ``create_scheduler``.
    State: ``scheduler`` (declared on ``TrainerBase``), created per training run.
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

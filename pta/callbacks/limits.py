"""Run only the first batches of each epoch: quick debugging runs and cheaper intermediate evaluations."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from typing_extensions import override

from pta.callbacks._trainer_access import check_positive, dataloaders
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike
from pta.utils import DataLoaderSlice


class LimitBatchesCallback(TrainerCallback):
    """Limits every training and evaluation epoch to its first ``num_batches`` batches (per process).

    The dataloaders are replaced by :class:`pta.utils.DataLoaderSlice` at the start of each training or
    evaluation run; ``len()`` of the training dataloader is then the limited length, so the last
    accumulation window and progress bars are right. Values computed before the run starts from the full
    length are not changed: ``TrainerPlaceholderValues`` for schedulers and the number of epochs that
    ``max_num_train_steps`` implies. A debugging tool: a run limited this way cannot be resumed.

    :param num_batches: the number of batches per epoch
    """

    def __init__(self, num_batches: int) -> None:
        check_positive("num_batches", num_batches)
        self.num_batches = num_batches

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        loaders = dataloaders(trainer, type(self).__name__)
        if loaders.train_dataloader is not None:
            loaders.train_dataloader = DataLoaderSlice(loaders.train_dataloader, self.num_batches)
        if loaders.eval_dataloader is not None:
            loaders.eval_dataloader = DataLoaderSlice(loaders.eval_dataloader, self.num_batches)

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        loaders = dataloaders(trainer, type(self).__name__)
        if loaders.eval_dataloader is not None:
            loaders.eval_dataloader = DataLoaderSlice(loaders.eval_dataloader, self.num_batches)


class _SwitchableLimit:
    """An eval dataloader whose iteration stops after ``limit`` batches while ``limit`` is set."""

    def __init__(self, dataloader: Iterable[Any]) -> None:
        self.dataloader = dataloader
        self.limit: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.dataloader) if self.limit is None else itertools.islice(self.dataloader, self.limit)

    def __len__(self) -> int:
        length = len(self.dataloader)  # type: ignore[arg-type]  # eval dataloaders have a length
        return length if self.limit is None else min(length, self.limit)


class LimitEvalStepsCallback(TrainerCallback):
    """Limits evaluation epochs to ``num_eval_steps`` steps in total over all processes (each process runs
    ``ceil(num_eval_steps / num_processes)``), by default only the intermediate ones
    (``StepBasedEvaluationCallback``), so the end-of-epoch evaluations still see the whole eval set.

    The eval dataloader is wrapped at the start of each run; the limit is switched on in
    ``on_eval_epoch_start`` (before the epoch reads its first batch) and off in ``on_eval_epoch_end``. Put
    this callback before ``ProgressBarCallback`` so the bar shows the limited length.

    :param num_eval_steps: the number of evaluation steps per epoch, over all processes
    :param limit_intermediate_only: limit only intermediate evaluations (``is_intermediate=True``)
    """

    def __init__(self, num_eval_steps: int, limit_intermediate_only: bool = True) -> None:
        check_positive("num_eval_steps", num_eval_steps)
        self.num_eval_steps = num_eval_steps
        self.limit_intermediate_only = limit_intermediate_only
        # The run's wrapper, kept here: a callback after this one (LimitBatchesCallback) may wrap it again.
        self._limiter: _SwitchableLimit | None = None

    def _wrap(self, trainer: TrainerLike) -> None:
        loaders = dataloaders(trainer, type(self).__name__)
        loader = loaders.eval_dataloader
        if loader is None or isinstance(loader, _SwitchableLimit):
            self._limiter = loader
        else:
            self._limiter = _SwitchableLimit(loader)
            loaders.eval_dataloader = self._limiter

    def _unwrap(self, trainer: TrainerLike) -> None:
        loaders = dataloaders(trainer, type(self).__name__)
        if isinstance(loaders.eval_dataloader, _SwitchableLimit):
            loaders.eval_dataloader = loaders.eval_dataloader.dataloader
        self._limiter = None

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._wrap(trainer)

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._wrap(trainer)

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        limiter = self._limiter
        if limiter is None or not (is_intermediate or not self.limit_intermediate_only):
            return
        processes = trainer.run_config.num_processes
        limiter.limit = -(-self.num_eval_steps // processes)
        trainer.print(f"Limiting evaluation to {limiter.limit} steps per process")

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        if self._limiter is not None:
            self._limiter.limit = None

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._unwrap(trainer)

    @override
    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._unwrap(trainer)

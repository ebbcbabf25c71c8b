"""Pre-decay and post-decay checkpoints for Warmup-Stable-Decay schedules (``pta.schedulers.WSDLrScheduler``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from typing_extensions import override

from pta.callbacks._trainer_access import training_states, updates_done
from pta.callbacks.base import TrainerCallback
from pta.checkpoint import CheckpointError
from pta.protocols import TrainerLike


@runtime_checkable
class WSDSchedulerLike(Protocol):
    """What the callback uses of a WSD scheduler (``pta.schedulers.WSDLrScheduler`` has it all)."""

    decay_phase_ratio: float

    def get_checkpoint_steps(self) -> list[int]: ...

    def get_decay_info(self) -> Any: ...

    def get_phase_info(self, num_updates: int) -> Mapping[str, Any]: ...

    def get_current_step(self) -> int: ...


class WSDCheckpointCallback(TrainerCallback):
    """Saves the checkpoints of a WSD / WSD-S schedule at the update counts its scheduler gives.

    For each checkpoint period of the scheduler (``get_phase_info``):

    - **pre-decay**, after update ``pre_decay_step`` (just before the learning rate starts to decay): a full
      training state (``trainer.save_training_state``) in the directory
      ``<save_dir>/checkpoint_<step>_wsd_pre_decay``, to continue training from (WSD);
    - **post-decay**, after update ``period_end`` (the decay is complete): a portable checkpoint
      (``trainer.save_checkpoint``) in ``<save_dir>/checkpoint_<step>_wsd_post_decay.pt``, with the optimizer
      and scheduler states if ``save_optimizer`` / ``save_scheduler`` (WSD-S continues from these).

    Steps are the scheduler's update count (``get_current_step() + 1``), checked after each optimizer update.

    ``initial_checkpoint`` starts each training run from a saved checkpoint: a directory is loaded as a
    training state (model, optimizer, scheduler, RNG states) and a ``.pt`` file with ``load_checkpoint``.
    The run itself starts at its beginning (epoch 1, update 0): a continuation, not a resume; with
    ``WSDLrScheduler(is_continuation_from_checkpoint=True)`` the loaded scheduler state starts a new stable
    phase. A missing ``initial_checkpoint`` raises; a run resumed with ``train(resume_from=...)`` (its update
    count is not 0 at the start) keeps its resumed state and does not load it. To resume an interrupted
    run exactly, use ``resume_from`` instead.

    :param save_dir: the directory for the checkpoints (created when the first one is saved)
    :param save_optimizer: save the optimizer's state in post-decay checkpoints
    :param save_scheduler: save the scheduler's state in post-decay checkpoints
    :param initial_checkpoint: a checkpoint to start each training run from
    :raises ValueError: at the start of a run whose scheduler has no ``get_checkpoint_steps()``
    """

    def __init__(
        self,
        save_dir: str | Path = "checkpoints",
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        initial_checkpoint: str | Path | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.initial_checkpoint = Path(initial_checkpoint) if initial_checkpoint else None
        self.last_checkpoint_step: int | None = None
        self.checkpoint_steps: set[int] | None = None
        self.decay_fraction: float | None = None
        self.decay_info: Any = None
        self._last_seen_step = 0
        self._saved_step: int | None = None

    # ------------------------------------------------------------------ paths and saving
    def _get_export_checkpoint_path(self, step: int, checkpoint_type: str) -> Path:
        return self.save_dir / f"checkpoint_{step}_{checkpoint_type}.pt"

    def _get_training_state_path(self, step: int, checkpoint_type: str) -> Path:
        return self.save_dir / f"checkpoint_{step}_{checkpoint_type}"

    def _metadata(self, trainer: TrainerLike, step: int, checkpoint_type: str) -> dict[str, Any]:
        return {"step": step, "checkpoint_type": checkpoint_type, "total_steps": trainer.run_config.max_num_train_steps,
                "decay_fraction": self.decay_fraction, "timestamp": datetime.now().isoformat()}

    def _save_pre_decay(self, trainer: TrainerLike, step: int) -> None:
        state_dir = self._get_training_state_path(step, "wsd_pre_decay")
        self.save_dir.mkdir(parents=True, exist_ok=True)
        training_states(trainer, type(self).__name__).save_training_state(
            str(state_dir), checkpoint_kwargs=self._metadata(trainer, step, "wsd_pre_decay"))
        self.last_checkpoint_step = self._saved_step = step
        trainer.print(f"\nSaved wsd_pre_decay training state at step {step}")

    def _save_post_decay(self, trainer: TrainerLike, step: int) -> None:
        trainer.save_checkpoint(
            self._get_export_checkpoint_path(step, "wsd_post_decay"),
            checkpoint_kwargs=self._metadata(trainer, step, "wsd_post_decay"),
            save_optimizer=self.save_optimizer,
            save_scheduler=self.save_scheduler,
        )
        self.last_checkpoint_step = self._saved_step = step
        trainer.print(f"\nSaved wsd_post_decay checkpoint at step {step}")

    @staticmethod
    def _scheduler(trainer: TrainerLike) -> WSDSchedulerLike:
        scheduler: object = getattr(trainer, "scheduler", None)  # only trainers with SchedulerMixin have one
        if not isinstance(scheduler, WSDSchedulerLike):
            raise ValueError(  # noqa: TRY004 - pytorch-accelerated raises ValueError here"Scheduler must implement get_checkpoint_steps(), get_phase_info() and get_current_step(). "
                             f"Are you using WSDLrScheduler? Got {type(scheduler).__name__}")
        return scheduler

    # ------------------------------------------------------------------ loading
    def _load_initial_checkpoint(self, trainer: TrainerLike, path: Path) -> None:
        if not path.exists():
            raise CheckpointError(f"WSDCheckpointCallback: initial_checkpoint {path} does not exist")
        trainer.print(f"\nLoading checkpoint from {path}")
        if path.is_dir():
            metadata = _load_state_as_new_run(trainer, path)
            default_type = "wsd_pre_decay"
        else:
            metadata = trainer.load_checkpoint(path)
            default_type = "wsd_post_decay"
        step = metadata.get("step")
        self.last_checkpoint_step = step if isinstance(step, int) else None
        trainer.print(f"Loaded {metadata.get('checkpoint_type', default_type)} checkpoint from step {step}")

    # ------------------------------------------------------------------ events
    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._scheduler(trainer)
        self.last_checkpoint_step = self._saved_step = None
        if self.initial_checkpoint is not None:
            if updates_done(trainer):
                trainer.print(f"\nResumed run: not loading initial_checkpoint {self.initial_checkpoint}")
            else:
                self._load_initial_checkpoint(trainer, self.initial_checkpoint)
        scheduler = self._scheduler(trainer)  # read after loading: a continuation reconfigures it
        self.checkpoint_steps = set(scheduler.get_checkpoint_steps())
        self.decay_fraction = scheduler.decay_phase_ratio
        self.decay_info = scheduler.get_decay_info()
        current: object = scheduler.get_current_step()
        # a scheduler without an integer position yet (duck-typed) is treated as at its start
        self._last_seen_step = current + 1 if isinstance(current, int) else 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, step: int = 0, **kwargs: Any) -> None:
        scheduler = self._scheduler(trainer)
        total_steps = scheduler.get_current_step() + 1
        if total_steps == self._last_seen_step:
            return  # no update since the last check (a batch inside an accumulation window)
        self._last_seen_step = total_steps
        phase_info = scheduler.get_phase_info(total_steps)
        if total_steps == phase_info["pre_decay_step"]:
            trainer.print(f"\nWSD Lr Scheduler entering decay phase at step {total_steps}")
            self._save_pre_decay(trainer, total_steps)
        elif total_steps == phase_info["period_end"]:
            self._save_post_decay(trainer, total_steps)

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        scheduler = self._scheduler(trainer)
        total_steps = scheduler.get_current_step() + 1
        if total_steps != self._saved_step and total_steps == scheduler.get_phase_info(total_steps)["period_end"]:
            self._save_post_decay(trainer, total_steps)


def _load_state_as_new_run(trainer: TrainerLike, directory: Path) -> dict[str, Any]:
    """Load a training state's model, optimizer, scheduler and RNG states, but start the run at its beginning.

    ``load_training_state`` also restores the loop position (epoch, batch, update count, run history) for
    an exact resume; a continuation from a WSD checkpoint is a new run, so that position is put back to
    where this run starts. pta's ``TrainerBase`` keeps it in the private attributes reset here.
    """
    history = trainer.run_history
    history_state = getattr(history, "state_dict", None)
    saved_history = history_state() if callable(history_state) else None
    epoch = history.current_epoch
    metadata = training_states(trainer, "WSDCheckpointCallback").load_training_state(str(directory))
    load_history = getattr(history, "load_state_dict", None)
    if saved_history is not None and callable(load_history):
        load_history(saved_history)
    history._set_epoch(epoch)
    for name, value in (("_resume", None), ("_num_updates", 0), ("_epoch_phase", "train"), ("_batches_done", 0)):
        if hasattr(trainer, name):
            setattr(trainer, name, value)
    meter = getattr(trainer, "_train_loss", None)
    if meter is not None and callable(getattr(meter, "reset", None)):
        meter.reset()
    return metadata

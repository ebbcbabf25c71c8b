"""Which per-step hooks a run must call: pta's own defaults that do nothing in this run are skipped.

A Python call costs about a microsecond, and a training step of a small model a few hundred: the
hook chains of the mixins (each override calls ``super()``, a context hook builds a ``nullcontext``)
were most of pta's cost over a hand-written loop. As Lightning skips the hooks a user did not
override, the loop skips a per-step hook when every class that defines it is one of pta's, and pta's
code does nothing for this run's configuration (no accumulation, no mixed precision, no clipping, no
scheduler, no loss scaler). A hook that a user's class (or instance) defines anywhere is always called.
When every hook of a step is skipped or pta's default, the loop makes the defaults' calls in one
frame instead (``default_update``). The plan is made at the start of every epoch, from what cannot
change within one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pta.hooks import TrainerHooks


def only_defined_by(trainer: object, hook: str, owners: tuple[type, ...]) -> bool:
    """Whether ``hook`` of ``trainer`` is defined by ``owners`` alone (no user class, no instance attribute)."""
    if hook in vars(trainer):
        return False
    return all(cls in owners for cls in type(trainer).__mro__ if hook in cls.__dict__)


@dataclass(frozen=True)
class StepPlan:
    """``True`` where the loop must call the hook; ``False`` where the call would do nothing."""

    forward_context: bool = True
    train_step_context: bool = True
    is_update_step: bool = True
    scale_loss: bool = True
    before_optimizer_step: bool = True
    optimizer_step_was_skipped: bool = True
    scheduler_step: bool = True
    default_update: bool = False
    """The flags above are all ``False`` and the step's other hooks (``DEFAULT_UPDATE_HOOKS``) are pta's
    defaults: the loop calls ``TrainerStep._default_update``, which makes their calls in one frame."""


CALL_EVERY_HOOK = StepPlan()
DEFAULT_UPDATE_HOOKS = ("calculate_train_batch_loss", "backward_step", "optimizer_step", "optimizer_zero_grad")


def plan_steps(trainer: TrainerHooks[Any]) -> StepPlan:
    """The plan for ``trainer``'s next epoch (its run config and accelerator exist)."""
    from pta.hooks import TrainerHooks
    from pta.mixins.amp import AMPMixin
    from pta.mixins.grad_accum import GradAccumMixin

    config, accelerator = trainer.run_config, trainer._accelerator  # pyright: ignore[reportPrivateUsage]  # the loop's own adapter
    accumulating = config.gradient_accumulation_steps > 1
    clipping = config.gradient_clip_value is not None or config.gradient_clip_norm is not None

    def needed(hook: str, owners: tuple[type, ...], idle: bool) -> bool:
        return not (idle and only_defined_by(trainer, hook, owners))

    amp, accumulation = (AMPMixin, TrainerHooks), (GradAccumMixin, TrainerHooks)
    plan = StepPlan(
        forward_context=needed("forward_context", amp, accelerator.mixed_precision == "no"),
        train_step_context=needed("train_step_context", accumulation, not accumulating),
        is_update_step=needed("is_update_step", accumulation, not accumulating),
        scale_loss=needed("scale_loss", accumulation, not accumulating),
        before_optimizer_step=needed("before_optimizer_step", accumulation, not (accumulating or clipping)),
        optimizer_step_was_skipped=needed("optimizer_step_was_skipped", amp, not accelerator.steps_can_be_skipped),
        scheduler_step=needed("scheduler_step", (TrainerHooks,),
                              trainer._scheduler_or_none() is None),  # pyright: ignore[reportPrivateUsage]  # SchedulerMixin's run scheduler
    )
    if any(vars(plan).values()):  # (not astuple(), which deep-copies each field: 18 µs an epoch)
        return plan
    defaults = all(only_defined_by(trainer, hook, (TrainerHooks,)) for hook in DEFAULT_UPDATE_HOOKS)
    return replace(plan, default_update=defaults)

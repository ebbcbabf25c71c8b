"""AMPMixin: mixed precision through Accelerate."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from torch import Tensor, nn
from torch.optim import Optimizer

from typing_extensions import override

from pta._types import AcceleratorKwargs, BatchT, MixedPrecision
from pta.hooks import CallbackSpec
from pta.mixins.device import DevicePlacementMixin
from pta.tracking import RunHistory


class AMPMixin(DevicePlacementMixin[BatchT]):
    """Runs forward passes in reduced precision and keeps fp16 training stable.

    Needs: ``DevicePlacementMixin``, as its base class (the loss scaler lives in Accelerate's prepared
        optimizer), so no trainer can have this mixin without it.
    Provides: ``mixed_precision="no" | "fp16" | "bf16" | "fp8"`` as a constructor keyword (``None`` keeps
        Accelerate's config/env choice); autocast around ``calculate_*_batch_loss`` (loss included);
        scaled backward and unscale-before-clip through Accelerate; skipped-step detection, so the
        scheduler does not step when an fp16 overflow skipped the optimizer step.
    Overrides: ``accelerator_kwargs``, ``forward_context``, ``optimizer_step_was_skipped``.
    State: none.
    """

    supports_mixed_precision: ClassVar[Literal[True]] = True

    if TYPE_CHECKING:  # a declaration only (mixins have no __init__): TrainerBase's, with mixed_precision widened

        def __init__(
            self,
            model: nn.Module,
            loss_func: Callable[..., Tensor] | None,
            optimizer: Optimizer | None,
            callbacks: Iterable[CallbackSpec] | None = None,
            run_history: RunHistory | None = None,
            *,
            mixed_precision: MixedPrecision | None = None,
            seed: int | None = None,
            accelerator_options: AcceleratorKwargs | None = None,
            interrupt_state_dir: str | Path | None = "training_state/interrupted",
        ) -> None: ...

    @override
    def accelerator_kwargs(self) -> AcceleratorKwargs:
        kwargs = super().accelerator_kwargs()
        if self.mixed_precision is not None:
            kwargs["mixed_precision"] = self.mixed_precision
        return kwargs

    @override
    def forward_context(self) -> AbstractContextManager[None]:
        outer = super().forward_context()
        if self._accelerator.mixed_precision == "no":
            return outer
        stack = ExitStack()
        stack.enter_context(outer)
        stack.enter_context(self._accelerator.autocast())
        return stack  # type: ignore[return-value]  # ExitStack.__enter__ returns the stack, not None; nobody binds it

    @override
    def optimizer_step_was_skipped(self) -> bool:
        return super().optimizer_step_was_skipped() or self._accelerator.optimizer_step_was_skipped

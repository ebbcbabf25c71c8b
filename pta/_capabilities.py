"""What a trainer can do, as the type checker sees it: capability protocols and "needs a mixin" markers.

``TrainerBase.__init__`` and ``TrainerBase.train`` are overloaded on the type of ``self``: a trainer
that matches ``SupportsMixedPrecision`` (it has ``AMPMixin``) accepts ``mixed_precision=``; one that
does not sees ``mixed_precision: NeedsAMPMixin | None``, so mypy and pyright report the argument on
the user's line and name the missing mixin in the expected type. The markers have no instances.
"""

from __future__ import annotations

from typing import ClassVar, Literal, NoReturn, Protocol, final


class _Marker:
    __slots__ = ()

    def __new__(cls) -> NoReturn:
        raise TypeError(f"{cls.__name__} only appears in type errors; it has no instances")


@final
class NeedsAMPMixin(_Marker):
    """The type of ``mixed_precision=`` on a trainer without ``AMPMixin``: only ``None`` fits."""

    __slots__ = ()


@final
class NeedsGradAccumMixin(_Marker):
    """Part of the type of ``gradient_accumulation_steps`` on a trainer without ``GradAccumMixin``:
    only ``1`` fits."""

    __slots__ = ()


@final
class NeedsSchedulerMixin(_Marker):
    """The type of ``create_scheduler_fn=`` on a trainer without ``SchedulerMixin``: only ``None`` fits."""

    __slots__ = ()


class SupportsMixedPrecision(Protocol):
    """A trainer with ``AMPMixin``."""

    supports_mixed_precision: ClassVar[Literal[True]]


class SupportsGradAccumulation(Protocol):
    """A trainer with ``GradAccumMixin``."""

    accumulates_gradients: ClassVar[Literal[True]]


class SupportsSchedulers(Protocol):
    """A trainer with ``SchedulerMixin``."""

    supports_schedulers: ClassVar[Literal[True]]


class SupportsGradAccumulationAndSchedulers(SupportsGradAccumulation, SupportsSchedulers, Protocol):
    """A trainer with ``GradAccumMixin`` and ``SchedulerMixin``."""


def has_capability(trainer: object, name: str) -> bool:
    """The runtime side of the protocols above, for code that is not type-checked."""
    return getattr(type(trainer), name, False) is True

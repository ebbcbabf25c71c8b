"""Callbacks: observe and steer a run without changing the trainer's class."""

from pta.callbacks.base import (
    CallbackHandler,
    EventName,
    StopTrainingError,
    TrainerCallback,
)
from pta.callbacks.device import MoveModulesToDeviceCallback
from pta.callbacks.logging import LogMetricsCallback
from pta.callbacks.nan import NonFiniteLossError, TerminateOnNaNCallback
from pta.callbacks.progress import PrintProgressCallback, ProgressBarCallback


def get_default_callbacks(progress_bar: bool = True) -> tuple[type[TrainerCallback], ...]:
    """The callbacks a trainer gets by default; ``progress_bar=False`` leaves out the tqdm bars."""
    bar: tuple[type[TrainerCallback], ...] = (ProgressBarCallback,) if progress_bar else ()
    return (MoveModulesToDeviceCallback, TerminateOnNaNCallback, PrintProgressCallback, *bar, LogMetricsCallback)


__all__ = [
    "CallbackHandler",
    "EventName",
    "LogMetricsCallback",
    "MoveModulesToDeviceCallback",
    "NonFiniteLossError",
    "PrintProgressCallback",
    "ProgressBarCallback",
    "StopTrainingError",
    "TerminateOnNaNCallback",
    "TrainerCallback",
    "get_default_callbacks",
]

"""Callbacks: observe and steer a run without changing the trainer's class."""

from pta.callbacks.base import (
    CallbackHandler,
    CallbackMethodNotImplementedError,
    EventName,
    StopTrainingError,
    TrainerCallback,
)
from pta.callbacks.csv_logger import CSVLoggerCallback
from pta.callbacks.device import MoveModulesToDeviceCallback
from pta.callbacks.early_stopping import EarlyStoppingCallback
from pta.callbacks.ema import ModelEmaCallback
from pta.callbacks.limits import LimitBatchesCallback, LimitEvalStepsCallback
from pta.callbacks.logging import LogMetricsCallback
from pta.callbacks.nan import NonFiniteLossError, TerminateOnNaNCallback
from pta.callbacks.progress import PrintProgressCallback, ProgressBarCallback
from pta.callbacks.save_best import SaveBestModelCallback
from pta.callbacks.step_eval import StepBasedEvaluationCallback
from pta.callbacks.sync_batchnorm import ConvertSyncBatchNormCallback
from pta.callbacks.trackers import TrackerCallback
from pta.callbacks.training_state import SaveTrainingStateCallback
from pta.callbacks.wsd import WSDCheckpointCallback


def get_default_callbacks(progress_bar: bool = True) -> tuple[type[TrainerCallback], ...]:
    """The callbacks a trainer gets by default; ``progress_bar=False`` leaves out the tqdm bars."""
    bar: tuple[type[TrainerCallback], ...] = (ProgressBarCallback,) if progress_bar else ()
    return (MoveModulesToDeviceCallback, TerminateOnNaNCallback, PrintProgressCallback, *bar, LogMetricsCallback)


__all__ = [
    "CSVLoggerCallback",
    "CallbackHandler",
    "CallbackMethodNotImplementedError",
    "ConvertSyncBatchNormCallback",
    "EarlyStoppingCallback",
    "EventName",
    "LimitBatchesCallback",
    "LimitEvalStepsCallback",
    "LogMetricsCallback",
    "ModelEmaCallback",
    "MoveModulesToDeviceCallback",
    "NonFiniteLossError",
    "PrintProgressCallback",
    "ProgressBarCallback",
    "SaveBestModelCallback",
    "SaveTrainingStateCallback",
    "StepBasedEvaluationCallback",
    "StopTrainingError",
    "TerminateOnNaNCallback",
    "TrackerCallback",
    "TrainerCallback",
    "WSDCheckpointCallback",
    "get_default_callbacks",
]

"""Learning-rate schedulers stepped once per optimizer update (pytorch-accelerated's ``schedulers``).

Each scheduler takes the optimizer first and offers ``create_scheduler_fn(...)``, a factory for
``train(create_scheduler_fn=...)`` whose run-dependent arguments are filled in by the trainer.
"""

from pta.schedulers.cosine_scheduler import CosineLrScheduler
from pta.schedulers.scheduler_base import SchedulerBase, SchedulerSettingError, StatefulSchedulerBase
from pta.schedulers.wsd_scheduler import DecayPeriodInfo, WSDLrScheduler, estimate_checkpoint_steps

__all__ = [
    "CosineLrScheduler",
    "DecayPeriodInfo",
    "SchedulerBase",
    "SchedulerSettingError",
    "StatefulSchedulerBase",
    "WSDLrScheduler",
    "estimate_checkpoint_steps",
]

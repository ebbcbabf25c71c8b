"""Experiment trackers started for a run, and the names and types that describe them.

``pta._accelerate.start_trackers`` creates Accelerate's trackers and returns a ``TrackerGroup``; nothing
here imports Accelerate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


TRACKER_PACKAGES: dict[str, str] = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet-ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
"""Accelerate's tracker names and the package each one needs (``pip install <package>``)."""

TrackerConfigValue = bool | int | float | str
"""What a run's configuration (hyperparameters) may hold: trackers store these as-is."""


class ExperimentTracker(Protocol):
    """An instance of an ``accelerate.tracking.GeneralTracker`` subclass (a custom tracker)."""

    @property
    def name(self) -> str: ...

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None: ...


TrackerSpec = str | ExperimentTracker
"""A tracker by Accelerate's name (``"tensorboard"``, ``"wandb"``, ``"mlflow"``, ..., ``"all"``) or an instance."""


class TrackerGroup:
    """Accelerate experiment trackers started for one run (create them with ``start_trackers``)."""

    def __init__(self, trackers: list[Any]) -> None:
        self._trackers = trackers

    @property
    def names(self) -> list[str]:
        return [str(tracker.name) for tracker in self._trackers]

    def log(self, values: Mapping[str, float | int | str], step: int | None = None) -> None:
        """Log ``values`` to every tracker at ``step``."""
        for tracker in self._trackers:
            tracker.log(dict(values), step=step)

    def get(self, name: str, unwrap: bool = False) -> Any:
        """The tracker called ``name`` (``unwrap=True``: the library's own object, e.g. a ``SummaryWriter``)."""
        for tracker in self._trackers:
            if tracker.name == name:
                return tracker.tracker if unwrap else tracker
        raise KeyError(f"no tracker named {name!r}; started: {self.names}")

    def finish(self) -> None:
        """Flush and close every tracker (once; later calls do nothing)."""
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.finish()

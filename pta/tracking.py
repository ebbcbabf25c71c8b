"""Run history: the metrics a trainer records, one value per epoch (or per evaluation)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Any

from typing_extensions import override


class RunHistory(ABC):
    """The interface of a trainer's run history (same API as pytorch-accelerated's)."""

    @abstractmethod
    def get_metric_names(self) -> set[str]:
        """The names of all metrics recorded so far."""

    @abstractmethod
    def get_metric_values(self, metric_name: str) -> list[Any]:
        """Every value recorded for ``metric_name``, oldest first; an empty list for an unknown metric."""

    @abstractmethod
    def get_latest_metric(self, metric_name: str) -> Any:
        """The most recent value of ``metric_name``; ``ValueError`` if none was recorded."""

    @abstractmethod
    def update_metric(self, metric_name: str, metric_value: Any) -> None:
        """Record a value for ``metric_name`` (the prefix, if any, is prepended)."""

    @abstractmethod
    def set_metric_name_prefix(self, prefix: str = "") -> None:
        """Prepend ``prefix`` to every metric name written from now on; reads try the prefixed name first."""

    @property
    @abstractmethod
    def metric_name_prefix(self) -> str:
        """The prefix prepended to metric names."""

    @abstractmethod
    def delete_metric(self, metric_name: str) -> None:
        """Forget ``metric_name`` and all its values."""

    @property
    @abstractmethod
    def current_epoch(self) -> int:
        """The epoch in progress, counted from 1."""

    @abstractmethod
    def _increment_epoch(self) -> None: ...

    @abstractmethod
    def _set_epoch(self, epoch: int) -> None: ...

    @abstractmethod
    def reset(self) -> None:
        """Forget every metric and go back to epoch 1."""


class InMemoryRunHistory(RunHistory):
    """A :class:`RunHistory` kept in memory.

    Reading never creates a metric. The name prefix is prepended to every name written. A read looks
    up the prefixed name first and, if that was never recorded, the name as given, so writing and
    reading back one name under one prefix agree, and the full names from :meth:`get_metric_names`
    can always be read back (as in pytorch-accelerated).
    """

    def __init__(self) -> None:
        self._current_epoch = 1
        # A defaultdict as in pytorch-accelerated, whose users append to run_history._metrics[name] directly.
        self._metrics: defaultdict[str, list[Any]] = defaultdict(list)
        self._prefix = ""

    def _key(self, metric_name: str) -> str:
        """The name a value is written under: always prefixed (a name that already starts with the prefix
        is prefixed again, so it never lands in the unprefixed metric of the same name)."""
        return f"{self._prefix}{metric_name}"

    def _read_key(self, metric_name: str) -> str:
        key = self._key(metric_name)
        return key if key in self._metrics or metric_name not in self._metrics else metric_name

    @override
    def get_metric_names(self) -> set[str]:
        return set(self._metrics)

    @override
    def get_metric_values(self, metric_name: str) -> list[Any]:
        return list(self._metrics.get(self._read_key(metric_name), []))

    @override
    def get_latest_metric(self, metric_name: str) -> Any:
        key = self._read_key(metric_name)
        values = self._metrics.get(key)
        if not values:
            raise ValueError(f"No values have been recorded for the metric {key!r}")
        return values[-1]

    @override
    def update_metric(self, metric_name: str, metric_value: Any) -> None:
        self._metrics.setdefault(self._key(metric_name), []).append(metric_value)

    @override
    def set_metric_name_prefix(self, prefix: str = "") -> None:
        self._prefix = prefix

    @property
    @override
    def metric_name_prefix(self) -> str:
        return self._prefix

    @override
    def delete_metric(self, metric_name: str) -> None:
        self._metrics.pop(self._read_key(metric_name), None)

    @property
    @override
    def current_epoch(self) -> int:
        return self._current_epoch

    @override
    def _increment_epoch(self) -> None:
        self._current_epoch += 1

    @override
    def _set_epoch(self, epoch: int) -> None:
        self._current_epoch = epoch

    @override
    def reset(self) -> None:
        self._current_epoch = 1
        self._metrics = defaultdict(list)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this history (used by training-state checkpoints)."""
        return {"current_epoch": self._current_epoch, "metrics": {k: list(v) for k, v in self._metrics.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._current_epoch = int(state["current_epoch"])
        self._metrics = defaultdict(list, {str(k): list(v) for k, v in state["metrics"].items()})



class LossTracker:
    """A running, batch-size-weighted mean of Python floats (pytorch-accelerated's helper).

    The trainer itself keeps its loss sums on the device (``pta._meter.LossMeter``) to avoid a host
    sync per step; this class remains for code that used it directly.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_value = 0.0
        self.total_loss = 0.0
        self.running_count = 0
        self._average = 0.0

    def update(self, loss_batch_value: float, batch_size: int = 1) -> None:
        self.loss_value = loss_batch_value
        self.total_loss += loss_batch_value * batch_size
        self.running_count += batch_size
        self._average = self.total_loss / self.running_count

    @property
    def average(self) -> float:
        return self._average

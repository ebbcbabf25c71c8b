"""Multi-process stop agreement: no process ever enters a collective that another one has left.

A ``StopTrainingError`` or an exception raised on ONE process at a point where the processes may
diverge (a callback event between steps or epochs) is held back, and the processes exchange one
small flag at that point: then every process stops together (the same ``StopTrainingError``, the
final save done by all), or every process raises (an error: no final save at all). The flag travels
over a dedicated gloo group on the CPU, so it adds no device sync, and a mismatch with a model
collective cannot corrupt either. Single-process runs do none of this: exceptions propagate as
they are raised, with no host sync added.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist

from pta.callbacks.base import StopTrainingError
from pta.interrupt import DistributedRunError

__all__ = ["DistributedRunError", "StopAgreement"]

_CONTROL_GROUPS: dict[int, Any] = {}
_NONE, _STOP, _ERROR = 0, 1, 2


# torch.distributed leaves the parameters of these three functions unannotated: typed views of them,
# looked up when called (builds without distributed support lack them).
class _NewGroup(Protocol):
    def __call__(self, *, backend: str, timeout: timedelta | None) -> Any: ...


class _AllReduce(Protocol):
    def __call__(self, tensor: torch.Tensor, *, op: dist.ReduceOp.RedOpType, group: Any) -> object: ...


class _AllGatherObject(Protocol):
    def __call__(self, object_list: list[Any], obj: object, *, group: Any) -> None: ...


def _default_timeout() -> timedelta | None:
    group = dist.distributed_c10d._get_default_group()
    for device in ("cpu", "cuda"):
        try:
            timeout = group._get_backend(torch.device(device)).options._timeout
        except (RuntimeError, AttributeError):
            continue
        return timeout
    return None


def _control_group() -> Any:
    """One gloo group per default process group (creating it is itself a collective: all processes
    create it at the start of the same run)."""
    key = id(dist.distributed_c10d._get_default_group())
    if key not in _CONTROL_GROUPS:
        _CONTROL_GROUPS.clear()  # a new default group (a new launch in this process): old groups are dead
        new_group: _NewGroup = getattr(dist, "new_group")
        _CONTROL_GROUPS[key] = new_group(backend="gloo", timeout=_default_timeout())
    return _CONTROL_GROUPS[key]


PERIOD_S = 1.0
"""Without a fixed ``agreement_interval``: about how often the processes agree during training."""
_MAX_INTERVAL = 10_000


class StopAgreement:
    """Holds back a local stop or error until the processes agree on it (see the module docstring).

    Between steps they agree every ``interval`` steps, or, with ``interval=None``, about every
    ``PERIOD_S`` seconds: each agreement also exchanges every process's estimate of the steps in that
    time, and all take the smallest, so they keep agreeing at the same steps. A collective every few
    steps would cost small-model steps several percent; once a second costs nothing measurable, and a
    stop on one process still reaches all within about a second.
    """

    def __init__(self, num_processes: int, interval: int | None = None) -> None:
        distributed = num_processes > 1 and dist.is_available() and dist.is_initialized()
        self._group = _control_group() if distributed else None
        self.distributed = self._group is not None  # read at every step: an attribute, not a property
        self._pending: BaseException | None = None
        self._fixed = interval
        self.every = interval or 1  # until agreements have timed some steps
        self.next_step = self.every - 1  # index in its epoch of the step after which to agree next; read every step
        self._last: tuple[float, int | None] = (0.0, None)  # time of the last agreement, steps done in its epoch

    def hold(self, error: Exception) -> None:
        """Hold back ``error`` (a ``StopTrainingError`` or any exception) until the next ``agree()``;
        the first one held wins."""
        if self._pending is None:
            self._pending = error

    def broadcast(self, value: Any) -> Any:
        """Process 0's ``value`` on every process (one collective; none in single-process runs)."""
        if self._group is None:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0, group=self._group)
        return holder[0]

    def _proposal(self, done: int | None) -> int:
        """The steps to the next agreement that this process proposes, ``done`` steps into the epoch
        (``None``: not between training steps)."""
        if self._fixed is not None or done is None:
            return self.every
        started, at = self._last
        if at is None or done <= at:  # the last agreement was not between steps of this epoch: nothing timed
            return self.every
        elapsed = max(time.monotonic() - started, 1e-9)
        return min(max(round(PERIOD_S * (done - at) / elapsed), 1), _MAX_INTERVAL)

    def agree(self, signum: int = 0, step: int | None = None) -> int:
        """Exchange this process's state with all others; returns the highest pending signal number.
        ``step``: the index in its epoch of the training step just done, when agreeing between steps.

        Raises on EVERY process when any of them holds a stop (``StopTrainingError`` with its reason) or
        an error (the error itself where it happened, ``DistributedRunError`` elsewhere).
        """
        if self._group is None:
            return signum
        pending, self._pending = self._pending, None
        code = _NONE if pending is None else _STOP if isinstance(pending, StopTrainingError) else _ERROR
        done = None if step is None else step + 1  # other agreements come at an epoch's start or end
        flags = torch.tensor([code, signum, -self._proposal(done)], dtype=torch.int64)
        all_reduce: _AllReduce = getattr(dist, "all_reduce")
        all_reduce(flags, op=dist.ReduceOp.MAX, group=self._group)
        worst, highest_signum, self.every = int(flags[0]), int(flags[1]), -int(flags[2])  # the smallest proposal
        self._last = (time.monotonic(), done)
        self.next_step = (done or 0) + self.every - 1
        if worst == _NONE:
            return highest_signum
        reasons: list[Any] = [None] * dist.get_world_size(self._group)
        mine = None if pending is None else (code, type(pending).__name__, str(pending))
        all_gather_object: _AllGatherObject = getattr(dist, "all_gather_object")
        all_gather_object(reasons, mine, group=self._group)
        rank, (_, kind, message) = next((r, reason) for r, reason in enumerate(reasons)
                                        if reason is not None and reason[0] == worst)
        if worst == _ERROR:
            if pending is not None and code == _ERROR:
                raise pending
            raise DistributedRunError(f"process {rank} failed with {kind}: {message}; every process stops "
                                      f"(the final save is skipped)")
        if isinstance(pending, StopTrainingError):
            raise pending
        raise StopTrainingError(f"{message} (process {rank})")

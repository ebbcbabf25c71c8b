"""Elastic restarts under ``torchrun --max-restarts``: a fresh store namespace for each attempt.

torch 2.13's elastic agent hosts one TCP store for its workers and reuses it across restarts without
a per-attempt prefix. A restarted worker can then read the address that a dead peer of the previous
attempt left there and fail with gloo's "Connection refused" (it happens whenever one worker of the
new attempt starts later than another). Opening the CPU process group on a store prefixed by the
restart count avoids it; Accelerate then adopts the initialised group.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch.distributed as dist
from torch._C._distributed_c10d import TCPStore
from torch.distributed.distributed_c10d import PrefixStore

DEFAULT_TIMEOUT = timedelta(minutes=30)


def init_elastic_cpu_group(cpu: bool, handlers: Iterable[Any]) -> None:
    """Initialise the default gloo group for a CPU run launched by an elastic agent (else do nothing).

    ``handlers`` are Accelerate's ``kwargs_handlers``; a ``timeout`` on one of them (``InitProcessGroupKwargs``)
    is kept."""
    if (not cpu or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
            or not dist.is_available() or dist.is_initialized()):
        return
    timeout = next((t for t in (getattr(h, "timeout", None) for h in handlers) if isinstance(t, timedelta)),
                   DEFAULT_TIMEOUT)
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, False, timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("gloo", store=PrefixStore(f"pta/attempt_{attempt}", store), rank=rank,
                            world_size=world_size, timeout=timeout)

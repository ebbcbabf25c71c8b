"""Several workers' scenarios in one launch: two interpreters starting and importing torch are most of a
short scenario's time (about 6 of its 9 seconds on the 2-core CI machine), so the scenarios that need
nothing of their own from the launch (arguments, environment, signals, a fresh process) share one.

    torchrun --nproc_per_node 2 tests/distributed/workers/scenarios.py OUT_DIR MODULE:FUNCTION ...

``FUNCTION(out_dir)`` of each module runs in turn as its own launch would run it: Accelerate's
process-global state forgotten and torch's default generator at a fresh process's seed. What it
returns is written to ``OUT_DIR/<MODULE-FUNCTION>/rank<R>.pt`` (``load_results`` reads it). The process
group is set up first with the workers' bounded timeout, so a collective that waits for a process
that went another way raises instead of hanging. The first failure ends the launch (the other
process's next collective then fails at once); the scenarios after it write nothing, and the test
that reads one says so (``tests/distributed/_launch.py``, ``ScenarioLaunch``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from pta import reset_accelerate_state
from tests._helpers import manual_seed
from tests.distributed.workers._common import PG_TIMEOUT_S, exit_after, write_result


def scenario_dir(out_dir: Path, name: str) -> Path:
    """Where the scenario ``MODULE:FUNCTION`` writes its results."""
    return out_dir / name.replace(":", "-")


def _function(name: str) -> Callable[[Path], dict[str, Any]]:
    module, _, function = name.partition(":")
    found: Callable[[Path], dict[str, Any]] = getattr(importlib.import_module(module), function)
    return found


def run_scenarios(out_dir: Path, names: list[str]) -> None:
    fresh_seed = torch.initial_seed()  # a new process's default generator seed
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=PG_TIMEOUT_S))
    for name in names:
        reset_accelerate_state()
        manual_seed(fresh_seed)
        directory = scenario_dir(out_dir, name)
        directory.mkdir(exist_ok=True)
        write_result(directory, _function(name)(directory))
        print(f"scenario {name} done", flush=True)


if __name__ == "__main__":
    exit_after(lambda: run_scenarios(Path(sys.argv[1]), sys.argv[2:]))

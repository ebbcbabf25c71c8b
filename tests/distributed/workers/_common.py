"""What every worker needs: its rank, a bounded process-group timeout, result files, a clean exit."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
from accelerate.utils.dataclasses import InitProcessGroupKwargs  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information

from pta import AcceleratorKwargs

PG_TIMEOUT_S = 45
"""A collective that waits longer than this raises instead of hanging until the launcher's timeout."""


def rank() -> int:
    """This process's rank as the launcher set it (0 for a plain ``python`` run)."""
    return int(os.environ.get("RANK", "0"))


def accelerator_options(**extra: Any) -> AcceleratorKwargs:
    """Options for the trainer's Accelerator: a bounded process-group timeout (nothing about the CPU)."""
    options = AcceleratorKwargs(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=PG_TIMEOUT_S))])
    options.update(extra)  # type: ignore[typeddict-item]  # callers pass AcceleratorKwargs keys only
    return options


def result_path(out_dir: Path, process_rank: int) -> Path:
    return out_dir / f"rank{process_rank}.pt"


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """Write this rank's results atomically (a reader never sees half a file)."""
    final = result_path(out_dir, rank())
    tmp = final.with_suffix(".tmp")
    torch.save(result, tmp)
    os.replace(tmp, final)


def run_worker(main: Callable[[Path], dict[str, Any]]) -> None:
    """Run ``main(out_dir)`` and save what it returns (``exit_after``)."""
    out_dir = Path(sys.argv[1])
    exit_after(lambda: write_result(out_dir, main(out_dir)))


def exit_after(work: Callable[[], None]) -> None:
    """Run ``work`` on one thread, print whatever it raises, and leave with ``os._exit``: status 0, or 1
    after an exception (gloo may abort at a normal interpreter exit)."""
    torch.set_num_threads(1)
    code = 0
    try:
        work()
    except BaseException:  # noqa: BLE001 - report everything, SystemExit included, then exit non-zero
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def load_results(out_dir: Path, nproc: int = 2) -> list[dict[str, Any]]:
    """The result of each rank, rank order (for the pytest side)."""
    results: list[dict[str, Any]] = []
    for process_rank in range(nproc):
        path = result_path(out_dir, process_rank)
        assert path.exists(), f"rank {process_rank} wrote no result ({path})"
        loaded = torch.load(path, weights_only=True)
        assert isinstance(loaded, dict)
        results.append(cast("dict[str, Any]", loaded))  # what run_worker saved
    return results

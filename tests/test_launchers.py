"""The launch commands of docs/launching.md, run for real on CPU: which give two processes and which one.

``torchrun`` is covered by tests/distributed (test_launch.py runs examples/quickstart.py under it), plain
``python`` by tests/test_example.py (the quickstart as a user runs it).
Every launch runs in a clean environment (no ``ACCELERATE_*`` variables, ``OMP_NUM_THREADS=1``,
``HF_HOME`` in a temporary directory so no user Accelerate config file is picked up) with a timeout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.distributed._launch import free_port, run_command

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parent / "launch_scripts"
CHECK_RANKS = SCRIPTS / "check_ranks.py"
TIMEOUT_S = 120.0
# Not anchored: forked processes share stdout, so two reports can land on one line.
RANK_LINE = re.compile(r"RANK (\d+)/(\d+) distributed=(True|False) checksum=(-?\d+\.\d{12})")


def _accelerate_launch(*options: str) -> list[str]:
    executable = Path(sys.executable).with_name("accelerate")
    module = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    launcher = [str(executable)] if executable.exists() else module
    return [*launcher, "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), *options, str(CHECK_RANKS)]


def _ranks(output: str) -> list[tuple[int, int, bool, str]]:
    """The ``RANK r/N`` lines, sorted by rank."""
    return sorted((int(r), int(n), d == "True", c) for r, n, d, c in RANK_LINE.findall(output))


def test_accelerate_launch_multi_gpu_with_use_cpu_gives_two_synchronised_cpu_processes(tmp_path: Path) -> None:
    result = run_command(_accelerate_launch("--multi_gpu", "--num_processes", "2"), timeout=TIMEOUT_S,
                         env={"ACCELERATE_USE_CPU": "1", "HF_HOME": str(tmp_path)})
    ranks = _ranks(result.stdout)
    assert [(rank, size, distributed) for rank, size, distributed, _ in ranks] == [(0, 2, True), (1, 2, True)], \
        result.stdout[-3000:]
    assert ranks[0][3] == ranks[1][3], "the two processes ended with different weights: no gradient sync"


def test_accelerate_launch_cpu_flag_silently_starts_only_one_process(tmp_path: Path) -> None:
    """The trap docs/launching.md warns about: ``--cpu --num_processes 2`` without MPI is ONE process."""
    result = run_command(_accelerate_launch("--cpu", "--num_processes", "2"), timeout=TIMEOUT_S,
                         env={"HF_HOME": str(tmp_path)})
    assert [(rank, size, distributed) for rank, size, distributed, _ in _ranks(result.stdout)] == [(0, 1, False)], \
        result.stdout[-3000:]


def test_notebook_launcher_gives_two_synchronised_cpu_processes(tmp_path: Path) -> None:
    result = run_command([sys.executable, str(SCRIPTS / "notebook_launch.py"), "2"], timeout=TIMEOUT_S,
                         env={"HF_HOME": str(tmp_path)})
    ranks = _ranks(result.stdout)
    assert [(rank, size, distributed) for rank, size, distributed, _ in ranks] == [(0, 2, True), (1, 2, True)], \
        result.stdout[-3000:]
    assert ranks[0][3] == ranks[1][3]
    assert "notebook_launcher returned" in result.stdout

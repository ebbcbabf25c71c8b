"""Launch worker scripts as real processes (``torchrun`` or plain ``python``) with a timeout.

Every launch gets a clean environment: no ``ACCELERATE_*`` variables (plain ``torchrun`` must work as
users run it), no inherited rendezvous variables, ``OMP_NUM_THREADS=1`` and the repository root on
``PYTHONPATH`` so workers can import ``tests.distributed.workers``. On a timeout the whole process
group of the launch is killed and the test fails with everything the processes printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.workers._common import load_results, result_path
from tests.distributed.workers.scenarios import scenario_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"
DEFAULT_TIMEOUT_S = 120.0

_DROPPED_PREFIXES = ("ACCELERATE_", "TORCHELASTIC_")
_DROPPED = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
            "MASTER_ADDR", "MASTER_PORT", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"}


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def torchrun_command(script: Path, args: Sequence[str], nproc: int = 2) -> list[str]:
    """``torchrun --nproc_per_node N --master_port P script args``, with the venv's own torchrun."""
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), str(script), *args]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _kill_tree(pid: int) -> None:
    for victim in [pid, *_descendants(pid)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_command(
    command: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in its own session; fail the test on a timeout (or a non-zero exit when ``check``)."""
    proc = subprocess.Popen(
        list(command), cwd=REPO_ROOT, env=clean_env(env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)  # the launcher and every worker it started (torchrun gives them own sessions)
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            output = "(output unavailable: an orphaned process still holds the pipe)"
        pytest.fail(f"timed out after {timeout:.0f} s (a hang?): {' '.join(command)}\n{_tail(output)}")
    result = subprocess.CompletedProcess(list(command), proc.returncode, output, "")
    if check and proc.returncode != 0:
        pytest.fail(f"exit status {proc.returncode}: {' '.join(command)}\n{_tail(output)}")
    return result


def run_torchrun(
    script: Path | str,
    *args: str,
    nproc: int = 2,
    timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Launch ``script`` on ``nproc`` CPU processes exactly as a user would: plain ``torchrun``."""
    return run_command(torchrun_command(_script(script), args, nproc), timeout=timeout, env=env, check=check)


def run_python(
    script: Path | str,
    *args: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as one plain ``python`` process."""
    return run_command([sys.executable, str(_script(script)), *args], timeout=timeout, env=env, check=check)


class ScenarioLaunch:
    """One launch of ``workers/scenarios.py`` running the scenarios of every collected test that names one
    (``@pytest.mark.two_process_scenario("MODULE:FUNCTION")``, the ``two_process_scenarios`` fixture)."""

    def __init__(self, out_dir: Path, names: Sequence[str]) -> None:
        self.out_dir, self.names = out_dir, list(names)
        self._launched = False
        self._output, self._returncode = "(no output: the launch timed out, see the first test that read it)", 0

    def directory(self, name: str) -> Path:
        """The directory scenario ``name`` was given (``out_dir``) and wrote its results into."""
        return scenario_dir(self.out_dir, name)

    def results(self, name: str) -> list[dict[str, Any]]:
        """Each rank's result of scenario ``name``; the launch runs at the first call."""
        assert name in self.names, f"{name} is not in this launch: mark its test two_process_scenario({name!r})"
        if not self._launched:
            self._launched = True  # once, also when it times out (run_torchrun then fails this test)
            timeout = 60.0 + 60.0 * len(self.names)  # the longest scenario takes about 15 s here
            done = run_torchrun("scenarios.py", str(self.out_dir), *self.names, timeout=timeout, check=False)
            self._output, self._returncode = done.stdout, done.returncode
        directory = self.directory(name)
        if not all(result_path(directory, process_rank).exists() for process_rank in (0, 1)):
            pytest.fail(f"scenario {name} wrote no result: the launch of {self.names} ended with status "
                        f"{self._returncode}\n{_tail(self._output)}")
        return load_results(directory)


def _script(script: Path | str) -> Path:
    path = Path(script)
    return path if path.is_absolute() else WORKERS / path


def _tail(output: str | None, limit: int = 12_000) -> str:
    text = output or ""
    return text if len(text) <= limit else "...\n" + text[-limit:]

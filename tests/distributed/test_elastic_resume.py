"""Issue 10, auto-resume: a worker killed mid-run is restarted by ``torchrun --max-restarts`` and the
run ends bit-identical to an uninterrupted one; the same on two torchrun agents ("nodes") on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.distributed._launch import REPO_ROOT, WORKERS, _kill_tree, _tail, clean_env, free_port, run_command, \
    run_torchrun, torchrun_command
from tests.distributed.workers import elastic_resume as worker
from tests.distributed.workers._common import load_results

pytestmark = pytest.mark.slow

SCRIPT = WORKERS / "elastic_resume.py"
TIMEOUT_S = 240.0


def _assert_same_run(results: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    for got, want in zip(results, reference, strict=True):
        assert got["num_processes"] == 2
        assert got["num_updates"] == worker.EPOCHS * worker.UPDATES_PER_EPOCH
        assert all(torch.equal(a, b) for a, b in zip(got["params"], want["params"], strict=True))
        assert got["history"] == want["history"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("reference")
    output = run_torchrun(SCRIPT, str(out_dir), "reference", timeout=TIMEOUT_S).stdout
    assert "resume_from='auto': no training state" in output  # a fresh start
    return load_results(out_dir)


def test_torchrun_max_restarts_survives_a_killed_worker_and_ends_exactly(
        tmp_path: Path, reference: list[dict[str, Any]]) -> None:
    command = torchrun_command(SCRIPT, [str(tmp_path), "kill"])
    command[1:1] = ["--max-restarts", "3"]
    output = run_command(command, timeout=TIMEOUT_S).stdout
    assert (tmp_path / "killed_once").is_file()
    results = load_results(tmp_path)
    assert [r["restart_count"] for r in results] == [1, 1]
    assert f"Resuming from {tmp_path / 'states' / 'step_6'}" in output
    _assert_same_run(results, reference)


def _two_nodes(out_dir: Path, mode: str) -> list[str]:
    """Two torchrun agents, one process each, as nodes 0 and 1 of one run on loopback; their outputs."""
    port = free_port()
    agents: list[subprocess.Popen[str]] = []
    for node in (0, 1):
        command = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", "2", "--node_rank", str(node),
                   "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                   str(SCRIPT), str(out_dir), mode]
        agents.append(subprocess.Popen(command, cwd=REPO_ROOT, env=clean_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True))
    outputs: list[str] = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"two-node launch ({mode}) timed out")
    finally:
        for agent in agents:
            _kill_tree(agent.pid)
            agent.wait(timeout=30)
    for node, (agent, output) in enumerate(zip(agents, outputs, strict=True)):
        assert agent.returncode == 0, f"node {node} ({mode}) exited with {agent.returncode}\n{_tail(output)}"
    return outputs


def test_two_nodes_stop_together_and_auto_resume_exactly(tmp_path: Path, reference: list[dict[str, Any]]) -> None:
    first = _two_nodes(tmp_path, "stop")
    # The processes agreed on node 1's stop: each node prints it once (process zero of each node).
    for output in first:
        assert output.count(f"rank 1 stops after update {worker.STOP_AT}") == 1, output
        assert output.count("Saved training state to") == worker.STOP_AT // 2, output
    states = {p.name for p in (tmp_path / "states").iterdir()}
    assert f"step_{worker.STOP_AT}" in states and "final" not in states, states  # saved by both, then no final
    second = _two_nodes(tmp_path, "auto")
    for output in second:
        assert output.count(f"Resuming from {tmp_path / 'states' / f'step_{worker.STOP_AT}'}") == 1, output
    _assert_same_run(load_results(tmp_path), reference)

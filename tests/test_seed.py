"""No hidden global state: importing pta changes no RNG, and ``seed=`` alone makes a run reproducible.

Each check runs in a fresh interpreter (an import can only be observed once per process); the
interpreters are started together by one module-scoped fixture so that their start-up overlaps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import hashlib, importlib, json, pickle, pkgutil, random, sys
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    # advance every generator past its seed state, so that re-seeding with the same seed is visible too
    random.random(); np.random.rand(); torch.rand(1)

    def snapshot():
        return {
            "random": hashlib.sha256(pickle.dumps(random.getstate())).hexdigest(),
            "numpy": hashlib.sha256(pickle.dumps(np.random.get_state())).hexdigest(),
            "torch": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
            "torch_initial_seed": torch.initial_seed(),
        }

    before = snapshot()
    import pta
    imported = ["pta"]
    for module in pkgutil.walk_packages(pta.__path__, "pta."):
        importlib.import_module(module.name)
        imported.append(module.name)
    after = snapshot()

    def train(seed, noise):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        y = x @ torch.randn(4, 1, generator=g)
        torch.manual_seed(0)  # the same initial weights in every run
        model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), nn.Tanh(), nn.Linear(32, 1))
        initial = torch.cat([p.detach().flatten() for p in model.parameters()])
        # unrelated global RNG use before the run must not matter: the run is seeded by `seed=` alone
        torch.manual_seed(noise); random.seed(noise); np.random.seed(noise)
        trainer = pta.DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                                     callbacks=[], seed=seed)
        trainer.train(TensorDataset(x, y), 2, per_device_batch_size=8)  # shuffled: the default for training
        final = torch.cat([p.detach().flatten() for p in trainer.get_model().parameters()])
        return {"final": final.numpy().tobytes().hex(), "changed": not torch.equal(initial, final)}

    runs = {name: train(int(seed), int(noise)) for name, seed, noise in (arg.split(":") for arg in sys.argv[1:])}
    print(json.dumps({"import": {"before": before, "after": after, "imported": imported}, "runs": runs}))
""")

# Two fresh interpreters, each "name:seed:noise" for the runs it does, in order; the import check is
# made in both. "a" and "a_again" use the same seed in different processes.
PROCESSES = (("a:1:10",), ("a_again:1:20", "b:2:10"))


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    processes = [_start(SCRIPT, *runs) for runs in PROCESSES]
    outputs: dict[str, Any] = {"imports": []}
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, stderr
            output = json.loads(stdout.strip().splitlines()[-1])
            outputs["imports"].append(output["import"])
            outputs.update(output["runs"])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    yield outputs


def test_import_pta_leaves_every_rng_untouched(results: dict[str, Any]) -> None:
    for result in results["imports"]:
        assert "pta.trainer" in result["imported"] and "pta.callbacks" in result["imported"]
        assert result["after"] == result["before"]


def test_same_seed_gives_identical_weights(results: dict[str, Any]) -> None:
    assert results["a"]["changed"], "the run did not train"
    assert results["a"]["final"] == results["a_again"]["final"]


def test_different_seeds_give_different_weights(results: dict[str, Any]) -> None:
    assert results["b"]["changed"]
    assert results["a"]["final"] != results["b"]["final"]

"""Cost of training states: ``save_training_state`` against ``Accelerator.save_state`` on the same
objects, and ``train(resume_from=...)`` from early and late positions in an epoch.

    OMP_NUM_THREADS=1 python benchmarks/state_io.py save     # 50 MB model + AdamW state, 7 rounds
    OMP_NUM_THREADS=1 python benchmarks/state_io.py resume   # time to the first resumed step

``save``: runners ``accelerate`` (a prepared model/AdamW/dataloader after two steps, then
``accelerator.save_state``) and ``pta`` (the same after two steps of ``DefaultTrainer``, then
``save_training_state`` from a callback), each the fastest of 3 saves; the ratio pta/accelerate is
the number to read (target ≤ 1.2). ``resume``: a 20,000-batch epoch saved after batch 10 and after batch 19,990; the time from
``train(resume_from=...)`` to the first resumed step must not depend on the position (skipped batches
are skipped by index: no sample is loaded for them). Fresh processes, interleaved, paired medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from typing_extensions import override

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import manual_seed  # noqa: E402  (the benchmark directory is not a package)


def big_model() -> nn.Module:
    """12 layers of 1024x1024: 12.6 M float32 parameters, 50.4 MB."""
    manual_seed(0)
    return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(12)])


def _data(samples: int, features: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(samples, features, generator=g), torch.randn(samples, features, generator=g))


# ---------------------------------------------------------------------------- save (children)
SAVES = 3
"""Saves per child (each into a new directory); the fastest counts, so first-use costs do not."""


def save_accelerate(directory: Path) -> float:
    from accelerate import Accelerator  # type: ignore[attr-defined]  # accelerate ships no type information

    accelerator: Any = Accelerator(cpu=True)
    model = big_model()
    model, optimizer, loader = accelerator.prepare(
        model, torch.optim.AdamW(model.parameters(), lr=1e-4), DataLoader(_data(16, 1024), batch_size=8, shuffle=True))
    for x, y in loader:
        accelerator.backward(nn.functional.mse_loss(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
    elapsed: list[float] = []
    for index in range(SAVES):
        started = time.perf_counter()
        accelerator.save_state(str(directory / str(index)))
        elapsed.append(time.perf_counter() - started)
    return min(elapsed)


def save_pta(directory: Path, background: bool = False) -> float:
    """``save_training_state``; with ``background``, the time until it returns to training (the commit
    of the previous save is waited for outside the timed part, as training steps would cover it)."""
    from pta import DefaultTrainer, TrainerCallback
    from pta.protocols import TrainerLike

    elapsed: list[float] = []

    class SaveAtEnd(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
            pta_trainer = cast(DefaultTrainer, trainer)
            if step == 1:
                for index in range(SAVES):
                    pta_trainer.wait_for_save()
                    started = time.perf_counter()
                    save = pta_trainer.save_training_state_in_background if background else pta_trainer.save_training_state
                    save(directory / str(index))
                    elapsed.append(time.perf_counter() - started)

    model = big_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-4), callbacks=[SaveAtEnd()])
    trainer.train(_data(16, 1024), 1, per_device_batch_size=8)
    return min(elapsed)


# ---------------------------------------------------------------------------- resume (children)
class SlowToLoad(Dataset[tuple[Tensor, Tensor]]):
    """Each sample costs a little work to load, as a decoded image would."""

    def __init__(self, samples: int) -> None:
        self.data = _data(samples, 8)

    def __len__(self) -> int:
        return len(self.data)

    @override
    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.data[index]
        return x + torch.zeros(64, 8).sum(0), y  # a few microseconds of loading


class _Done(Exception):
    pass


def resume_from_position(directory: Path, position: int, batches: int = 20_000) -> float:
    """Seconds from ``train(resume_from=...)`` to the first resumed step; the state (saved after
    ``position`` batches of a ``batches``-batch epoch) is written on first use and then reused."""
    from pta import DefaultTrainer, TrainerCallback
    from pta.protocols import TrainerLike

    class SaveAt(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
            if step + 1 == position:
                trainer.save_training_state(directory)
                raise _Done

    class FirstStep(TrainerCallback):
        at: float | None = None

        @override
        def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
            self.at = time.perf_counter()
            raise _Done

    def trainer(callback: TrainerCallback) -> DefaultTrainer:
        manual_seed(0)
        model = nn.Linear(8, 8)
        return DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=1e-3), callbacks=[callback])

    dataset = SlowToLoad(batches)
    if not directory.exists():
        try:
            trainer(SaveAt()).train(dataset, 1, per_device_batch_size=1)
        except _Done:
            pass
    first = FirstStep()
    resumed = trainer(first)
    started = time.perf_counter()
    try:
        resumed.train(dataset, 1, per_device_batch_size=1, resume_from=directory)
    except _Done:
        pass
    assert first.at is not None
    return first.at - started


# ---------------------------------------------------------------------------- the parent
RUNNERS: dict[str, dict[str, Callable[[Path], float]]] = {
    "save": {"accelerate": save_accelerate, "pta": save_pta,
             "pta-background": lambda d: save_pta(d, background=True)},
    "resume": {"early": lambda d: resume_from_position(d, 10), "late": lambda d: resume_from_position(d, 19_990)},
}
FRESH_DIRECTORY = {"save": True, "resume": False}
"""Whether each child gets a new directory (saves are timed) or its runner's directory of earlier rounds."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=sorted(RUNNERS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--state", type=Path)
    args = parser.parse_args()
    if args.child:
        seconds = RUNNERS[args.what][args.child](args.state)
        args.out.write_text(json.dumps({"seconds": seconds}))
        sys.stdout.flush()
        os._exit(0)
    names = list(RUNNERS[args.what])
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for name in rng.sample(names, len(names)):
                out = Path(tmp) / f"{name}-{index}.json"
                state = Path(tmp) / (f"{name}-{index}" if FRESH_DIRECTORY[args.what] else name)
                subprocess.run([sys.executable, __file__, args.what, "--child", name, "--out", str(out),
                                "--state", str(state)], check=True,
                               capture_output=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
                times[name].append(json.loads(out.read_text())["seconds"])
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
    base = names[0]
    print(f"\n{args.what}: rounds={args.rounds} torch={torch.__version__}\n")
    print(f"| runner | median ms (min-max) | ratio to {base} (paired median, min-max) |\n|---|---|---|")
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[base], strict=True)]
        print(f"| {name} | {statistics.median(times[name]) * 1e3:.1f} ({min(times[name]) * 1e3:.1f}-"
              f"{max(times[name]) * 1e3:.1f}) | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()

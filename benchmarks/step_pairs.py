"""pta against the plain loop, each stepped in turn with a second plain loop: wall-clock ratios that a
VM's changes of speed do not move.

    OMP_NUM_THREADS=1 python benchmarks/step_pairs.py                          # pta-bare, pta, pta-defaults; 7 rounds
    OMP_NUM_THREADS=1 python benchmarks/step_pairs.py --runners pta-defaults \
        --callbacks 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{"path": "/tmp/m.csv"}'

On the 2-core VM of docs/performance.md, a core's speed flips between two states about 1.5x apart
within seconds, on each core on its own: whole runs (``overhead.py``) differ by tens of percent, and
even a step median (``step_medians.py``) depends on the state its run happened to get. Here one
process trains a runner and a second plain loop together: the runner collates each of its batches
with a function that first makes one step of the second loop (its own model, data and optimizer;
the same seeds, so both end with the same weights). That step is timed inside the call, and the
runner's step is the time from its end to the next call's start, so each pair of steps runs within
about two milliseconds, in the same state. A round's ratio is the sum of the runner's steps over the
second loop's (epoch ends and every-N-steps work included, only each run's first and last step left
out).

The two places are not alike: the outer loop's step also pays for returning from the inner one,
and the inner loop's code runs in caches the outer one left. So every round also runs the plain
loop of ``runners.run_plain`` (``overhead.py``'s ``plain``) in the runner's place, and a pta
runner's ratio to the plain loop is its round's ratio over the plain loop's in the same round. The
table gives the median over rounds, and the median of the per-step ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
# torch leaves default_collate's `batch` partly unannotated
from torch.utils.data import default_collate as torch_collate  # pyright: ignore[reportUnknownVariableType]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work, optimizer_step  # noqa: E402  (the benchmark directory is not a package)
from overhead import TARGETS  # noqa: E402
from runners import add_callbacks_argument, callback_specs, positive_int, run_in_this_process, runners  # noqa: E402

DEFAULT_RUNNERS = "pta-bare,pta,pta-defaults"


def _collate(samples: list[Any]) -> Any:
    """torch's default collation, in a Python call per batch as pta's side makes one."""
    return torch_collate(samples)


class PlainSteps:
    """The plain loop of ``runners.run_plain`` (one CPU process, fp32), one timed step per ``step()``."""

    def __init__(self, work: Work) -> None:
        self.model = work.model()
        self.loader: DataLoader[Any] = DataLoader(work.dataset(), **work.loader_kwargs(), collate_fn=_collate)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches: Iterator[Any] = iter(())
        self.started: list[float] = []
        self.ended: list[float] = []

    def step(self) -> None:
        self.started.append(time.perf_counter())
        batch = next(self.batches, None)
        if batch is None:  # the plain loop's next epoch
            self.model.train()
            self.batches = iter(self.loader)
            batch = next(self.batches)
        x, y = batch
        loss: torch.Tensor = self.loss_fn(self.model(x), y)
        torch.autograd.backward(loss)
        optimizer_step(self.optimizer)
        self.optimizer.zero_grad()
        self.ended.append(time.perf_counter())


def paired_round(name: str, work: Work, specs: dict[str, str]) -> tuple[list[float], list[float], float]:
    """One run of runner ``name`` (pta's or ``plain``) with a second plain loop stepped in turn: that
    loop's step times, the runner's, and the largest difference between their final weights."""
    plain = PlainSteps(work)

    def collate(samples: list[Any]) -> Any:
        plain.step()
        return torch_collate(samples)

    model = run_in_this_process(runners(specs)[name][0], replace(work, collate=collate))
    started, ended = plain.started, plain.ended
    if len(started) != work.steps:
        raise SystemExit(f"{name} collated {len(started)} batches for {work.steps} steps: "
                         "not a runner of this workload that collates with work.collate")
    plain_steps = [ended[k] - started[k] for k in range(1, work.steps - 1)]
    runner_steps = [started[k + 1] - ended[k] for k in range(1, work.steps - 1)]
    diff = max(float((a.detach() - b.detach()).abs().max()) for a, b in
               zip(model.parameters(), plain.model.parameters(), strict=True))
    return plain_steps, runner_steps, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", default=DEFAULT_RUNNERS, help="pta runners of overhead.py, comma-separated")
    parser.add_argument("--rounds", type=positive_int, default=7)
    parser.add_argument("--samples", type=positive_int, help="samples per epoch (default: the workload's)")
    parser.add_argument("--epochs", type=positive_int, help="epochs per run (default: the workload's)")
    add_callbacks_argument(parser)
    args = parser.parse_args()
    names = [name for name in args.runners.split(",") if name]
    specs = callback_specs(args.callbacks)
    if unknown := [name for name in names if name not in specs]:
        parser.error(f"--runners: {', '.join(unknown)} not among the pta runners ({', '.join(specs)})")
    overrides = {key: str(value) for key, value in (("samples", args.samples), ("epochs", args.epochs)) if value}
    work = Work(**WORKLOADS["overhead"], device="cpu", precision="no").with_overrides(overrides)
    if work.steps < 3:
        parser.error(f"--samples/--epochs: {work.steps} steps a run; at least 3 are needed "
                     "(the first and last are left out)")
    rounds: dict[str, list[tuple[list[float], list[float], float]]] = {name: [] for name in ["plain", *names]}
    for index in range(args.rounds):
        for name in rounds:
            rounds[name].append(paired_round(name, work, specs))
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
    print(f"\nworkload=overhead samples={work.samples} epochs={work.epochs} steps/run={work.steps} "
          f"rounds={args.rounds} torch={torch.__version__} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
    print("| runner | stepped loop µs/step | runner µs/step | summed steps over the stepped loop's (median, min-max) "
          "| over the plain loop in its place (median, min-max) | median per-step ratio | max abs ΔW | target |")
    print("|---|---|---|---|---|---|---|---|")
    floor = [sum(runner) / sum(plain) for plain, runner, _ in rounds["plain"]]
    for name, results in rounds.items():
        sums = [sum(runner) / sum(plain) for plain, runner, _ in results]
        ratios = [ratio / plain_ratio for ratio, plain_ratio in zip(sums, floor, strict=True)]
        per_step = statistics.median(statistics.median(b / a for a, b in zip(plain, runner))
                                     for plain, runner, _ in results)
        plain_us = statistics.median(statistics.median(plain) for plain, _, _ in results) * 1e6
        runner_us = statistics.median(statistics.median(runner) for _, runner, _ in results) * 1e6
        diff = max(d for _, _, d in results)
        target = TARGETS.get(name) if not args.samples and not args.epochs else None
        verdict = "" if target is None else (
            f"≤ {target:.2f}: {'met' if statistics.median(ratios) <= target and diff == 0 else 'NOT met'}")
        versus_plain = "" if name == "plain" else (
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
        print(f"| {name} | {plain_us:.1f} | {runner_us:.1f} | "
              f"{statistics.median(sums):.3f} ({min(sums):.3f}-{max(sums):.3f}) | {versus_plain} | {per_step:.3f} "
              f"| {diff:.3g} | {verdict} |")


if __name__ == "__main__":
    main()

"""Per-step cost of each runner on a busy machine: median step times, runners alternating in one process.

    OMP_NUM_THREADS=1 python benchmarks/step_medians.py                      # overhead workload, 30 rounds
    OMP_NUM_THREADS=1 python benchmarks/step_medians.py --runners plain,pta --rounds 60 --samples 2048
    OMP_NUM_THREADS=1 python benchmarks/step_medians.py --rounds 150 --samples 2048 --epochs 3   # epoch ends too
    OMP_NUM_THREADS=1 python benchmarks/step_medians.py --runners plain,pta-defaults \
        --callbacks 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{"path": "/tmp/m.csv"}'

``overhead.py`` times whole runs in fresh processes, as a user sees them; on a shared 2-core VM their
ratios swing by tens of percent, because the machine's speed changes between runs and within one.
Here every runner trains one short run at a time in this process (one epoch unless ``--epochs``),
in a new random order each round; a forward pre-hook on the model stamps every step, and a run's
figure is the *median* time between two steps, which ignores the steps an interruption slowed. Each
round compares its runs with the plain loop's (paired differences in µs per step, and how many rounds
the runner was the slower one); a column keeps only the rounds the machine ran at full speed
throughout (``_full_speed_rounds``). The median leaves out work done once an epoch or every N steps
(the NaN check's read, a logger's row): the last column compares mean steps (first to last step of
a run), which include it, and with ``--epochs`` above 1 the epochs' ends too.
The hook costs every runner the same; setup and the first step are not counted. Runners and workload
are those of ``overhead.py`` (``runners.py``, ``_work.py``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work  # noqa: E402  (the benchmark directory is not a package)
from runners import add_callbacks_argument, callback_specs, positive_int, run_in_this_process, runners  # noqa: E402

DEFAULT_RUNNERS = "plain,pta-bare,pta,pta-defaults"
FULL_SPEED = 1.1
"""A round counts as run at full speed when each runner's median step is within 10% of its fastest."""


def _stamping_models(stamps: list[float]) -> None:
    """Every model a runner builds (``Work.model``) appends the time to ``stamps`` when it is called."""
    build = Work.model

    def stamp(module: nn.Module, args: tuple[object, ...]) -> None:
        stamps.append(time.perf_counter())

    def model(self: Work) -> nn.Module:
        module = build(self)
        module.register_forward_pre_hook(stamp)
        return module

    Work.model = model  # type: ignore[method-assign]  # benchmark instrumentation


def _median_and_mean_step(stamps: list[float]) -> tuple[float, float]:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:])), (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", default=DEFAULT_RUNNERS)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--samples", type=int, help="samples per epoch (default: the workload's)")
    parser.add_argument("--epochs", type=positive_int, default=1,
                        help="epochs per run (more: the mean step includes epoch ends)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="overhead")
    parser.add_argument("--seed", type=int, default=0)
    add_callbacks_argument(parser)
    args = parser.parse_args()
    work = Work(**WORKLOADS[args.workload], device="cpu", precision="no").with_overrides(
        {"epochs": str(args.epochs), **({"samples": str(args.samples)} if args.samples else {})})
    table = runners(callback_specs(args.callbacks))
    names = ["plain", *[name for name in args.runners.split(",") if name and name != "plain"]]
    stamps: list[float] = []
    _stamping_models(stamps)

    def run(name: str) -> tuple[float, float]:
        stamps.clear()
        run_in_this_process(table[name][0], work)
        return _median_and_mean_step(stamps)

    results: dict[str, list[float]] = {name: [] for name in names}
    means: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(args.seed)
    for index in range(args.rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            median, mean = run(name)
            results[name].append(median)
            means[name].append(mean)
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
    plain = results["plain"]
    full = _full_speed_rounds(results)
    print(f"\nworkload={args.workload} samples={work.samples} epochs={work.epochs} steps/run={work.steps} "
          f"rounds={args.rounds} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
    print("| runner | median µs/step | µs/step over plain (median of rounds) | ratio to plain "
          f"| rounds slower than plain | ratio at full speed ({len(full)} rounds) | ratio of mean steps |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        times = results[name]
        diffs = [(t - p) * 1e6 for t, p in zip(times, plain, strict=True)]
        ratios = [t / p for t, p in zip(times, plain, strict=True)]
        at_full = f"{statistics.median(ratios[i] for i in full):.3f}" if full else "–"
        mean_ratio = statistics.median(m / p for m, p in zip(means[name], means["plain"], strict=True))
        print(f"| {name} | {statistics.median(times) * 1e6:.1f} | {statistics.median(diffs):+.1f} | "
              f"{statistics.median(ratios):.3f} | {sum(d > 0 for d in diffs)}/{len(diffs)} | {at_full} "
              f"| {mean_ratio:.3f} |")


def _full_speed_rounds(results: dict[str, list[float]]) -> list[int]:
    """The rounds in which every runner's median step was within ``FULL_SPEED`` of its fastest: the
    machine ran at its full speed throughout the round (a VM may slow down by half for seconds while
    reporting itself idle, e.g. when the host shares its core). The test treats every runner alike."""
    fastest = {name: min(times) for name, times in results.items()}
    rounds = len(next(iter(results.values())))
    return [i for i in range(rounds) if all(times[i] <= fastest[name] * FULL_SPEED for name, times in results.items())]


if __name__ == "__main__":
    main()

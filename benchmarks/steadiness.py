"""Is this machine steady enough for overhead.py's few-percent comparisons? The plain loop of the
overhead workload trains for ``--seconds``; every second it prints the median step of that second.

    OMP_NUM_THREADS=1 python benchmarks/steadiness.py --seconds 30

On an idle machine the per-second medians agree to a percent or two. Where they spread by more than
the ratios to be measured (the 2-core VM of docs/performance.md flips between about 600 and 950 µs a
step within seconds while the OS reports it idle), wall-clock ratios of whole runs mean little, and
the deterministic counts (``profile_step.py --valgrind``) are the better guide.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work, optimizer_step  # noqa: E402  (the benchmark directory is not a package)
from overhead import cpu_times, machine_use  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    if args.seconds < 1:
        parser.error("--seconds must be at least 1 (one median per second)")
    work = Work(**WORKLOADS["overhead"], device="cpu", precision="no")
    model, loader, loss_fn = work.model(), work.loader(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    medians: list[float] = []
    steps: list[float] = []
    before = cpu_times()
    last = window = time.perf_counter()
    end = last + args.seconds
    while last < end:
        for x, y in loader:
            torch.autograd.backward(loss_fn(model(x), y))
            optimizer_step(optimizer)
            optimizer.zero_grad()
            now = time.perf_counter()
            steps.append(now - last)
            last = now
            if now - window >= 1:
                medians.append(statistics.median(steps) * 1e6)
                print(f"second {len(medians):3}: median step {medians[-1]:7.1f} µs", flush=True)
                steps, window = [], now
    print(f"\n{machine_use(before, cpu_times())}")
    print(f"per-second medians: min {min(medians):.1f}, median {statistics.median(medians):.1f}, "
          f"max {max(medians):.1f} µs (max/min {max(medians) / min(medians):.3f})")


if __name__ == "__main__":
    main()

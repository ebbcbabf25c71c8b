"""What each callback event costs inside a training run, where a step median does not look.

    OMP_NUM_THREADS=1 python benchmarks/event_costs.py                          # pta-defaults, 6 epochs
    OMP_NUM_THREADS=1 python benchmarks/event_costs.py --runner pta --epochs 10
    OMP_NUM_THREADS=1 python benchmarks/event_costs.py \
        --callbacks 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{"path": "/tmp/m.csv"}'

Trains one pta runner of ``overhead.py`` on the overhead workload with a timer around every callback
method the handler dispatches, and prints, per callback and event, the calls, the median and slowest
call, and the total per epoch. Work done once an epoch or every N steps (an epoch line, a logger's
row, the NaN check's read) runs after hundreds of steps have filled the caches with other things; it
costs several times what ``timeit`` of the same code says, and a median step leaves it out
(``step_medians.py``'s mean-step column counts it). The timer adds about a microsecond a call.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work  # noqa: E402  (the benchmark directory is not a package)
from runners import (  # noqa: E402
    CALLBACK_SPECS, add_callbacks_argument, callback_specs, positive_int, run_in_this_process, runners)


def _timed(method: Callable[..., None], times: list[float]) -> Callable[..., None]:
    def call(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        method(*args, **kwargs)
        times.append(time.perf_counter() - started)

    return call


def time_events(times: dict[str, list[float]]) -> None:
    """Every handler built from now on times the methods it dispatches, into ``times[Callback.event]``."""
    from pta.callbacks.base import CallbackHandler

    rebuild = CallbackHandler._rebuild  # pyright: ignore[reportPrivateUsage]  # benchmark instrumentation

    def timing_rebuild(handler: CallbackHandler) -> None:
        rebuild(handler)
        for event, methods in handler._dispatch.items():  # pyright: ignore[reportPrivateUsage]  # as above
            methods[:] = [_timed(m, times[f"{type(getattr(m, '__self__')).__name__}.{event}"]) for m in methods]

    setattr(CallbackHandler, "_rebuild", timing_rebuild)  # noqa: B010  (benchmark instrumentation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", choices=sorted(CALLBACK_SPECS), default="pta-defaults")
    parser.add_argument("--epochs", type=positive_int, default=6)
    add_callbacks_argument(parser)
    args = parser.parse_args()
    work = Work(**WORKLOADS["overhead"], device="cpu", precision="no").with_overrides({"epochs": str(args.epochs)})
    times: dict[str, list[float]] = collections.defaultdict(list)
    time_events(times)
    run_in_this_process(runners(callback_specs(args.callbacks))[args.runner][0], work)
    print(f"\nrunner={args.runner} epochs={work.epochs} steps/epoch={work.steps // work.epochs} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
    print("| callback.event | calls | median µs | slowest µs | µs per epoch |")
    print("|---|---|---|---|---|")
    for name, spent in sorted(((n, s) for n, s in times.items() if s), key=lambda item: -sum(item[1])):
        print(f"| {name} | {len(spent)} | {statistics.median(spent) * 1e6:.1f} | {max(spent) * 1e6:.1f} "
              f"| {sum(spent) / work.epochs * 1e6:.0f} |")


if __name__ == "__main__":
    main()

"""Deterministic per-step cost of each runner, for a machine too busy for wall-clock timings.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py                     # function calls per step
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --top 25 --runners pta-defaults
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --valgrind          # CPU instructions per step
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --valgrind --runners plain,pta-defaults \
        --callbacks 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{"path": "/tmp/m.csv"}'

Calls: cProfile from the first training step to the end of the run (setup excluded), function calls
per step grouped by where the function lives (pta, accelerate, torch, C builtins, other), and with
``--top`` the pta/accelerate functions with the most calls per step. The counts do not depend on
machine load. ``--valgrind``: instructions (callgrind, no cache simulation) of two runs of different
lengths in fresh processes, differenced, so imports and setup cancel out; slow (minutes per runner).
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import os
import pstats
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work  # noqa: E402  (the benchmark directory is not a package)
from overhead import parse_runner  # noqa: E402
from runners import add_callbacks_argument, callback_specs, run_in_this_process, runners  # noqa: E402


def _group(filename: str) -> str:
    if f"{os.sep}pta{os.sep}" in filename:
        return "pta"
    if f"{os.sep}accelerate{os.sep}" in filename:
        return "accelerate"
    if f"{os.sep}torch{os.sep}" in filename:
        return "torch"
    return "C builtins" if filename == "~" else "other"


def profile_calls(spec: str, work: Work, top: int, specs: dict[str, str]) -> None:
    name, options = parse_runner(spec)
    work = work.with_overrides(options)
    profiler = cProfile.Profile()
    marks = 0

    def mark() -> None:
        nonlocal marks
        marks += 1
        if marks == 2:  # the first epoch starts
            profiler.enable()

    run_in_this_process(runners(specs)[name][0], work, mark, options)
    profiler.disable()
    stats = pstats.Stats(profiler)
    groups: collections.Counter[str] = collections.Counter()
    functions: list[tuple[float, str]] = []
    # pstats internals (not in typeshed): {(file, line, function): (primitive calls, calls, times, callers)}
    entries = cast("dict[tuple[str, int, str], tuple[Any, ...]]", stats.stats)  # type: ignore[attr-defined]  # pstats.Stats.stats is undeclared in typeshed
    for (filename, line, function), (_, calls, *_rest) in entries.items():
        group = _group(filename)
        groups[group] += calls
        if group in ("pta", "accelerate"):
            functions.append((calls / work.steps, f"{filename.rsplit(os.sep + group + os.sep, 1)[-1]}:{line}({function})"))
    total = sum(groups.values()) / work.steps
    print(f"{spec:28} {total:7.1f} calls/step: " + ", ".join(
        f"{group} {count / work.steps:.1f}" for group, count in sorted(groups.items())))
    for per_step, where in sorted(functions, reverse=True)[:top]:
        print(f"    {per_step:6.2f}  {where}")


def _instructions(spec: str, args: argparse.Namespace, epochs: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--cache-sim=no", f"--callgrind-out-file={out}",
                   sys.executable, str(Path(__file__).resolve().parent / "overhead.py"), "--child", f"{spec}:epochs={epochs}",
                   "--workload", args.workload, "--out", str(Path(tmp) / "result.json"),
                   *[item for pair in args.callbacks for item in ("--callbacks", pair)]]
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        match = re.search(r"^(?:summary|totals):\s*(\d+)", out.read_text(errors="replace"), re.MULTILINE)
        assert match is not None, "no instruction total in callgrind's output"
        return int(match.group(1))


def profile_instructions(spec: str, args: argparse.Namespace, work: Work) -> float:
    short, long = _instructions(spec, args, 1), _instructions(spec, args, 2)
    per_step = (long - short) / (work.steps // work.epochs)
    print(f"{spec:28} {per_step:12.0f} instructions/step", flush=True)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="overhead")
    parser.add_argument("--runners", default="plain,accelerate,pta-bare,pta,pta-defaults")
    parser.add_argument("--top", type=int, default=0, help="list this many pta/accelerate functions per runner")
    parser.add_argument("--valgrind", action="store_true", help="count instructions instead of calls")
    add_callbacks_argument(parser)
    args = parser.parse_args()
    work = Work(**WORKLOADS[args.workload], device="cpu", precision="no")
    results: dict[str, float] = {}
    for spec in args.runners.split(","):
        if args.valgrind:
            results[spec] = profile_instructions(spec, args, work)
        else:
            profile_calls(spec, work, args.top, callback_specs(args.callbacks))
    if args.valgrind and "plain" in results:
        for spec, value in results.items():
            print(f"{spec:28} {value / results['plain']:.3f} x plain")


if __name__ == "__main__":
    main()

"""Loop overhead of pta's DefaultTrainer against a plain PyTorch loop, on identical work.

Every measurement runs in a fresh process; runners are interleaved in a new random order each round
and compared round by round (paired ratios), then summarised by medians with min-max. All runners
see the same seeded model, data and data order, and the final weights of each are compared with the
baseline's (``plain``). Children print to a pipe the parent drains, as a job's log would. The line
above the table says how idle the machine was: the CPU time the hypervisor took (steal) and what
processes other than the benchmark used.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py                       # (a) 1 CPU thread, 7 rounds
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --processes 2         # (b) 2 processes (gloo) vs DDP
    OMP_NUM_THREADS=1 python benchmarks/overhead.py \\
        --runners plain,pta,pta:idle_callbacks=100,plain:epochs=30,pta:epochs=30   # (c) per-step cost scaling
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --state save          # (d) = benchmarks/state_io.py save
    python benchmarks/overhead.py --device cuda --precision bf16          # on a GPU machine
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --turns 32            # (a) where a core's speed flips

``--turns N`` starts a round's runners together and lets each train N batches in turn (one CPU core,
see ``benchmarks/turns.py``): the runs are still whole runs in fresh processes, but each one's
batches are timed next to every other's, so a VM's changes of speed hit all runners alike.

Runners: ``plain`` (hand-written PyTorch; under ``--processes`` a DDP loop with a DistributedSampler),
``accelerate`` (hand-written Accelerate loop), ``pta-bare`` (DefaultTrainer, no callbacks), ``pta``
(default callbacks without the console ones), ``pta-defaults`` (``DEFAULT_CALLBACKS``, console output
to the pipe), and ``pytorch-accelerated`` / ``lightning`` when installed. Options follow colons:
``epochs=N``, ``samples=N`` (any runner), ``idle_callbacks=N`` (pta runners: N callbacks that handle no
step event), ``sampler=torch`` (plain under ``--processes``: torch's DistributedSampler order instead
of Accelerate's, so weights are not comparable). ``--callbacks RUNNER=SPEC`` changes what a pta runner
adds (see ``runners.callbacks_from_spec``), e.g. the CSV logger's per-step tracking at its default interval:
``--callbacks 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{"path": "/tmp/m.csv"}'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work  # noqa: E402  (the benchmark directory is not a package)
from runners import add_callbacks_argument, callback_specs, positive_int, runners  # noqa: E402
from turns import Turn, take_turns  # noqa: E402

DEFAULT_RUNNERS = "plain,accelerate,pta-bare,pta,pta-defaults,pytorch-accelerated,lightning"
TARGETS = {"pta": 1.03, "pta-defaults": 1.05}
"""Ratios to the plain loop that docs/performance.md promises (CPU overhead workload, 1 thread)."""
TARGETS_DISTRIBUTED = {"pta": 1.05, "pta-defaults": 1.05}


def parse_runner(spec: str) -> tuple[str, dict[str, str]]:
    """``name:key=value:key=value`` -> (name, options)."""
    name, *parts = spec.split(":")
    return name, dict(part.split("=", 1) for part in parts if part)


# ---------------------------------------------------------------------------- the child
def child(spec: str, work: Work, out: Path, specs: dict[str, str], turn: Turn | None) -> None:
    name, options = parse_runner(spec)
    work = work.with_overrides(options)
    if turn is not None:
        work = replace(work, collate=turn.collate)
    marks: list[float] = []

    def sync() -> None:
        if work.device.startswith("cuda"):
            torch.cuda.synchronize()

    def mark() -> None:
        sync()
        marks.append(time.perf_counter())

    started = time.perf_counter()
    model = runners(specs)[name][0](work, mark, options)
    sync()
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        torch.distributed.barrier()  # pyright: ignore[reportUnknownMemberType]  # the slowest process decides; torch leaves `device_ids` unannotated
    ended = time.perf_counter()
    if turn is not None:
        turn.finish()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save([p.detach().cpu() for p in model.parameters()], out.with_suffix(".pt"))
        train_called, first_step = marks[0], marks[1]
        out.write_text(json.dumps({
            "total_s": ended - started, "setup_s": first_step - train_called,
            "loop_s": ended - first_step if turn is None else sum(turn.turns),
            "steps": work.steps, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }))
    sys.stdout.flush()
    if distributed:
        os._exit(0)  # gloo can abort during interpreter shutdown


# ---------------------------------------------------------------------------- the parent
def _available(spec: str, specs: dict[str, str]) -> bool:
    name = parse_runner(spec)[0]
    table = runners(specs)
    if name not in table:
        raise SystemExit(f"unknown runner {name!r}; known: {', '.join(table)}")
    module = table[name][1]
    return module is None or importlib.util.find_spec(module) is not None


def _command(spec: str, args: argparse.Namespace, out: Path) -> list[str]:
    script = [str(Path(__file__).resolve()), "--child", spec, "--workload", args.workload, "--device", args.device,
              "--precision", args.precision, "--out", str(out),
              *[item for pair in args.callbacks for item in ("--callbacks", pair)]]
    if args.processes == 1:
        return [sys.executable, *script]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes),
            "--master_addr", "127.0.0.1", "--master_port", str(port), *script]


CpuTimes = tuple[list[int], float]


def cpu_times() -> CpuTimes | None:
    """The machine's CPU time in clock ticks (user, nice, system, idle, iowait, irq, softirq, steal;
    Linux) and this benchmark's own (this process and its finished children), or ``None`` where
    /proc/stat is missing."""
    try:
        machine = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    except (OSError, ValueError):
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return machine, sum(u.ru_utime + u.ru_stime for u in usage) * os.sysconf("SC_CLK_TCK")


def machine_use(before: CpuTimes | None, after: CpuTimes | None) -> str:
    """How idle the machine was between two ``cpu_times``: what the hypervisor took (steal) and what
    processes other than this benchmark used, in percent of all cores' time."""
    if before is None or after is None:
        return "machine use unknown (no /proc/stat)"
    spent = [b - a for a, b in zip(before[0], after[0], strict=True)]
    busy, total = sum(spent[:3]) + sum(spent[5:7]), sum(spent)
    others = max(busy - (after[1] - before[1]), 0)
    return (f"CPU steal {100 * spent[7] / total:.1f}%, other processes {100 * others / total:.1f}% "
            "of all cores during the runs")


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]))}
    if args.processes > 1 and args.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    return env


def _result(spec: str, out: Path, code: int, output: str) -> dict[str, float]:
    if code != 0 or not out.exists():
        sys.stderr.write(output[-8000:])
        raise SystemExit(f"runner {spec} failed with exit code {code}")
    result: dict[str, float] = json.loads(out.read_text())
    return result


def _launch(spec: str, args: argparse.Namespace, out: Path, cwd: Path) -> dict[str, float]:
    # Output goes to a pipe that is drained while the child runs, like a job's log.
    done = subprocess.run(_command(spec, args, out), env=_environment(args), cwd=cwd, capture_output=True,
                          text=True, timeout=args.timeout, check=False)
    return _result(spec, out, done.returncode, done.stdout + done.stderr)


def _round(order: list[str], args: argparse.Namespace, tmp: Path, index: int) -> dict[str, dict[str, float]]:
    """One round: each runner in a fresh process, one after the other or (``--turns``) taking turns."""
    outs = {spec: tmp / f"{index}-{spec}.json" for spec in order}
    if not args.turns:
        return {spec: _launch(spec, args, outs[spec], tmp) for spec in order}
    done = take_turns([_command(spec, args, outs[spec]) for spec in order], args.turns, _environment(args),
                      str(tmp), args.timeout)
    return {spec: _result(spec, outs[spec], code, output) for spec, (code, output) in zip(order, done, strict=True)}


def _rounds(specs: list[str], rounds: int, seed: int) -> Iterator[tuple[int, list[str]]]:
    rng = random.Random(seed)
    for index in range(rounds):
        order = specs[:]
        rng.shuffle(order)
        yield index, order


def _baseline(spec: str, specs: list[str]) -> str:
    """``plain`` with the same epochs/samples options as ``spec`` when that runs too, else ``plain``."""
    options = parse_runner(spec)[1]
    same = [s for s in specs if parse_runner(s)[0] == "plain"
            and {k: v for k, v in parse_runner(s)[1].items() if k in ("epochs", "samples")}
            == {k: v for k, v in options.items() if k in ("epochs", "samples")}]
    return same[0] if same else "plain"


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def parent(args: argparse.Namespace) -> dict[str, Any]:
    specs_for = callback_specs(args.callbacks)
    specs = [s for s in args.runners.split(",") if s and _available(s, specs_for)]
    if not any(parse_runner(s)[0] == "plain" for s in specs):
        specs.insert(0, "plain")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in specs}
    cpu_before = cpu_times()
    with tempfile.TemporaryDirectory() as tmp:
        for index, order in _rounds(specs, args.rounds, args.seed):
            for spec, result in _round(order, args, Path(tmp), index).items():
                results[spec].append(result)
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
        machine = machine_use(cpu_before, cpu_times())
        weights = {s: [torch.load(Path(tmp) / f"{i}-{s}.pt") for i in range(args.rounds)] for s in specs}
    targets = {**(TARGETS_DISTRIBUTED if args.processes > 1 else TARGETS), **dict(
        (k, float(v)) for k, v in (t.split("=", 1) for t in args.target))}
    check_targets = args.workload == "overhead" and args.device == "cpu" and args.precision == "no"
    rows: list[dict[str, Any]] = []
    for spec in specs:
        base = _baseline(spec, specs)
        loops = [r["loop_s"] for r in results[spec]]
        ratios = [a / b["loop_s"] for a, b in zip(loops, results[base], strict=True)]
        steps = results[spec][0]["steps"]
        diff = _max_diff(weights[spec][0], weights[base][0])
        repeatable = all(_max_diff(w, weights[spec][0]) == 0 for w in weights[spec])
        target = targets.get(parse_runner(spec)[0]) if check_targets and not parse_runner(spec)[1] else None
        rows.append({
            "runner": spec, "baseline": base, "us_per_step": statistics.median(loops) / steps * 1e6,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            # interference only ever slows a run down: the fastest rounds are the least disturbed
            "ratio_of_fastest": min(loops) / min(r["loop_s"] for r in results[base]),
            "setup_ms": statistics.median(r["setup_s"] for r in results[spec]) * 1e3,
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results[spec]),
            "max_abs_dw": diff, "repeatable": repeatable, "target": target,
            "meets_target": None if target is None else statistics.median(ratios) <= target and diff == 0,
        })
    header = (f"workload={args.workload} device={args.device} precision={args.precision} processes={args.processes} "
              f"rounds={args.rounds} torch={torch.__version__} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"\n{header}\n{machine}\n")
    print("| runner | µs/step | ratio to baseline (median, min-max) | fastest/fastest | setup in train() | peak RSS "
          "| max abs ΔW | target |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        verdict = "" if row["target"] is None else f"≤ {row['target']:.2f}: {'met' if row['meets_target'] else 'NOT met'}"
        base = "" if row["baseline"] == "plain" else f" vs {row['baseline']}"
        setup = "–" if args.turns else f"{row['setup_ms']:.1f} ms"  # under --turns the setups run at once
        print(f"| {row['runner']} | {row['us_per_step']:.1f} | {row['ratio_median']:.3f} ({row['ratio_min']:.3f}-"
              f"{row['ratio_max']:.3f}){base} | {row['ratio_of_fastest']:.3f} | {setup} | "
              f"{row['peak_rss_mib']:.1f} MiB | "
              f"{row['max_abs_dw']:.3g}{'' if row['repeatable'] else ' (differs between rounds!)'} | {verdict} |")
    summary = {"config": header, "machine": machine, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="overhead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runners", default=DEFAULT_RUNNERS, help="comma-separated runner specs")
    parser.add_argument("--processes", type=int, default=1, help="processes per run (torchrun; gloo on CPU)")
    add_callbacks_argument(parser)
    parser.add_argument("--target", action="append", default=[], metavar="RUNNER=RATIO",
                        help="ratio a runner must meet (defaults: pta=1.03, pta-defaults=1.05; 1.05 with --processes)")
    parser.add_argument("--turns", type=positive_int, metavar="BATCHES",
                        help="start a round's runners together and let each train this many batches in turn "
                             "(see benchmarks/turns.py); one process per run only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--state", choices=["save", "resume"],
                        help="instead: training-state costs (runs benchmarks/state_io.py with --rounds)")
    parser.add_argument("--child")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--turn", type=Turn.from_argument, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns and args.processes > 1:
        parser.error("--turns: runners take turns only with one process per run (--processes 1)")
    if args.state:
        script = Path(__file__).resolve().with_name("state_io.py")
        raise SystemExit(subprocess.run([sys.executable, str(script), args.state, "--rounds", str(args.rounds)]).returncode)
    if args.child:
        work = Work(**WORKLOADS[args.workload], device=args.device, precision=args.precision)
        child(args.child, work, args.out, callback_specs(args.callbacks), args.turn)
    else:
        parent(args)


if __name__ == "__main__":
    main()

"""What each piece of pta's training step costs over the plain loop's code for the same work.

    OMP_NUM_THREADS=1 python benchmarks/step_pieces.py --valgrind     # CPU instructions per call (minutes)
    OMP_NUM_THREADS=1 python benchmarks/step_pieces.py                # nanoseconds per call (noisy)

A ``DefaultTrainer`` with the console-off default callbacks (the ``pta`` runner of ``overhead.py``)
trains a few steps of the overhead workload; then each piece of a step is called ``--calls`` times in
a row, pta's code and the plain loop's equivalent (``runners.run_plain``) in turn. ``--valgrind``
runs this script under callgrind, which starts a new part of its count at every ``os.getppid()``
call (``--dump-before=getppid``): one part per piece, so imports and setup are left out, and an
empty call's cost is subtracted. What the pieces do not cover (the loop's own lines) is the rest
of ``profile_step.py --valgrind``'s per-step difference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _work import WORKLOADS, Work, optimizer_step  # noqa: E402  (the benchmark directory is not a package)
from runners import CALLBACK_SPECS, callbacks_from_spec  # noqa: E402

Call = Callable[[], object]


def _endless(batches: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    while True:
        yield from batches()


def pieces() -> dict[str, tuple[Call, Call | None]]:
    """Each piece of a step: pta's code, and the plain loop's code for the same work (``None``: it has none)."""
    from pta import DefaultTrainer
    from pta._accelerate import prepared_batches

    work = Work(**WORKLOADS["overhead"], device="cpu", precision="no")
    model, loss_fn = work.model(), nn.CrossEntropyLoss()
    trainer: DefaultTrainer = DefaultTrainer(
        model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=callbacks_from_spec(CALLBACK_SPECS["pta"]), accelerator_options={"cpu": True})
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        trainer.train(work.dataset(), num_epochs=1, per_device_batch_size=work.batch, max_num_train_steps=3,
                      train_dataloader_kwargs=work.loader_kwargs())
    internals: Any = trainer  # the loop's own objects, as the loop uses them
    shard, handler, cpu = internals._train_dataloader, trainer.callback_handler, torch.device("cpu")
    inner, prepared = internals.optimizer.optimizer, trainer.model
    handler.call_event("on_train_epoch_start", trainer)  # the NaN check reads this epoch's running sum
    batch = next(iter(shard))
    x, y = batch
    output = trainer.calculate_train_batch_loss(batch)
    pta_batches, plain_batches = _endless(lambda: prepared_batches(shard)), _endless(lambda: shard.base_dataloader)

    def plain_batch() -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = next(plain_batches)
        return xb.to(cpu, non_blocking=True), yb.to(cpu, non_blocking=True)

    def plain_step() -> None:
        torch.autograd.backward(loss_fn(prepared(x), y))
        optimizer_step(inner)
        inner.zero_grad()

    table = handler.event_methods()

    def events() -> None:  # as the loop calls them
        for method in table["on_train_step_start"]:
            method(trainer)
        for method in table["on_train_step_end"]:
            method(trainer, batch_output=output, batch=batch, step=0)

    return {
        "next batch": (lambda: next(pta_batches), plain_batch),
        # what the loop calls when every hook is pta's default (pta._step_plan), the running loss sum included
        "forward, loss, backward, step, zero_grad": (lambda: internals._default_update(batch), plain_step),
        "step events (start, end with the NaN check)": (events, None),
    }


def _codes(table: dict[str, tuple[Call, Call | None]]) -> list[tuple[str, Call]]:
    """Every code to count, in order: the empty call, then each piece's pta code and plain code."""
    codes: list[tuple[str, Call]] = [("empty", lambda: None)]
    for name, (pta, plain) in table.items():
        codes += [(f"{name}/pta", pta)] + ([(f"{name}/plain", plain)] if plain is not None else [])
    return codes


def child(calls: int) -> None:
    """Under callgrind: the calls of each code between two ``getppid``, its warm-up calls outside them;
    prints the codes' names, in that order, for the parent."""
    for name, code in _codes(pieces()):
        print(name, flush=True)
        for _ in range(5):
            code()
        os.getppid()
        for _ in range(calls):
            code()
        os.getppid()


def instructions(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=no", "--dump-before=getppid",
                               f"--callgrind-out-file={out}", sys.executable, __file__, "--child", "--calls", str(calls)],
                              check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        names = done.stdout.splitlines()
        totals: list[float] = []
        for part in range(2, 2 * len(names) + 2, 2):  # parts 1, 3, ...: setup, warm-up calls
            match = re.search(r"^(?:summary|totals):\s*(\d+)", Path(f"{out}.{part}").read_text(), re.MULTILINE)
            assert match is not None, f"no instruction total in callgrind's part {part}"
            totals.append(int(match.group(1)) / calls)
    return {name: total - totals[0] for name, total in zip(names, totals, strict=True)}


def nanoseconds(calls: int, rounds: int) -> dict[str, float]:
    timings: dict[str, list[float]] = {}
    listed = _codes(pieces())
    for _ in range(rounds):
        for name, code in listed:
            start = time.perf_counter_ns()
            for _ in range(calls):
                code()
            timings.setdefault(name, []).append((time.perf_counter_ns() - start) / calls)
    empty = statistics.median(timings["empty"])
    return {name: statistics.median(values) - empty for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valgrind", action="store_true", help="count instructions (callgrind) instead of time")
    parser.add_argument("--calls", type=int, default=1000, help="calls of each code per count")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (without --valgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls)
        return
    costs = instructions(args.calls) if args.valgrind else nanoseconds(args.calls, args.rounds)
    unit = "instructions" if args.valgrind else "ns"
    print(f"| piece of a step | pta ({unit}/call) | plain loop | pta over plain |\n|---|---|---|---|")
    total = 0.0
    for name in (key.removesuffix("/pta") for key in costs if key.endswith("/pta")):
        pta, plain = costs[f"{name}/pta"], costs.get(f"{name}/plain", 0.0)
        total += pta - plain
        print(f"| {name} | {pta:,.0f} | {plain:,.0f} | {pta - plain:+,.0f} |")
    print(f"| all pieces | | | {total:+,.0f} |")


if __name__ == "__main__":
    main()

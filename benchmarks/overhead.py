"""Loop overhead of pta's DefaultTrainer against a plain PyTorch loop, on identical work.

Every measurement runs in a fresh process; runners are interleaved in a new random order each round
and compared round by round (paired ratios), then summarised by medians with min-max. All runners
see the same seeded model, data and data order, and the final weights of each are compared with the
plain loop's.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py --rounds 7
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --workload compute --rounds 5
    python benchmarks/overhead.py --device cuda --precision bf16   # on a GPU machine

Runners: ``plain`` (hand-written PyTorch), ``accelerate`` (hand-written Accelerate loop), ``pta``
(DefaultTrainer, console callbacks off), ``pta-defaults`` (DefaultTrainer, default callbacks, console
output to /dev/null), and ``pytorch-accelerated`` / ``lightning`` when installed.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

WORKLOADS: dict[str, dict[str, Any]] = {
    # ~650 us per plain step on 2 CPU cores: the loop's own cost dominates.
    "overhead": {"sizes": (32, 64, 10), "samples": 8192, "batch": 32, "epochs": 3},
    # Large matrix multiplies: the loop's cost is noise.
    "compute": {"sizes": (784, 512, 512, 10), "samples": 8192, "batch": 128, "epochs": 2},
}


@dataclass(frozen=True)
class Work:
    sizes: tuple[int, ...]
    samples: int
    batch: int
    epochs: int
    device: str
    precision: str

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    def dataset(self) -> TensorDataset:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(self.samples, self.sizes[0], generator=g)
        y = torch.randint(0, self.sizes[-1], (self.samples,), generator=g)
        return TensorDataset(x, y)

    def loader_kwargs(self) -> dict[str, Any]:
        return {"batch_size": self.batch, "shuffle": True, "generator": torch.Generator().manual_seed(2)}

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.samples // self.batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- runners (in the child)
def run_plain(work: Work, mark: Callable[[], None]) -> nn.Module:
    device = torch.device(work.device)
    model = work.model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(work.dataset(), **work.loader_kwargs())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(work.precision)
    scaler = torch.amp.GradScaler(device.type) if work.precision == "fp16" else None
    mark()  # "train() called" and "first step" coincide for hand-written loops
    mark()
    for _ in range(work.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                loss = loss_fn(model(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.zero_grad()
    return model


def run_accelerate(work: Work, mark: Callable[[], None]) -> nn.Module:
    from accelerate import Accelerator  # type: ignore[attr-defined]  # accelerate ships no type information

    accelerator: Any = Accelerator(mixed_precision=work.precision, cpu=work.device == "cpu")
    model = work.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    mark()
    model, optimizer, loader = accelerator.prepare(model, optimizer, DataLoader(work.dataset(), **work.loader_kwargs()))
    mark()
    for _ in range(work.epochs):
        model.train()
        for x, y in loader:
            with accelerator.autocast():
                loss = loss_fn(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    return accelerator.unwrap_model(model)  # type: ignore[no-any-return]  # accelerate is untyped


def _run_pta(work: Work, mark: Callable[[], None], defaults: bool) -> nn.Module:
    from pta import DefaultTrainer, MixedPrecision, TrainerCallback
    from pta.protocols import TrainerLike

    class FirstStep(TrainerCallback):
        @override
        def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if not self.seen:
                self.seen = True
                mark()

        seen = False

    model = work.model()
    callbacks: list[Any] = [FirstStep()]
    if defaults:
        from pta import DEFAULT_CALLBACKS

        callbacks += list(DEFAULT_CALLBACKS)
    trainer: DefaultTrainer = DefaultTrainer(
        model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=callbacks,
        mixed_precision=cast(MixedPrecision, work.precision),  # validated by argparse choices
        accelerator_options={"cpu": work.device == "cpu"},
    )
    stream = open(os.devnull, "w") if defaults else None  # noqa: SIM115  # closed below
    with contextlib.redirect_stdout(stream) if stream else contextlib.nullcontext(), \
            contextlib.redirect_stderr(stream) if stream else contextlib.nullcontext():
        mark()
        trainer.train(work.dataset(), num_epochs=work.epochs, per_device_batch_size=work.batch,
                      train_dataloader_kwargs=work.loader_kwargs())
    if stream:
        stream.close()
    return trainer.get_model()


def run_pta(work: Work, mark: Callable[[], None]) -> nn.Module:
    return _run_pta(work, mark, defaults=False)


def run_pta_defaults(work: Work, mark: Callable[[], None]) -> nn.Module:
    return _run_pta(work, mark, defaults=True)


def run_pytorch_accelerated(work: Work, mark: Callable[[], None]) -> nn.Module:
    from pytorch_accelerated import Trainer
    from pytorch_accelerated.callbacks import TrainerCallback as PaCallback

    class FirstStep(PaCallback):  # type: ignore[misc]  # untyped base class
        seen = False

        def on_train_step_start(self, trainer: Any, **kwargs: Any) -> None:
            if not self.seen:
                self.seen = True
                mark()

    model = work.model()
    trainer = Trainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=[FirstStep()])
    kwargs = {**work.loader_kwargs(), "num_workers": 0}
    mark()
    trainer.train(work.dataset(), num_epochs=work.epochs, per_device_batch_size=work.batch, train_dataloader_kwargs=kwargs)
    return trainer.get_model()  # type: ignore[no-any-return]  # untyped library


def run_lightning(work: Work, mark: Callable[[], None]) -> nn.Module:
    import lightning as L

    class Module(L.LightningModule):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            super().__init__()
            self.net = work.model()
            self.loss = nn.CrossEntropyLoss()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 0 and self.current_epoch == 0:
                mark()
            x, y = batch
            return self.loss(self.net(x), y)  # type: ignore[no-any-return]  # untyped library

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = Module()
    mark()
    trainer = L.Trainer(max_epochs=work.epochs, accelerator=work.device.split(":")[0], devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(work.dataset(), **work.loader_kwargs()))
    net: nn.Module = module.net
    return net


RUNNERS: dict[str, tuple[Callable[[Work, Callable[[], None]], nn.Module], str | None]] = {
    "plain": (run_plain, None),
    "accelerate": (run_accelerate, None),
    "pta": (run_pta, None),
    "pta-defaults": (run_pta_defaults, None),
    "pytorch-accelerated": (run_pytorch_accelerated, "pytorch_accelerated"),
    "lightning": (run_lightning, "lightning"),
}


def child(runner: str, work: Work, out: Path) -> None:
    marks: list[float] = []

    def mark() -> None:
        _sync(work.device)
        marks.append(time.perf_counter())

    started = time.perf_counter()
    model = RUNNERS[runner][0](work, mark)
    _sync(work.device)
    ended = time.perf_counter()
    torch.save([p.detach().cpu() for p in model.parameters()], out.with_suffix(".pt"))
    train_called, first_step = marks[0], marks[1]
    out.write_text(json.dumps({
        "total_s": ended - started,
        "loop_s": ended - first_step,
        "setup_s": first_step - train_called,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


# ---------------------------------------------------------------------------- the parent
def _available(runner: str) -> bool:
    module = RUNNERS[runner][1]
    return module is None or importlib.util.find_spec(module) is not None


def _launch(runner: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", runner, "--workload", args.workload, "--device", args.device,
           "--precision", args.precision, "--out", str(out)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    result: dict[str, float] = json.loads(out.read_text())
    return result


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def _rounds(runners: list[str], rounds: int, seed: int) -> Iterator[tuple[int, list[str]]]:
    rng = random.Random(seed)
    for index in range(rounds):
        order = runners[:]
        rng.shuffle(order)
        yield index, order


def parent(args: argparse.Namespace) -> None:
    runners = [r for r in args.runners.split(",") if _available(r)]
    if "plain" not in runners:
        runners.insert(0, "plain")
    work = make_work(args)
    results: dict[str, list[dict[str, float]]] = {r: [] for r in runners}
    with tempfile.TemporaryDirectory() as tmp:
        for index, order in _rounds(runners, args.rounds, args.seed):
            for runner in order:
                results[runner].append(_launch(runner, args, Path(tmp) / f"{runner}-{index}.json"))
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
        plain_params = torch.load(Path(tmp) / "plain-0.pt")
        diffs = {r: max(float((a - b).abs().max()) for a, b in zip(torch.load(Path(tmp) / f"{r}-0.pt"), plain_params, strict=True))
                 for r in runners}
    print(f"\nworkload={args.workload} device={args.device} precision={args.precision} steps={work.steps} "
          f"rounds={args.rounds} torch={torch.__version__}")
    print(f"{'runner':22} {'us/step':>10} {'ratio to plain (median, min-max)':>34} {'setup ms':>9} "
          f"{'peak RSS MiB':>13} {'max|dW| vs plain':>17}")
    plain_loops = [r["loop_s"] for r in results["plain"]]
    for runner in runners:
        loops = [r["loop_s"] for r in results[runner]]
        ratios = [a / b for a, b in zip(loops, plain_loops, strict=True)]
        print(f"{runner:22} {statistics.median(loops) / work.steps * 1e6:10.1f} {_summary(ratios):>34} "
              f"{statistics.median(r['setup_s'] for r in results[runner]) * 1e3:9.1f} "
              f"{statistics.median(r['peak_rss_mib'] for r in results[runner]):13.1f} {diffs[runner]:17.3g}")


def make_work(args: argparse.Namespace) -> Work:
    return Work(**WORKLOADS[args.workload], device=args.device, precision=args.precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="overhead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=sorted(RUNNERS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, make_work(args), args.out)
    else:
        parent(args)


if __name__ == "__main__":
    main()

"""The training loops benchmarks/overhead.py compares, each run in a fresh process.

A runner gets the work, a ``mark`` to call when ``train()`` is entered and when its first epoch
starts (setup done), and its options (``name:key=value:...`` on the command line); it returns the trained model.
Under ``torchrun`` every runner trains with all processes (gloo on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from typing_extensions import override

from _work import AccelerateOrderSampler, Work, optimizer_step

Mark = Callable[[], None]
Runner = Callable[[Work, Mark, dict[str, str]], nn.Module]

CONSOLE_CALLBACKS = ("PrintProgressCallback", "ProgressBarCallback", "LogMetricsCallback")
"""Default callbacks that only talk to a person; the ``pta`` runner leaves them out."""

CALLBACK_SPECS = {
    "pta-bare": "",
    "pta": "defaults;" + ";".join(f"-{name}" for name in CONSOLE_CALLBACKS),
    "pta-defaults": "defaults",
}
"""Each pta runner's callbacks; ``--callbacks RUNNER=SPEC`` replaces one (see ``callbacks_from_spec``)."""


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _autocast(work: Work) -> contextlib.AbstractContextManager[Any]:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(work.precision)
    return torch.autocast(torch.device(work.device).type, dtype=dtype) if dtype else contextlib.nullcontext()


# ---------------------------------------------------------------------------- hand-written loops
def run_plain(work: Work, mark: Mark, options: dict[str, str]) -> nn.Module:
    """The physical limit: a hand-written PyTorch loop (DDP with a DistributedSampler under torchrun)."""
    device = torch.device(work.device)
    net = work.model().to(device)
    model: nn.Module = net  # the DDP wrapper under torchrun (its forward is untyped: call it as a Module)
    loader = DataLoader(work.dataset(), **work.loader_kwargs(), pin_memory=device.type == "cuda",
                        collate_fn=work.collate)
    sampler: DistributedSampler[int] | None = None
    if _distributed():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
            net = net.to(device)
        model = nn.parallel.DistributedDataParallel(net)
        dataset = work.dataset()
        if options.get("sampler", "accelerate-order") == "torch":
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=2)
        else:
            sampler = AccelerateOrderSampler(dataset, work.batch, torch.Generator().manual_seed(2), world, rank)
        loader = DataLoader(dataset, batch_size=work.batch, sampler=sampler, pin_memory=device.type == "cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type) if work.precision == "fp16" else None
    mark()  # "train() called" and "first step" coincide for hand-written loops
    mark()
    for epoch in range(work.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(work):
                loss: torch.Tensor = loss_fn(model(x), y)
            if scaler is not None:
                torch.autograd.backward(scaler.scale(loss))  # (Tensor.backward is partially untyped)
                scaler.step(optimizer)
                scaler.update()
            else:
                torch.autograd.backward(loss)
                optimizer_step(optimizer)
            optimizer.zero_grad()
    return net


def run_accelerate(work: Work, mark: Mark, options: dict[str, str]) -> nn.Module:
    """A hand-written Accelerate loop, as Accelerate's README writes it."""
    from accelerate import Accelerator  # type: ignore[attr-defined]  # accelerate ships no type information

    accelerator: Any = Accelerator(mixed_precision=work.precision, cpu=work.device == "cpu")
    model = work.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    mark()
    model, optimizer, loader = accelerator.prepare(model, optimizer, work.loader())
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


def run_in_this_process(runner: Runner, work: Work, mark: Mark = lambda: None,
                        options: dict[str, str] | None = None) -> nn.Module:
    """``runner`` run here as in a fresh process (Accelerate's state reset), its console output dropped:
    for the benchmarks that alternate runners in one process."""
    from pta import reset_accelerate_state

    reset_accelerate_state()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return runner(work, mark, options or {})


# ---------------------------------------------------------------------------- pta
def add_callbacks_argument(parser: argparse.ArgumentParser) -> None:
    """``--callbacks RUNNER=SPEC`` (repeatable): what a pta runner adds instead of its ``CALLBACK_SPECS``."""
    parser.add_argument("--callbacks", action="append", default=[], type=_callback_pair, metavar="RUNNER=SPEC",
                        help="callbacks of a pta runner (see callbacks_from_spec), "
                             "e.g. 'pta-defaults=defaults;pta.callbacks:CSVLoggerCallback:{\"path\": \"m.csv\"}'")


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _callback_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    if not sep or name not in CALLBACK_SPECS:
        raise argparse.ArgumentTypeError(f"expected RUNNER=SPEC with RUNNER one of {', '.join(CALLBACK_SPECS)}, "
                                         f"got {pair!r}")
    return pair


def callback_specs(pairs: list[str]) -> dict[str, str]:
    """Each pta runner's callbacks: ``CALLBACK_SPECS`` with the ``--callbacks`` pairs given."""
    return {**CALLBACK_SPECS, **dict(pair.split("=", 1) for pair in pairs)}


def callbacks_from_spec(spec: str) -> list[Any]:
    """Callbacks from ``;``-separated items: ``defaults`` (pta's ``DEFAULT_CALLBACKS``), ``-Name`` (drop
    that default), ``module:Name`` (a callback class, built without arguments) or
    ``module:Name:{"json": "kwargs"}``. Example: ``defaults;-ProgressBarCallback;pta.callbacks:CSVLogger``."""
    from pta import DEFAULT_CALLBACKS

    callbacks: list[Any] = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        if item == "defaults":
            callbacks += list(DEFAULT_CALLBACKS)
        elif item.startswith("-"):
            names = [getattr(cb, "__name__", type(cb).__name__) for cb in callbacks]
            if item[1:] not in names:
                raise SystemExit(f"--callbacks: no callback named {item[1:]!r} to drop; the list so far is {names}")
            del callbacks[names.index(item[1:])]
        else:
            module, _, rest = item.partition(":")
            name, _, kwargs = rest.partition(":")
            klass = getattr(importlib.import_module(module), name)
            callbacks.append(klass(**json.loads(kwargs)) if kwargs else klass)
    return callbacks


def _run_pta(work: Work, mark: Mark, options: dict[str, str], spec: str) -> nn.Module:
    from pta import DefaultTrainer, TrainerCallback
    from pta.protocols import TrainerLike

    class FirstStep(TrainerCallback):
        """Marks the end of setup at the first epoch's start: a per-step event would cost pta a call a step."""

        seen = False

        @override
        def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if not self.seen:
                self.seen = True
                mark()

    class Idle(TrainerCallback):
        """Handles no step event (for the per-step cost against the number of callbacks)."""

        @override
        def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
            pass

    model = work.model()
    idle = [Idle() for _ in range(int(options.get("idle_callbacks", "0")))]
    trainer: DefaultTrainer = DefaultTrainer(
        model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=[FirstStep(), *idle, *callbacks_from_spec(spec)],
        mixed_precision=work.precision,  # type: ignore[arg-type]  # validated by argparse choices
        accelerator_options={"cpu": work.device == "cpu"},
    )
    mark()
    trainer.train(work.dataset(), num_epochs=work.epochs, per_device_batch_size=work.batch,
                  train_dataloader_kwargs=work.loader_kwargs(), collate_fn=work.collate)
    return trainer.get_model()


def make_pta_runner(name: str, specs: dict[str, str]) -> Runner:
    def run(work: Work, mark: Mark, options: dict[str, str]) -> nn.Module:
        return _run_pta(work, mark, options, specs[name])

    run.__doc__ = f"DefaultTrainer with callbacks {specs[name]!r}"
    return run


# ---------------------------------------------------------------------------- other libraries
def run_pytorch_accelerated(work: Work, mark: Mark, options: dict[str, str]) -> nn.Module:
    from pytorch_accelerated import Trainer
    from pytorch_accelerated.callbacks import TrainerCallback as PaCallback

    class FirstStep(PaCallback):  # type: ignore[misc]  # untyped base class
        seen = False

        def on_train_epoch_start(self, trainer: Any, **kwargs: Any) -> None:
            if not self.seen:
                self.seen = True
                mark()

    model = work.model()
    trainer = Trainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=[FirstStep()])
    kwargs = {**work.loader_kwargs(), "num_workers": 0}
    mark()
    trainer.train(work.dataset(), num_epochs=work.epochs, per_device_batch_size=work.batch,
                  train_dataloader_kwargs=kwargs, collate_fn=work.collate)
    return trainer.get_model()  # type: ignore[no-any-return]  # untyped library


def run_lightning(work: Work, mark: Mark, options: dict[str, str]) -> nn.Module:
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
    trainer.fit(module, work.loader())
    net: nn.Module = module.net
    return net


def runners(specs: dict[str, str]) -> dict[str, tuple[Runner, str | None]]:
    """Runner name -> (function, module it needs or None)."""
    return {
        "plain": (run_plain, None),
        "accelerate": (run_accelerate, "accelerate"),
        **{name: (make_pta_runner(name, specs), None) for name in CALLBACK_SPECS},
        "pytorch-accelerated": (run_pytorch_accelerated, "pytorch_accelerated"),
        "lightning": (run_lightning, "lightning"),
    }

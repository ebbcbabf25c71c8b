"""Mixed precision on CPU: bf16 autocast really runs; the fp16 path is driven by a CPU GradScaler stand-in.

Accelerate 1.15 ignores ``mixed_precision="fp16"`` on CPU (no autocast, no scaler). The tests of the
fp16 path therefore install ``torch.amp.GradScaler("cpu")`` on the run's ``Accelerator`` and switch
``native_amp`` on, before ``prepare`` wraps the optimizer: Accelerate's ``AcceleratedOptimizer`` then
steps through the scaler, ``backward`` scales the loss, ``clip_grad_*_`` unscale first, and an overflow
makes ``optimizer_step_was_skipped`` true, exactly as on a GPU.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer, TrainerCallback
from pta._accelerate import AcceleratorAdapter
from pta.protocols import SchedulerLike
from tests._helpers import linear_model, max_abs_diff, mlp, optimizer_step, params_of, regression_data

QUIET: tuple[TrainerCallback, ...] = ()  # no console output
NO_SHUFFLE: dict[str, Any] = {"shuffle": False}

Batch = list[Tensor]


# ---------------------------------------------------------------------------------- bf16
class AutocastProbeTrainer(DefaultTrainer[Batch]):
    """Records, for every training forward, whether CPU autocast is on and the dtype a Linear computes in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autocast_enabled: list[bool] = []
        self.autocast_dtypes: list[torch.dtype] = []
        self.linear_dtypes: list[torch.dtype] = []

    @override
    def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
        self.autocast_enabled.append(torch.is_autocast_enabled("cpu"))
        self.autocast_dtypes.append(torch.get_autocast_dtype("cpu"))
        first_linear = next(m for m in self.get_model().modules() if isinstance(m, nn.Linear))
        handle = first_linear.register_forward_hook(self._record_dtype)
        try:
            return super().calculate_train_batch_loss(batch)
        finally:
            handle.remove()

    def _record_dtype(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        self.linear_dtypes.append(output.dtype)


def probe_run(mixed_precision: str | None) -> AutocastProbeTrainer:
    model = mlp(hidden=8)
    trainer = AutocastProbeTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                                   callbacks=QUIET, mixed_precision=mixed_precision)
    trainer.train(regression_data(n=16), 1, per_device_batch_size=8)
    return trainer


def test_bf16_runs_the_forward_under_cpu_autocast() -> None:
    trainer = probe_run("bf16")
    assert trainer.run_config.mixed_precision == "bf16"
    assert trainer.autocast_enabled == [True, True]
    assert trainer.autocast_dtypes == [torch.bfloat16, torch.bfloat16]
    assert trainer.linear_dtypes == [torch.bfloat16, torch.bfloat16]
    # parameters stay in full precision: only the computation is in bf16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_full_precision_runs_without_autocast() -> None:
    """Control for the test above: the probe sees no autocast without mixed precision."""
    trainer = probe_run("no")
    assert trainer.autocast_enabled == [False, False]
    assert trainer.linear_dtypes == [torch.float32, torch.float32]


def test_bf16_training_converges_on_regression() -> None:
    model = mlp(hidden=16)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=0.02),
                             callbacks=QUIET, mixed_precision="bf16")
    dataset = regression_data(n=128)
    trainer.train(dataset, 15, eval_dataset=dataset, per_device_batch_size=16)

    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert len(losses) == 15
    assert losses[-1] < 0.1 * losses[0]
    assert trainer.run_history.get_latest_metric("eval_loss_epoch") < 0.1 * losses[0]


def test_bf16_training_converges_on_classification() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()  # 3 learnable classes
    model = mlp(hidden=16, out=3)
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=0.03),
                             callbacks=QUIET, mixed_precision="bf16")
    trainer.train(TensorDataset(x, y), 15, per_device_batch_size=16, gradient_accumulation_steps=2)

    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert losses[-1] < 0.4 * losses[0]
    with torch.no_grad():
        accuracy = float((trainer.model(x).argmax(dim=1) == y).float().mean())
    assert accuracy > 0.85


# ---------------------------------------------------------------------------------- fp16 stand-in
class FP16ScalerTrainer(DefaultTrainer[Batch]):
    """``mixed_precision="fp16"`` with a CPU GradScaler installed on every run's Accelerator."""

    init_scale: ClassVar[float] = 2.0**10

    @override
    def _create_accelerator(self) -> AcceleratorAdapter:
        adapter = super()._create_accelerator()
        adapter.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=self.init_scale)
        adapter.accelerator.native_amp = True
        return adapter


class GradProbe:
    """A step pre-hook on the user's optimizer: sees the gradients exactly as the optimizer consumes them."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.max_abs: list[float] = []
        self.total_norm: list[float] = []
        self.steps = 0
        optimizer.register_step_pre_hook(self._before)
        optimizer.register_step_post_hook(self._after)

    def _before(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.max_abs.append(max(float(g.abs().max()) for g in grads))
        # torch.linalg's functions carry no type information (unknown under pyright strict)
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]  # vector_norm is partly unannotated
        self.total_norm.append(float(torch.linalg.vector_norm(norms)))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]  # vector_norm is partly unannotated

    def _after(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.steps += 1


def test_fp16_stand_in_drives_accelerates_scaler() -> None:
    """The stand-in is live: the prepared optimizer steps through the scaler and forward runs in fp16."""
    model = mlp(hidden=8)
    trainer = FP16ScalerTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                                callbacks=QUIET, mixed_precision="fp16")
    probe_dtypes: list[torch.dtype] = []
    # Accelerate wraps the model's own forward and casts its outputs to fp32: probe an inner layer.
    inner = next(m for m in model.modules() if isinstance(m, nn.Linear))
    handle = inner.register_forward_hook(lambda m, i, o: probe_dtypes.append(o.dtype))
    trainer.train(regression_data(n=16), 1, per_device_batch_size=8)
    handle.remove()

    scaler = trainer._accelerator.scaler
    assert scaler is not None
    assert scaler.get_scale() == FP16ScalerTrainer.init_scale  # two finite steps: no backoff, no growth yet
    assert getattr(trainer.optimizer, "scaler", None) is scaler  # Accelerate's optimizer steps through it
    assert probe_dtypes == [torch.float16, torch.float16]


@pytest.mark.parametrize("k", [1, 2])
def test_fp16_gradients_are_unscaled_before_value_clipping(k: int) -> None:
    clip = 0.01
    dataset = regression_data(n=32)
    model = linear_model()
    start = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = GradProbe(optimizer)
    trainer = FP16ScalerTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET, mixed_precision="fp16")
    trainer.train(dataset, 2, per_device_batch_size=8, gradient_accumulation_steps=k,
                  gradient_clip_value=clip, train_dataloader_kwargs=NO_SHUFFLE)

    updates = 2 * (4 // k)
    assert probe.steps == updates
    # Real units: the largest gradient is exactly the clip value (clipping scaled gradients and
    # unscaling afterwards would leave at most clip / 1024).
    assert probe.max_abs == pytest.approx([clip] * updates, rel=1e-6)

    # Same parameters as a full-precision run that clips the window-mean gradient by value.
    reference = copy.deepcopy(start)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, y = dataset.tensors
    for _ in range(2):
        for s in range(0, 32, 8 * k):
            ref_optimizer.zero_grad()
            torch.autograd.backward(nn.functional.mse_loss(reference(x[s:s + 8 * k]), y[s:s + 8 * k]))
            nn.utils.clip_grad_value_(reference.parameters(), clip)
            optimizer_step(ref_optimizer)
    # The fp16 forward changes unclipped (small) gradients slightly; clipped ones are exact. Each step
    # moves a parameter by at most lr * clip = 1e-3, so clipping before unscaling (steps 1024x smaller)
    # would move the parameters by less than 1e-5 in all.
    assert max_abs_diff(params_of(model), params_of(reference)) <= 3e-4
    assert max_abs_diff(params_of(model), params_of(start)) > 2e-3


def test_fp16_gradients_are_unscaled_before_norm_clipping() -> None:
    clip = 0.05
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = GradProbe(optimizer)
    trainer = FP16ScalerTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET, mixed_precision="fp16")
    trainer.train(regression_data(n=32), 1, per_device_batch_size=8, gradient_clip_norm=clip)

    assert probe.steps == 4
    assert probe.total_norm == pytest.approx([clip] * 4, rel=1e-4)


class InfLossTrainer(FP16ScalerTrainer):
    """Makes the loss infinite on chosen micro-batches (counted over the whole run, from 0) and records,
    for every update, whether the optimizer step was skipped and whether the scheduler stepped."""

    def __init__(self, *args: Any, inf_micro_batches: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inf_micro_batches = inf_micro_batches
        self.micro_batch = 0
        self.skipped: list[bool] = []
        self.scheduler_stepped: list[bool] = []

    @override
    def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
        output = super().calculate_train_batch_loss(batch)
        if self.micro_batch in self.inf_micro_batches:
            output["loss"] = output["loss"] * float("inf")
        self.micro_batch += 1
        return output

    @override
    def optimizer_step(self) -> None:
        super().optimizer_step()
        self.skipped.append(self.optimizer_step_was_skipped())
        self.scheduler_stepped.append(False)

    @override
    def scheduler_step(self) -> None:
        super().scheduler_step()
        self.scheduler_stepped[-1] = True


class CountingScheduler:
    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.steps = 0

    def step(self) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: Any, /) -> None:
        self.steps = int(state_dict["steps"])


@pytest.mark.parametrize(("k", "inf_micro_batches", "skipped_updates"), [
    (1, (2,), (2,)),
    (1, (0, 5), (0, 5)),
    (2, (4,), (2,)),  # the inf is in the first micro-batch of the third window: the whole window is skipped
    (2, (3,), (1,)),  # ... or in the update micro-batch itself
])
def test_fp16_overflow_skips_optimizer_and_scheduler_step(
    k: int, inf_micro_batches: tuple[int, ...], skipped_updates: tuple[int, ...]
) -> None:
    made: list[CountingScheduler] = []

    def factory(optimizer: torch.optim.Optimizer) -> SchedulerLike:
        made.append(CountingScheduler(optimizer))
        return made[-1]

    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = GradProbe(optimizer)
    trainer = InfLossTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET, mixed_precision="fp16",
                             inf_micro_batches=inf_micro_batches)
    trainer.train(regression_data(n=48), 1, per_device_batch_size=4, gradient_accumulation_steps=k,
                  gradient_clip_value=1.0, create_scheduler_fn=factory, train_dataloader_kwargs=NO_SHUFFLE)

    updates = 12 // k
    expected_skipped = [u in skipped_updates for u in range(updates)]
    assert trainer.skipped == expected_skipped
    assert trainer.scheduler_stepped == [not s for s in expected_skipped]
    assert len(made) == 1
    assert made[0].steps == updates - len(skipped_updates)
    assert probe.steps == updates - len(skipped_updates)  # the user's optimizer really did not step
    assert all(torch.isfinite(p).all() for p in model.parameters())
    scaler = trainer._accelerator.scaler
    assert scaler is not None
    assert scaler.get_scale() == FP16ScalerTrainer.init_scale * 0.5 ** len(skipped_updates)


def test_fp16_overflow_leaves_parameters_unchanged_on_the_skipped_update() -> None:
    model = linear_model()
    snapshots: list[list[Tensor]] = []

    class Snapshot(InfLossTrainer):
        @override
        def optimizer_zero_grad(self) -> None:
            snapshots.append(params_of(self.model))
            super().optimizer_zero_grad()

    trainer = Snapshot(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=QUIET,
                       mixed_precision="fp16", inf_micro_batches=(1,))
    trainer.train(regression_data(n=16), 1, per_device_batch_size=4, train_dataloader_kwargs=NO_SHUFFLE)

    assert trainer.skipped == [False, True, False, False]
    assert max_abs_diff(snapshots[1], snapshots[0]) == 0.0
    assert max_abs_diff(snapshots[2], snapshots[1]) > 0.0


def test_fp16_overflow_with_a_torch_scheduler() -> None:
    """A real LR scheduler sees one step per applied update: its step count ends below the update count."""
    model = linear_model()
    trainer = InfLossTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=QUIET,
                             mixed_precision="fp16", inf_micro_batches=(1, 2))
    trainer.train(regression_data(n=24), 1, per_device_batch_size=4, train_dataloader_kwargs=NO_SHUFFLE,
                  create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))

    assert trainer.skipped == [False, True, True, False, False, False]
    scheduler = trainer.scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert scheduler.last_epoch == 4
    assert scheduler.get_last_lr() == pytest.approx([0.05 * 0.5**4])

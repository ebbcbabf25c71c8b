"""The GPU-only fast paths: ``torch.compile`` through Accelerate's dynamo option, pinned memory with
non-blocking host-to-device copies, no device sync per step. Skipped without CUDA; benchmarks/gpu_check.sh
runs them."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from accelerate import DataLoaderConfiguration  # type: ignore[attr-defined]  # accelerate ships no type information
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback
from pta.callbacks import get_default_callbacks
from pta.protocols import TrainerLike

from ._helpers import classification_data, manual_seed

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _model() -> nn.Module:
    manual_seed(0)
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3))


def _train(**options: Any) -> tuple[DefaultTrainer, list[torch.Tensor]]:
    model = _model()
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                             accelerator_options=options)  # type: ignore[arg-type]  # test options
    trainer.train(classification_data(n=128), 2, per_device_batch_size=16,
                  train_dataloader_kwargs={"generator": torch.Generator().manual_seed(0)})
    return trainer, [p.detach().cpu() for p in trainer.get_model().parameters()]


def test_torch_compile_through_accelerates_dynamo_option() -> None:
    trainer, compiled = _train(dynamo_backend="inductor")
    assert isinstance(trainer.get_model(), torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(trainer.get_model(keep_torch_compile=False), torch._dynamo.eval_frame.OptimizedModule)
    _, eager = _train()
    for a, b in zip(compiled, eager, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)  # inductor may fuse differently: close, not equal


class BatchProbe(TrainerCallback):
    """Sees each batch where the step receives it."""

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.pinned_loader = False

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.pinned_loader = bool(getattr(trainer.train_dataloader, "pin_memory", False))

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch: Any, **kwargs: Any) -> None:
        self.devices.update(str(t.device.type) for t in batch)


@pytest.mark.parametrize("non_blocking", [False, True])
def test_pinned_batches_arrive_on_the_gpu_with_identical_results(non_blocking: bool) -> None:
    probe = BatchProbe()
    model = _model()
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[probe],
                             accelerator_options={"dataloader_config": DataLoaderConfiguration(non_blocking=non_blocking)})
    trainer.train(classification_data(n=128), 2, per_device_batch_size=16,
                  train_dataloader_kwargs={"generator": torch.Generator().manual_seed(0)})
    assert probe.pinned_loader  # pin_memory is on by default where CUDA is available
    assert probe.devices == {"cuda"}
    _, reference = _train()
    for a, b in zip((p.detach().cpu() for p in trainer.get_model().parameters()), reference, strict=True):
        assert torch.equal(a, b)


class ReadsTheLossEveryStep(TrainerCallback):
    """A callback that syncs at every step: the control that shows the sync counter works."""

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: Any, **kwargs: Any) -> None:
        batch_output["loss"].item()


def _synchronizing_calls(samples: int, *extra: TrainerCallback) -> int:
    """Trains one epoch with the default callbacks on the GPU; counts CUDA's synchronizing-operation warnings."""
    model = _model()
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[*get_default_callbacks(), *extra])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train(classification_data(n=samples), 1, per_device_batch_size=16)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def test_no_device_sync_per_step_with_the_default_callbacks() -> None:
    _synchronizing_calls(16)  # CUDA initialises lazily on a first run, with a sync of its own
    few, many = _synchronizing_calls(128), _synchronizing_calls(512)  # 8 and 32 steps
    assert few == many, (few, many)
    control_few, control_many = (_synchronizing_calls(n, ReadsTheLossEveryStep()) for n in (128, 512))
    assert control_many - control_few >= 24, (control_few, control_many)  # one more per extra step at least


def test_a_users_data_loading_configuration_is_kept() -> None:
    probe = BatchProbe()
    model = _model()
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[probe],
                             accelerator_options={"dataloader_config": DataLoaderConfiguration(non_blocking=False)})
    trainer.train(classification_data(n=32), 1, per_device_batch_size=16)
    assert trainer._accelerator.accelerator.dataloader_config.non_blocking is False

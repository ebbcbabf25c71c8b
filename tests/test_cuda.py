"""Mixed precision with a real CUDA device: skipped where there is none (CI), run on a GPU machine."""

from __future__ import annotations

import functools
from typing import Any, cast

import pytest
import torch
from torch import nn
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer, MixedPrecision

from ._helpers import classification_data, manual_seed, optimizer_step

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class Probe(DefaultTrainer):
    """Can make one chosen step's loss infinite."""

    inf_at_call: int | None = None

    @override
    def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
        self.calls = getattr(self, "calls", 0) + 1
        output = super().calculate_train_batch_loss(batch)
        if self.calls == self.inf_at_call:
            output["loss"] = output["loss"] * float("inf")
        return output


def _trainer(precision: str, **kwargs: Any) -> tuple[Probe, nn.Sequential]:
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3))
    trainer = Probe(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                    mixed_precision=cast(MixedPrecision, precision), **kwargs)  # parametrised literal
    return trainer, model


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_forward_and_convergence(precision: str) -> None:
    trainer, model = _trainer(precision)
    # Accelerate casts the model's outputs back to fp32, so look inside the forward: a layer's output.
    dtypes: set[torch.dtype] = set()
    model[0].register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    trainer.train(classification_data(n=256), 5, per_device_batch_size=32)
    assert dtypes == {{"fp16": torch.float16, "bf16": torch.bfloat16}[precision]}
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert losses[-1] < losses[0]
    assert (trainer._accelerator.scaler is not None) == (precision == "fp16")


def test_fp16_overflow_skips_the_optimizer_and_scheduler_step() -> None:
    trainer, model = _trainer("fp16")
    trainer.inf_at_call = 3
    steps: list[int] = []

    class Counting(torch.optim.lr_scheduler.LambdaLR):
        @override
        def step(self, epoch: int | None = None) -> None:
            steps.append(trainer.num_updates)
            super().step(epoch)

    trainer.train(classification_data(n=64), 1, per_device_batch_size=8,
                  create_scheduler_fn=functools.partial(Counting, lr_lambda=lambda step: 1.0))
    assert trainer.num_updates == 8
    # LambdaLR steps once when it is built; then after every update but the skipped third one. The loop
    # counts an update after its scheduler step, so each entry is the number of updates before it.
    assert steps == [0, 0, 1, 3, 4, 5, 6, 7]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp32_on_cuda_matches_a_plain_loop() -> None:
    data = classification_data(n=64)
    trainer, _ = _trainer("no")
    generator = {"generator": torch.Generator().manual_seed(0)}
    trainer.train(data, 2, per_device_batch_size=8, train_dataloader_kwargs=generator)
    manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3)).cuda()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        for x, y in loader:
            torch.autograd.backward(nn.functional.cross_entropy(plain(x.cuda()), y.cuda()))
            optimizer_step(optimizer)
            optimizer.zero_grad()
    for a, b in zip(trainer.get_model().parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)

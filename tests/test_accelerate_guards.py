"""Requests Accelerate would silently ignore are refused; torch.compile through Accelerate works
(issue 12, item 7)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pta import ConfigurationError, DefaultTrainer, reset_accelerate_state
from tests._helpers import mlp, regression_data


def test_fsdp_plugin_on_cpu_is_refused() -> None:
    from accelerate.utils.dataclasses import FullyShardedDataParallelPlugin  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information

    model = mlp()
    with pytest.raises(ConfigurationError, match=r"fsdp_plugin.*ignored.*one process"):  # on CPU or 1 GPU
        DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                       accelerator_options={"fsdp_plugin": FullyShardedDataParallelPlugin()})


def test_deepspeed_plugin_on_cpu_is_refused_before_accelerate_sees_it() -> None:
    model = mlp()
    with pytest.raises(ConfigurationError, match=r"deepspeed_plugin.*ignored"):
        DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                       accelerator_options={"cpu": True, "deepspeed_plugin": object()})  # never reaches Accelerate


def _train(options: dict[str, Any]) -> tuple[DefaultTrainer, list[float]]:
    model = mlp()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=(),
                             accelerator_options=options)  # type: ignore[arg-type]  # AcceleratorKwargs keys
    trainer.train(regression_data(32), 2, eval_dataset=regression_data(8), per_device_batch_size=8)
    return trainer, trainer.run_history.get_metric_values("train_loss_epoch")


def test_torch_compile_through_dynamo_backend() -> None:
    plain, plain_losses = _train({})
    reset_accelerate_state()  # Accelerate keeps the dynamo setting process-wide
    compiled, losses = _train({"dynamo_backend": "eager"})  # the "eager" backend: dynamo without a C++ compiler
    assert isinstance(compiled.get_model(), torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(compiled.get_model(keep_torch_compile=False), torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(plain.get_model(), torch._dynamo.eval_frame.OptimizedModule)
    assert losses == pytest.approx(plain_losses, rel=1e-5)

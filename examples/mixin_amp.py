"""AMPMixin (with the DevicePlacementMixin it needs) on top of TrainerBase: what it adds.

``mixed_precision="bf16"`` runs every forward pass (the loss included) under autocast while the
parameters stay in float32. bf16 autocast really runs on CPU; fp16 is a GPU feature (Accelerate
ignores it on CPU) that also scales the loss and skips optimizer steps whose gradients overflowed,
so the scheduler does not step either.

    python examples/mixin_amp.py                      # bf16 on CPU
    python examples/mixin_amp.py --precision fp16     # on a GPU
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from typing_extensions import override

from pta import AMPMixin, DevicePlacementMixin, MixedPrecision, TrainerBase, TrainerCallback, set_seed
from pta._types import BatchOutput
from pta.protocols import TrainerLike


class MixedPrecisionTrainer(AMPMixin, DevicePlacementMixin, TrainerBase):
    """MRO: MixedPrecisionTrainer, AMPMixin, DevicePlacementMixin, TrainerBase, TrainerHooks, Generic, object."""


class ShowDtypes(TrainerCallback):
    """Records, in the first training step, the dtype a layer computed in and the dtypes around it.

    Accelerate converts the model's outputs back to float32, so the reduced precision shows inside the
    model: a forward hook on its first layer sees it.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.seen: dict[str, str] = {}
        self._hook = layer.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.seen.setdefault("first layer computed in", str(output.dtype))

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        if "parameters" not in self.seen:
            self._hook.remove()
            if "model_outputs" in batch_output:  # optional in BatchOutput; the default loss step returns it
                self.seen["model outputs"] = str(batch_output["model_outputs"].dtype)
            self.seen["loss"] = str(batch_output["loss"].dtype)
            self.seen["parameters"] = str(next(trainer.model.parameters()).dtype)


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="bf16")
    args = parser.parse_args(argv)
    precision: MixedPrecision = args.precision

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    show = ShowDtypes(next(model.children()))
    trainer = MixedPrecisionTrainer(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3),
                                    callbacks=[show], mixed_precision=precision, seed=0)
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=32)

    seen = {**show.seen, "run_config.mixed_precision": trainer.run_config.mixed_precision,
            "eval_loss_epoch": f"{trainer.run_history.get_latest_metric('eval_loss_epoch'):.4f}"}
    for name, value in seen.items():
        trainer.print(f"{name}: {value}")
    return seen


if __name__ == "__main__":
    main()

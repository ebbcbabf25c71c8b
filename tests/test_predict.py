"""trainer.predict: outputs for every sample, in dataset order, with a customisable step."""

from __future__ import annotations

import torch
from typing_extensions import override

from pta import DefaultTrainer, TrainerBase

from ._helpers import linear_model, quiet_trainer, regression_data


def test_predict_returns_every_output_in_dataset_order() -> None:
    data = regression_data(n=37)
    trainer = quiet_trainer(linear_model())
    predictions = trainer.predict(data, per_device_batch_size=5)
    with torch.no_grad():  # batch by batch as predict runs it: a matmul's rounding depends on the batch shape
        expected = torch.cat([trainer.get_model()(x) for x in torch.split(data.tensors[0], 5)])
    assert predictions.shape == (37, 1)
    assert torch.equal(predictions, expected)
    assert not trainer.run_history.get_metric_names()


def test_predict_step_can_be_customised() -> None:
    class Classes(DefaultTrainer):
        @override
        def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            scores: torch.Tensor = self.model(batch[0])
            return (scores > 0).long().squeeze(1)

    model = linear_model()
    trainer = Classes(model, torch.nn.MSELoss(), None, callbacks=())
    data = regression_data(n=10)
    assert trainer.predict(data).tolist() == (model(data.tensors[0]) > 0).long().squeeze(1).tolist()  # pyright: ignore[reportUnknownMemberType]  # Tensor.tolist() is untyped


def test_predict_works_on_the_bare_base() -> None:
    model = linear_model()
    trainer: TrainerBase = TrainerBase(model, torch.nn.MSELoss(), None, callbacks=())
    assert trainer.predict(regression_data(n=9), per_device_batch_size=4).shape == (9, 1)

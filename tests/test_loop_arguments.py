"""Every argument of train(), evaluate() and predict() reaches what it configures (the loops in pta/base.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback
from pta.protocols import TrainerLike

from ._helpers import linear_model, manual_seed, params_of, quiet_trainer, regression_data

DROP_LAST = {"drop_last": True}


class BatchSizes(TrainerCallback):
    """The number of samples of every training and evaluation batch, in order."""

    def __init__(self) -> None:
        self.train: list[int] = []
        self.eval: list[int] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.train.append(int(kwargs["batch"][0].shape[0]))

    @override
    def on_eval_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.eval.append(int(kwargs["batch"][0].shape[0]))


def _plus_one_collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Stacks the samples with every input shifted by 1: a model output tells whether it was used."""
    return [torch.stack([x for x, _ in samples]) + 1, torch.stack([y for _, y in samples])]


def test_train_builds_the_evaluation_loader_from_the_batch_size_and_eval_dataloader_kwargs() -> None:
    sizes = BatchSizes()
    trainer = quiet_trainer(linear_model(), callbacks=[sizes])
    trainer.train(regression_data(n=8), 1, eval_dataset=regression_data(n=10), per_device_batch_size=4)
    assert (sizes.train, sizes.eval) == ([4, 4], [4, 4, 2])
    sizes.eval.clear()
    trainer.train(regression_data(n=8), 1, eval_dataset=regression_data(n=10), per_device_batch_size=4,
                  eval_dataloader_kwargs=DROP_LAST)
    assert sizes.eval == [4, 4]
    assert trainer.run_config.eval_dl_kwargs is not None and trainer.run_config.eval_dl_kwargs["drop_last"] is True


def test_train_records_the_batch_size_when_create_train_dataloader_is_overridden() -> None:
    class OwnLoader(DefaultTrainer):  # pytorch-accelerated style: the override builds the loader itself
        @override
        def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None
                                    ) -> DataLoader[Any]:
            assert self.train_dataset is not None
            return DataLoader(self.train_dataset, batch_size=batch_size)

    model = linear_model()
    trainer = OwnLoader(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.train(regression_data(n=12), 1, per_device_batch_size=3)
    assert trainer.run_config.train_per_device_batch_size == 3
    assert trainer.run_config.train_total_batch_size == 3
    assert trainer.run_config.num_update_steps_per_epoch == 4


def test_evaluate_uses_its_dataloader_kwargs_and_collate_fn() -> None:
    sizes = BatchSizes()
    trainer = quiet_trainer(linear_model(), callbacks=[sizes])
    data = regression_data(n=10)
    trainer.evaluate(data, per_device_batch_size=4, dataloader_kwargs=DROP_LAST)
    assert sizes.eval == [4, 4]
    assert trainer.eval_step_is_padding is False  # the public flag is a bool again after the epoch
    sizes.eval.clear()
    trainer.evaluate(data, per_device_batch_size=4)
    plain = trainer.run_history.get_latest_metric("evaluation_loss")
    trainer.evaluate(data, per_device_batch_size=4, collate_fn=_plus_one_collate)
    assert sizes.eval == [4, 4, 2, 4, 4, 2]
    model, (x, y) = trainer.get_model(), data.tensors
    with torch.no_grad():
        shifted = float(torch.nn.functional.mse_loss(model(x + 1), y))
    assert abs(trainer.run_history.get_latest_metric("evaluation_loss") - shifted) < 1e-6 * shifted  # float32 rounding
    assert abs(plain - shifted) > 1e-3


def test_predict_uses_its_batch_size_dataloader_kwargs_and_collate_fn() -> None:
    trainer = quiet_trainer(linear_model())
    data = regression_data(n=10)
    x = data.tensors[0]
    model = trainer.get_model()
    with torch.no_grad():
        assert torch.allclose(trainer.predict(data, per_device_batch_size=4, collate_fn=_plus_one_collate),
                              model(x + 1), atol=1e-6)
        assert torch.allclose(trainer.predict(data, per_device_batch_size=4, dataloader_kwargs=DROP_LAST),
                              model(x[:8]), atol=1e-6)
    assert trainer.run_config.eval_per_device_batch_size == 4


def test_evaluate_and_predict_have_a_one_epoch_run_config_of_their_batch_size() -> None:
    trainer = quiet_trainer(linear_model())
    for run in (trainer.evaluate, trainer.predict):
        run(regression_data(n=10), per_device_batch_size=4)
        config = trainer.run_config
        assert (config.num_epochs, config.gradient_accumulation_steps, config.max_num_train_steps) == (1, 1, None)
        assert (config.gradient_clip_value, config.gradient_clip_norm) == (None, None)
        assert (config.train_per_device_batch_size, config.train_total_batch_size) == (4, 4)
        assert (config.eval_per_device_batch_size, config.eval_total_batch_size) == (4, 4)


def test_evaluate_and_predict_batch_8_samples_by_default() -> None:
    trainer = quiet_trainer(linear_model())
    for run in (trainer.evaluate, trainer.predict):
        run(regression_data(n=10))
        assert trainer.run_config.eval_per_device_batch_size == 8


def test_the_trainer_seed_makes_a_run_reproducible_whatever_the_global_rng() -> None:
    """``seed=`` reseeds every run (dropout, shuffling), whatever the global RNGs were before."""
    def run(noise: int) -> list[torch.Tensor]:
        model = torch.nn.Sequential(linear_model(out=8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        trainer = DefaultTrainer(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                                 callbacks=(), seed=3)
        manual_seed(noise)
        trainer.train(regression_data(n=16), 2, per_device_batch_size=4)
        return params_of(model)

    first, second = run(noise=1), run(noise=2)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


class EvaluateAtEpochEnd(TrainerCallback):
    """Runs extra evaluation epochs from a callback, as ModelEmaCallback does; records any error."""

    def __init__(self) -> None:
        self.errors: list[RuntimeError] = []

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        assert isinstance(trainer, DefaultTrainer)
        try:
            trainer.run_evaluation_epoch()
            trainer.run_evaluation_epoch("extra_loss")
        except RuntimeError as error:
            self.errors.append(error)


def test_run_evaluation_epoch_records_under_its_metric_name_and_needs_an_eval_dataset() -> None:
    callback = EvaluateAtEpochEnd()
    trainer = quiet_trainer(linear_model(), callbacks=[callback])
    trainer.train(regression_data(n=8), 1, eval_dataset=regression_data(n=12, seed=1), per_device_batch_size=4)
    history = trainer.run_history
    # the callback's evaluation and the epoch's own one see the same weights
    assert history.get_metric_values("eval_loss_epoch") == history.get_metric_values("extra_loss") * 2
    model, (x, y) = trainer.get_model(), regression_data(n=12, seed=1).tensors
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(model(x), y))
    assert abs(history.get_latest_metric("extra_loss") - expected) < 1e-6 * expected  # float32 rounding
    assert not callback.errors
    trainer.train(regression_data(n=8), 1, per_device_batch_size=4)
    assert [str(error) for error in callback.errors] == [
        "run_evaluation_epoch() needs an eval_dataset passed to train()"]

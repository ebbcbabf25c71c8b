"""DevicePlacementMixin hands the user's own model back after every kind of run."""

from __future__ import annotations

from ._helpers import linear_model, quiet_trainer, regression_data


def test_the_model_is_the_users_module_again_after_train_evaluate_and_predict() -> None:
    model = linear_model()
    trainer = quiet_trainer(model)
    trainer.train(regression_data(n=16), 1, per_device_batch_size=4, eval_dataset=regression_data(n=8, seed=1))
    assert trainer.model is model
    trainer.evaluate(regression_data(n=8, seed=1), per_device_batch_size=4)
    assert trainer.model is model
    assert trainer.get_model() is model
    trainer.predict(regression_data(n=8, seed=1), per_device_batch_size=4)
    assert trainer.model is model

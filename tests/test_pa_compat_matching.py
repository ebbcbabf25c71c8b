"""Where pta now matches pytorch-accelerated without giving up a fix (issue 11 follow-up): the epoch save
of SaveTrainingStateCallback, placeholders reading the run_config field of their name, and test doubles
(a ``Mock`` model, a device given as a string) that pytorch-accelerated's own tests build trainers with."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import torch

from pta import TrainerPlaceholderValues
from pta._validation import check_optimizer_parameters
from pta.callbacks import SaveTrainingStateCallback
from pta.callbacks._console import parameter_counts, start_line
from pta.placeholders import replace_trainer_placeholder_values
from pta.run_config import TrainerRunConfig
from tests._helpers import mlp, params_of, quiet_trainer, regression_data


def _run(tmp_path: Path, *, save: bool = False, resume_from: Path | None = None) -> tuple[list[torch.Tensor], list[float]]:
    callbacks = [SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1, save_at_end=False)] if save else []
    trainer = quiet_trainer(mlp(), seed=3, callbacks=callbacks)
    trainer.train(regression_data(24), num_epochs=2, eval_dataset=regression_data(8, seed=1),
                  per_device_batch_size=4, resume_from=resume_from)
    return params_of(trainer.model), list(trainer.run_history.get_metric_values("eval_loss_epoch"))


def test_epoch_states_are_saved_at_train_epoch_end_and_resume_exactly(tmp_path: Path) -> None:
    """pa saves epoch states at on_train_epoch_end; so does pta, and the resume then runs that epoch's
    evaluation and goes on, ending exactly where an uninterrupted run ends."""
    reference_params, reference_evals = _run(tmp_path / "unused")
    _run(tmp_path, save=True)
    callback = SaveTrainingStateCallback(tmp_path / "direct", save_every_n_epochs=1, save_at_end=False)
    trainer = Mock()
    trainer.run_history.current_epoch = 1
    callback.on_train_epoch_end(trainer)  # the event alone saves (pa-style callers and tests call it)
    trainer.save_training_state.assert_called_once()

    resumed_params, resumed_evals = _run(tmp_path / "later", resume_from=tmp_path / "epoch_1")
    assert resumed_evals == reference_evals and len(resumed_evals) == 2
    for a, b in zip(reference_params, resumed_params, strict=True):
        assert torch.equal(a, b)


def _config(per_run: int, per_process: int) -> TrainerRunConfig:
    return TrainerRunConfig(
        num_epochs=3, train_per_device_batch_size=2, train_dl_kwargs={}, eval_per_device_batch_size=2,
        eval_dl_kwargs={}, gradient_accumulation_steps=1, gradient_clip_value=None, gradient_clip_norm=None,
        train_total_batch_size=4, eval_total_batch_size=4, num_update_steps_per_epoch=per_run,
        num_local_update_steps_per_epoch=per_process, max_num_train_steps=None, is_local_process_zero=True,
        is_world_process_zero=True, is_distributed=True, mixed_precision="no", num_processes=2,
    )


def test_placeholders_read_the_run_config_field_of_their_name() -> None:
    """A run_config built by hand (as pa's tests and user code do) is taken as it is; pta's own trainers
    set both fields to the per-process count, so their schedules are unchanged."""
    trainer = Mock()
    trainer.run_config = _config(per_run=400, per_process=200)
    factory: partial[dict[str, int]] = partial(dict, total=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
                      local=TrainerPlaceholderValues.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH)
    assert replace_trainer_placeholder_values(trainer, factory)() == {"total": 400, "local": 200}


def test_pta_trainers_give_both_placeholders_the_per_process_count() -> None:
    seen: dict[str, Any] = {}

    def scheduler(optimizer: torch.optim.Optimizer, *, total: int, local: int) -> torch.optim.lr_scheduler.LambdaLR:
        seen.update(total=total, local=local)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    trainer = quiet_trainer(mlp())
    trainer.train(regression_data(24), num_epochs=1, per_device_batch_size=4, gradient_accumulation_steps=2,
                  create_scheduler_fn=partial(
                      scheduler, total=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
                      local=TrainerPlaceholderValues.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH))
    assert seen == {"total": 3, "local": 3}


def test_the_optimizer_check_skips_test_doubles() -> None:
    """pa's tests build trainers with ``Mock()`` models and optimizers; there are no parameters to compare."""
    check_optimizer_parameters(Mock(), Mock(), Mock())


def test_the_start_line_accepts_a_mock_model_and_a_string_device() -> None:
    trainer = Mock()
    trainer.device = "cpu"  # pa's tests stub the accelerator with device="cpu"
    trainer.run_config = _config(per_run=4, per_process=4)
    trainer.train_dataloader = [0, 1, 2]
    assert parameter_counts(trainer) == (0, 0)
    line = start_line(trainer, training=True)
    assert "device cpu" in line and "parameters 0 trainable, 0 frozen" in line and "3 steps/epoch" in line

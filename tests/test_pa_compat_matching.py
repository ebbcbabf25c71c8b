"""Where pta now matches pytorch-accelerated without giving up a fix (issue 11 follow-up): the epoch save
of SaveTrainingStateCallback, placeholders reading the run_config field of their name, test doubles
(a ``Mock`` model, a device given as a string) that pytorch-accelerated's own tests build trainers with,
the schedulers' opt-in ``pa_compatible=True`` (pa's learning rates exactly) and WSD's warmup overrun
(a warning, as pa accepts it)."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
import torch

from pta import TrainerPlaceholderValues
from pta._validation import check_optimizer_parameters
from pta.callbacks import SaveTrainingStateCallback, WSDCheckpointCallback
from pta.callbacks._console import parameter_counts, start_line
from pta.placeholders import replace_trainer_placeholder_values
from pta.run_config import TrainerRunConfig
from pta.schedulers import CosineLrScheduler, StatefulSchedulerBase, WSDLrScheduler
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


# ------------------------------------------------------------------ schedulers: pa_compatible=True
def _sgd(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _used_lrs(scheduler: StatefulSchedulerBase, updates: int) -> list[float]:
    """The lr each optimizer update uses, with step() after every update (as the trainer does)."""
    used: list[float] = []
    for _ in range(updates):
        used.append(float(scheduler.optimizer.param_groups[0]["lr"]))
        scheduler.step()
    return used


def test_cosine_pa_compatible_gives_pas_learning_rates() -> None:
    """4 epochs of 5 updates, 1 warmup epoch from 0 to 0.1, minimum 0: pa uses the warmup start twice
    (one update behind), peaks at the 7th update, and drops to the minimum after 15 updates (its decay
    length leaves out the warmup twice); pta's default peaks at the 5th and reaches 0 at the 20th."""
    def make(**kwargs: Any) -> CosineLrScheduler:
        return CosineLrScheduler(_sgd(), total_num_epochs=4, num_update_steps_per_epoch=5, num_warmup_epochs=1,
                                 warmup_starting_lr=0.0, lr_min=0.0, **kwargs)

    pa = _used_lrs(make(pa_compatible=True), 20)
    assert pa[:6] == pytest.approx([0.0, 0.0, 0.02, 0.04, 0.06, 0.08])
    assert pa[6] == pytest.approx(0.1) and max(pa) == pytest.approx(0.1)
    assert pa[15] > 0.001 and pa[16:] == [0.0] * 4  # pa's abrupt drop
    default = _used_lrs(make(), 20)
    assert default[0] == 0.0 and default[4] == pytest.approx(0.1) and default[-1] == 0.0 and default[-2] > 0


def test_cosine_pa_compatible_by_class_attribute_and_state_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CosineLrScheduler, "pa_compatible", True)
    reference = CosineLrScheduler(_sgd(), total_num_epochs=3, num_update_steps_per_epoch=4, num_warmup_epochs=1)
    expected = _used_lrs(CosineLrScheduler(_sgd(), total_num_epochs=3, num_update_steps_per_epoch=4,
                                           num_warmup_epochs=1, pa_compatible=True), 12)
    first = _used_lrs(reference, 5)
    state = reference.state_dict()
    assert state["num_updates"] == 4  # pa's meaning: the index of the last update
    restored = CosineLrScheduler(_sgd(), total_num_epochs=3, num_update_steps_per_epoch=4, num_warmup_epochs=1)
    restored.load_state_dict(state)
    assert first + _used_lrs(restored, 7) == expected
    monkeypatch.setattr(CosineLrScheduler, "pa_compatible", False)
    assert _used_lrs(CosineLrScheduler(_sgd(), total_num_epochs=3, num_update_steps_per_epoch=4,
                                       num_warmup_epochs=1), 12) != expected


def test_wsd_pa_compatible_gives_pas_learning_rates() -> None:
    """100 updates, one checkpoint, decay ratio 0.1 to 10%: pa's decay starts one update late and ends
    before reaching the minimum; pta's default reaches it at the 100th update."""
    def make(**kwargs: Any) -> WSDLrScheduler:
        return WSDLrScheduler(_sgd(), total_steps=100, decay_phase_ratio=0.1, lr_min=0.1, **kwargs)

    scheduler = make(pa_compatible=True)
    pa = _used_lrs(scheduler, 89)
    before = scheduler.previous_checkpoint_step
    pa += _used_lrs(scheduler, 11)
    assert (before, scheduler.previous_checkpoint_step) == (None, 89)  # pa's value, set when its decay begins
    assert scheduler.get_current_step() == 99  # as in both libraries: the index of the last update (for the callback)
    assert pa[:92] == [0.1] * 92
    assert pa[-1] == pytest.approx(0.1 * (0.1 + 0.9 * (1 - math.sqrt(0.8))))
    default = _used_lrs(make(), 100)
    assert default[-1] == pytest.approx(0.01) and default[90] < 0.1


def test_wsd_pa_compatible_uses_pas_checkpoint_steps_and_keeps_the_position_in_states() -> None:
    assert WSDLrScheduler(_sgd(), total_steps=200_000, num_checkpoints=4,
                          pa_compatible=True).get_checkpoint_steps() == [50_000, 100_000, 200_000]
    assert WSDLrScheduler(_sgd(), total_steps=200_000,
                          num_checkpoints=4).get_checkpoint_steps() == [25_000, 50_000, 100_000, 200_000]
    saved = WSDLrScheduler(_sgd(), total_steps=40, num_warmup_steps=4, pa_compatible=True)
    first = _used_lrs(saved, 30)
    restored = WSDLrScheduler(_sgd(), total_steps=40, num_warmup_steps=4, pa_compatible=True)
    restored.load_state_dict(saved.state_dict())
    assert saved.state_dict()["num_updates"] == 30  # updates done, as in pta's own states
    assert first + _used_lrs(restored, 10) == _used_lrs(
        WSDLrScheduler(_sgd(), total_steps=40, num_warmup_steps=4, pa_compatible=True), 40)


def test_wsd_warmup_running_into_the_decay_warns_instead_of_refusing() -> None:
    """pa accepts it; the schedule is well defined (warm up, then the rest of the decay)."""
    with pytest.warns(UserWarning, match="num_warmup_steps=95 runs into the first decay phase"):
        scheduler = WSDLrScheduler(_sgd(), total_steps=100, num_warmup_steps=95, warmup_starting_lr=0.0,
                                   decay_phase_ratio=0.1, lr_min=0.1)
    used = _used_lrs(scheduler, 100)
    assert used[0] == 0.0 and used[93] == pytest.approx(0.1 * 93 / 94) and used[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(used[94:], used[95:]))  # the second half of the decay


@pytest.mark.parametrize("pa_compatible", [False, True])
def test_wsd_checkpoint_callback_saves_at_the_same_updates_with_a_pa_compatible_scheduler(
        tmp_path: Path, pa_compatible: bool) -> None:
    callback = WSDCheckpointCallback(save_dir=tmp_path)
    trainer = quiet_trainer(mlp(), callbacks=[callback])
    trainer.train(regression_data(16), num_epochs=2, per_device_batch_size=4,
                  create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(decay_phase_ratio=0.25,
                                                                         pa_compatible=pa_compatible))
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "checkpoint_6_wsd_pre_decay", "checkpoint_8_wsd_post_decay.pt"]

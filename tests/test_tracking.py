"""pta.tracking.InMemoryRunHistory and pta.run_config.TrainerRunConfig.

Tests named ``..._pa_...`` pin a behaviour where pytorch-accelerated is wrong.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
import torch
from torch.utils.data import RandomSampler

from pta import TrainerRunConfig
from pta.tracking import InMemoryRunHistory, RunHistory
from tests._helpers import mlp, quiet_trainer, regression_data


def history_with(**metrics: list[float]) -> InMemoryRunHistory:
    history = InMemoryRunHistory()
    for name, values in metrics.items():
        for value in values:
            history.update_metric(name, value)
    return history


# ---------------------------------------------------------------------------------------------- reads
def test_reading_an_unknown_metric_never_creates_it_pa_inserts_it() -> None:
    history = history_with(loss=[1.0])
    assert history.get_metric_values("accuracy") == []
    with pytest.raises(ValueError, match="accuracy"):
        history.get_latest_metric("accuracy")
    assert history.get_metric_names() == {"loss"}  # pa's defaultdict now also lists "accuracy"


def test_values_are_in_order_and_a_copy() -> None:
    history = history_with(loss=[3.0, 2.0, 1.0])
    assert history.get_metric_values("loss") == [3.0, 2.0, 1.0]
    assert history.get_latest_metric("loss") == 1.0
    history.get_metric_values("loss").append(0.0)
    assert history.get_metric_values("loss") == [3.0, 2.0, 1.0]
    assert isinstance(history, RunHistory)


# ---------------------------------------------------------------------------------------------- prefix
def test_prefix_is_applied_on_write_and_read() -> None:
    history = InMemoryRunHistory()
    history.set_metric_name_prefix("ema_model_")
    assert history.metric_name_prefix == "ema_model_"
    history.update_metric("eval_loss_epoch", 0.5)
    assert history.get_metric_names() == {"ema_model_eval_loss_epoch"}
    assert history.get_latest_metric("eval_loss_epoch") == 0.5  # pa reads the unprefixed name: ValueError
    assert history.get_metric_values("eval_loss_epoch") == [0.5]
    assert history.get_latest_metric("ema_model_eval_loss_epoch") == 0.5  # full names read back too
    history.set_metric_name_prefix()
    assert history.metric_name_prefix == ""
    assert history.get_metric_values("eval_loss_epoch") == []
    assert history.get_latest_metric("ema_model_eval_loss_epoch") == 0.5


def test_a_prefixed_write_never_lands_in_the_unprefixed_metric() -> None:
    """The name already starts with the prefix: it is still prefixed, so the two series stay apart."""
    history = history_with(eval_loss_epoch=[1.0])
    history.set_metric_name_prefix("eval_")
    history.update_metric("eval_loss_epoch", 2.0)
    assert history.get_metric_names() == {"eval_loss_epoch", "eval_eval_loss_epoch"}
    assert history.get_metric_values("eval_loss_epoch") == [2.0]  # the prefixed series first
    history.set_metric_name_prefix("")
    assert history.get_metric_values("eval_loss_epoch") == [1.0]


def test_names_from_get_metric_names_can_be_read_under_a_prefix() -> None:
    """What a logging callback does while another callback has set a prefix."""
    history = history_with(train_loss_epoch=[1.0])
    history.set_metric_name_prefix("ema_model_")
    history.update_metric("eval_loss_epoch", 2.0)
    latest = {name: history.get_latest_metric(name) for name in history.get_metric_names()}
    assert latest == {"train_loss_epoch": 1.0, "ema_model_eval_loss_epoch": 2.0}


def test_delete_metric_with_and_without_prefix() -> None:
    history = history_with(loss=[1.0])
    history.set_metric_name_prefix("p_")
    history.update_metric("loss", 2.0)
    history.delete_metric("loss")
    assert history.get_metric_names() == {"loss"}
    history.delete_metric("loss")
    assert history.get_metric_names() == set()
    history.delete_metric("never_recorded")  # no error, nothing created
    assert history.get_metric_names() == set()


# ---------------------------------------------------------------------------------------------- epochs, reset, state
def test_epochs_and_reset() -> None:
    history = history_with(loss=[1.0])
    assert history.current_epoch == 1
    history._increment_epoch()
    history._increment_epoch()
    assert history.current_epoch == 3
    history._set_epoch(7)
    assert history.current_epoch == 7
    history.reset()
    assert history.current_epoch == 1
    assert history.get_metric_names() == set() and history.get_metric_values("loss") == []


def test_state_dict_round_trip() -> None:
    history = history_with(loss=[3.0, 2.0], acc=[0.5])
    history._set_epoch(3)
    state = history.state_dict()
    history.update_metric("loss", 1.0)  # later changes do not leak into the saved state
    assert state["metrics"]["loss"] == [3.0, 2.0]
    restored = InMemoryRunHistory()
    restored.load_state_dict(state)
    assert restored.current_epoch == 3
    assert restored.get_metric_names() == {"loss", "acc"}
    assert restored.get_metric_values("loss") == [3.0, 2.0]
    restored.update_metric("loss", 0.0)
    assert state["metrics"]["loss"] == [3.0, 2.0]
    loaded: dict[str, Any] = torch.load(_saved(state), weights_only=True)
    other = InMemoryRunHistory()
    other.load_state_dict(loaded)
    assert other.state_dict() == state


def _saved(state: dict[str, Any]) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# ---------------------------------------------------------------------------------------------- TrainerRunConfig
def run_config(**changes: Any) -> TrainerRunConfig:
    values: dict[str, Any] = dict(
        num_epochs=2, train_per_device_batch_size=8, train_dl_kwargs={"batch_size": 8, "shuffle": True},
        eval_per_device_batch_size=None, eval_dl_kwargs=None, gradient_accumulation_steps=1,
        gradient_clip_value=None, train_total_batch_size=8, eval_total_batch_size=None,
        num_update_steps_per_epoch=4, num_local_update_steps_per_epoch=4, max_num_train_steps=None,
        is_local_process_zero=True, is_world_process_zero=True, is_distributed=False, mixed_precision="no",
        num_processes=1,
    )
    values.update(changes)
    return TrainerRunConfig(**values)


def test_to_dict_without_an_eval_set_pa_raises() -> None:
    config = run_config()
    result = config.to_dict()
    assert set(result) == {f.name for f in dataclasses.fields(TrainerRunConfig)}
    assert result["eval_dl_kwargs"] is None and result["num_epochs"] == 2
    result["train_dl_kwargs"]["batch_size"] = 99  # a copy: the frozen config is unchanged
    assert config.train_dl_kwargs == {"batch_size": 8, "shuffle": True}


def test_to_dict_with_samplers_holding_generators() -> None:
    sampler = RandomSampler(range(10), generator=torch.Generator().manual_seed(0))
    config = run_config(train_dl_kwargs={"batch_size": 8, "sampler": sampler},
                        eval_dl_kwargs={"batch_size": 4, "sampler": sampler}, eval_per_device_batch_size=4)
    result = config.to_dict()
    assert result["train_dl_kwargs"]["sampler"] is sampler and result["eval_dl_kwargs"]["sampler"] is sampler
    assert config.train_dl_kwargs is not None and config.train_dl_kwargs["sampler"] is sampler
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_epochs = 3  # type: ignore[misc]  # frozen: assigning must fail at run time


@pytest.mark.parametrize("with_eval", [False, True])
def test_to_dict_from_a_real_run(with_eval: bool) -> None:
    model = mlp()
    trainer = quiet_trainer(model)
    trainer.train(regression_data(32), num_epochs=1, per_device_batch_size=8,
                  eval_dataset=regression_data(16, seed=1) if with_eval else None)
    result = trainer.run_config.to_dict()
    assert result["num_epochs"] == 1 and result["num_update_steps_per_epoch"] == 4
    assert result["train_per_device_batch_size"] == 8 and result["num_processes"] == 1
    assert result["train_dl_kwargs"]["batch_size"] == 8
    if with_eval:
        assert result["eval_dl_kwargs"]["batch_size"] == 8
        assert result["eval_dl_kwargs"]["shuffle"] is False
    else:
        assert result["eval_dl_kwargs"] is None
    assert trainer.run_history.get_metric_names() == (
        {"train_loss_epoch", "eval_loss_epoch"} if with_eval else {"train_loss_epoch"}
    )

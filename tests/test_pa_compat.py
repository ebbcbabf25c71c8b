"""pytorch-accelerated code runs unchanged on pta (issue 11): custom callback events, event signatures,
assignable ``run_config`` / ``num_updates``, the state callbacks' calls, duck-typed trainers (schedulers:
test_pa_compat_schedulers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim import SGD
from typing_extensions import override

from pta import DefaultTrainer, Trainer
from pta._types import BatchOutput
from pta.callbacks import SaveTrainingStateCallback, TrainerCallback, WSDCheckpointCallback
from pta.callbacks.base import CallbackHandler
from pta.run_config import TrainerRunConfig
from pta.schedulers import WSDLrScheduler
from pta.tracking import InMemoryRunHistory
from pta.utils import worker_init_fn
from tests._helpers import linear_model, quiet_trainer, regression_data


# ------------------------------------------------------------------------------ custom events
class VerifyBatch(TrainerCallback):
    """pytorch-accelerated's documented custom event: a method without the on_ prefix."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def verify_train_batch(self, trainer: Any, xb: Tensor, yb: Tensor) -> None:
        assert xb.shape[0] == trainer.run_config.train_per_device_batch_size
        self.sizes.append((xb.shape[0], yb.shape[0]))


class TrainerWithCustomEvent(Trainer):
    def __init__(self, *args: Any, by_keyword: bool, **kwargs: Any) -> None:
        self.by_keyword = by_keyword
        super().__init__(*args, **kwargs)

    @override
    def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
        xb, yb = batch
        if self.by_keyword:  # as in pytorch-accelerated's docs and examples/core/custom_callback_event.py
            self.callback_handler.call_event("verify_train_batch", trainer=self, xb=xb, yb=yb)
        else:
            self.callback_handler.call_event("verify_train_batch", self, xb=xb, yb=yb)
        return super().calculate_train_batch_loss(batch)


class OnlyEpochs(TrainerCallback):
    """Has no verify_train_batch: a custom event skips it (pytorch-accelerated does the same)."""

    @override
    def on_train_epoch_end(self, trainer: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("by_keyword", [True, False])
def test_custom_event_reaches_callbacks_that_define_it(by_keyword: bool) -> None:
    model = linear_model()
    verify = VerifyBatch()
    trainer = TrainerWithCustomEvent(model, nn.MSELoss(), SGD(model.parameters(), lr=0.1),
                                     callbacks=[OnlyEpochs(), verify], by_keyword=by_keyword)
    trainer.train(regression_data(n=16), num_epochs=2, per_device_batch_size=4)
    assert verify.sizes == [(4, 4)] * 8


def test_custom_event_lookup_follows_added_callbacks() -> None:
    seen: list[Any] = []

    class Spy(TrainerCallback):
        def verify_train_batch(self, trainer: Any, **kwargs: Any) -> None:
            seen.append((trainer, kwargs))

    handler = CallbackHandler([OnlyEpochs()])
    handler.call_event("verify_train_batch", trainer=None, xb=1)  # no callback has it: nothing happens
    assert not handler.has_listeners("verify_train_batch")
    spy = Spy()
    handler.add_callback(spy)
    handler.call_event("verify_train_batch", trainer="t", xb=2)
    handler.remove_callback(spy)
    handler.call_event("verify_train_batch", trainer="t", xb=3)
    assert seen == [("t", {"xb": 2})]


def test_declared_on_prefixed_custom_event() -> None:
    class Declared(TrainerCallback):
        custom_events = ("on_batch_verified",)

        def __init__(self) -> None:
            self.calls: list[int] = []

        def on_batch_verified(self, trainer: Any, size: int, **kwargs: Any) -> None:
            self.calls.append(size)

    class Child(Declared):  # the declaration is inherited
        @override
        def on_batch_verified(self, trainer: Any, size: int, **kwargs: Any) -> None:
            self.calls.append(-size)

    declared, child = Declared(), Child()
    CallbackHandler([declared, child]).call_event("on_batch_verified", None, size=3)
    assert declared.calls == [3] and child.calls == [-3]


def test_a_misspelled_event_fails_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"on_train_step_ends.*did you mean 'on_train_step_end'.*custom_events"):
        class Typo(TrainerCallback):  # pyright: ignore[reportUnusedClass]  # defining it is what raises
            def on_train_step_ends(self, trainer: Any, **kwargs: Any) -> None:
                pass
    with pytest.raises(TypeError, match="did you mean 'on_eval_epoch_end'"):
        class Typo2(TrainerCallback):  # pyright: ignore[reportUnusedClass]  # defining it is what raises
            def on_eval_epoh_end(self, trainer: Any, **kwargs: Any) -> None:
                pass
    with pytest.raises(TypeError, match="built-in event"):
        class Redeclared(TrainerCallback):  # pyright: ignore[reportUnusedClass]  # defining it is what raises
            custom_events = ("on_train_step_end",)


def test_non_methods_and_unprefixed_helpers_are_not_events() -> None:
    class Fine(TrainerCallback):
        on_gpu = True  # an attribute, not an event

        @override
        def on_train_step_end(self, trainer: Any, **kwargs: Any) -> None:
            pass

        def verify(self) -> None:
            pass

    assert Fine.on_gpu


def test_calling_an_undeclared_on_event_names_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'on_train_step_end'"):
        CallbackHandler([OnlyEpochs()]).call_event("on_train_stp_end", None)


# ------------------------------------------------------------------------------ event signatures
def test_events_take_trainer_by_keyword() -> None:
    trainer = quiet_trainer(linear_model())
    TrainerCallback().on_train_epoch_start(trainer=trainer)
    TrainerCallback().on_train_step_end(trainer=trainer, batch_output={"loss": torch.zeros(())}, batch=None, step=0)
    seen: list[object] = []

    class PaStyle(TrainerCallback):
        @override
        def on_train_epoch_start(self, trainer: Any, **kwargs: Any) -> None:
            seen.append(trainer)

    CallbackHandler([PaStyle()]).call_event("on_train_epoch_start", trainer=trainer)
    assert seen == [trainer]


class RecordingTrainer(DefaultTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved_paths: list[object] = []

    @override
    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        self.saved_paths.append(output_dir)
        assert isinstance(output_dir, str)
        output_dir.endswith("x")  # user code written for pytorch-accelerated treats it as a str
        return super().save_training_state(output_dir, checkpoint_kwargs)


def test_state_callbacks_take_pa_calls_and_pass_str_paths(tmp_path: Path) -> None:
    model = linear_model()
    states = SaveTrainingStateCallback(save_dir=tmp_path / "states", save_every_n_steps=2, save_at_end=False)
    trainer = RecordingTrainer(model, nn.MSELoss(), SGD(model.parameters(), lr=0.1), callbacks=[states])
    trainer.train(regression_data(n=16), num_epochs=1, per_device_batch_size=4)
    assert trainer.saved_paths == [str(tmp_path / "states" / "step_2"), str(tmp_path / "states" / "step_4")]
    # pytorch-accelerated calls these events with (trainer, step=...) only
    states.on_training_run_start(trainer)
    states.on_train_step_end(trainer, step=0)
    wsd = WSDCheckpointCallback(save_dir=tmp_path / "wsd")
    trainer.scheduler = WSDLrScheduler(trainer.optimizer, total_steps=10)  # type: ignore[arg-type]  # set above
    wsd.on_training_run_start(trainer)
    wsd.on_train_step_end(trainer, step=0)


def test_wsd_callback_passes_a_str_path(tmp_path: Path) -> None:
    model = linear_model()
    wsd = WSDCheckpointCallback(save_dir=tmp_path)
    trainer = RecordingTrainer(model, nn.MSELoss(), SGD(model.parameters(), lr=0.1), callbacks=[wsd])
    trainer.train(regression_data(n=16), num_epochs=2, per_device_batch_size=4,
                  create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(decay_phase_ratio=0.25))
    assert trainer.saved_paths == [str(tmp_path / "checkpoint_6_wsd_pre_decay")]


# ------------------------------------------------------------------------------ trainer attributes
class TimmStyleTrainer(Trainer):
    """The counting that pytorch-accelerated's timm examples do in their Trainer subclass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_updates = None  # exactly as the examples write it
        self.seen: list[int] = []

    @override
    def train_epoch_start(self) -> None:
        super().train_epoch_start()
        assert self._train_dataloader is not None
        self.num_updates = self.run_history.current_epoch * len(self._train_dataloader)

    @override
    def scheduler_step(self) -> None:
        self.num_updates += 1
        self.seen.append(self.num_updates)


def test_num_updates_is_assignable_without_touching_the_loop() -> None:
    model = linear_model()
    trainer = TimmStyleTrainer(model, nn.MSELoss(), SGD(model.parameters(), lr=0.1), callbacks=())
    assert trainer.num_updates == 0  # None: the loop's count
    trainer.train(regression_data(n=16), num_epochs=2, per_device_batch_size=4, max_num_train_steps=6)
    assert trainer.seen == [5, 6, 7, 8, 9, 10]  # the subclass's own count
    assert trainer.num_updates == 10
    assert trainer._num_updates == 6  # the loop stopped at max_num_train_steps as usual
    trainer.num_updates = None  # back to the loop's count
    assert trainer.num_updates == 6


def test_run_config_is_assignable() -> None:
    trainer = quiet_trainer(linear_model())
    config = TrainerRunConfig(
        num_epochs=1, train_per_device_batch_size=2, train_dl_kwargs={}, eval_per_device_batch_size=2,
        eval_dl_kwargs={}, gradient_accumulation_steps=1, gradient_clip_value=None, gradient_clip_norm=None,
        train_total_batch_size=2, eval_total_batch_size=2, num_update_steps_per_epoch=1,
        num_local_update_steps_per_epoch=1, max_num_train_steps=None, is_local_process_zero=True,
        is_world_process_zero=True, is_distributed=False, mixed_precision="no", num_processes=1,
    )
    trainer.run_config = config
    assert trainer.run_config is config
    trainer.train(regression_data(n=8), num_epochs=1, per_device_batch_size=4)
    assert trainer.run_config is not config and trainer.run_config.train_per_device_batch_size == 4


def test_worker_init_fn_kept_without_workers() -> None:
    trainer = quiet_trainer(linear_model())
    trainer.train(regression_data(n=8), num_epochs=1, per_device_batch_size=4)
    assert trainer.run_config.train_dl_kwargs is not None
    assert trainer.run_config.train_dl_kwargs["num_workers"] == 0
    assert trainer.run_config.train_dl_kwargs["worker_init_fn"] is worker_init_fn


def test_evaluation_loads_in_the_main_process_by_default() -> None:
    trainer = quiet_trainer(linear_model())
    trainer.train(regression_data(n=8), num_epochs=1, per_device_batch_size=4, eval_dataset=regression_data(n=4))
    assert trainer.run_config.eval_dl_kwargs is not None
    assert trainer.run_config.eval_dl_kwargs["num_workers"] == 0  # no worker processes unless asked for
    assert trainer.run_config.eval_dl_kwargs["worker_init_fn"] is worker_init_fn


def test_a_new_trainer_has_no_data_yet_and_an_evaluation_has_no_training_kwargs() -> None:
    """pytorch-accelerated's constructor sets these public attributes to None; code reads them before train()."""
    trainer = quiet_trainer(linear_model())
    assert trainer.train_dataset is None and trainer.eval_dataset is None and trainer.collate_fn is None
    trainer.evaluate(regression_data(n=8), per_device_batch_size=4)
    assert trainer.run_config.train_dl_kwargs is None  # an evaluation-only run built no training loader
    assert trainer.run_config.eval_dl_kwargs is not None and trainer.run_config.eval_dl_kwargs["batch_size"] == 4


def test_the_run_history_passed_to_the_constructor_is_the_one_filled() -> None:
    history = InMemoryRunHistory()
    trainer = quiet_trainer(linear_model(), run_history=history)
    assert trainer.run_history is history
    trainer.train(regression_data(n=8), num_epochs=2, per_device_batch_size=4)
    assert history.current_epoch == 3 and len(history.get_metric_values("train_loss_epoch")) == 2


# ------------------------------------------------------------------------------ duck-typed trainers
class PaStyleFakeTrainer:
    """A stand-in written for pytorch-accelerated: private dataloader attributes, no update count."""

    def __init__(self, config: TrainerRunConfig) -> None:
        self._train_dataloader = [0] * 12
        self._eval_dataloader = [0] * 5
        self.run_config = config
        self.train_dataloader = None
        self.saved: list[str] = []
        self.run_history = InMemoryRunHistory()

    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        self.saved.append(str(output_dir))
        return Path(output_dir)

    def load_training_state(self, input_dir: str | Path) -> dict[str, Any]:
        return {}

    def print(self, *args: Any) -> None:
        pass


def fake_config(accumulation: Any = 1) -> TrainerRunConfig:
    return TrainerRunConfig(
        num_epochs=3, train_per_device_batch_size=2, train_dl_kwargs={}, eval_per_device_batch_size=2,
        eval_dl_kwargs={}, gradient_accumulation_steps=accumulation, gradient_clip_value=None,
        train_total_batch_size=2, eval_total_batch_size=2, num_update_steps_per_epoch=12,
        num_local_update_steps_per_epoch=12, max_num_train_steps=None, is_local_process_zero=True,
        is_world_process_zero=True, is_distributed=False, mixed_precision="no", num_processes=1,
    )


def test_placeholders_read_pa_style_private_dataloaders() -> None:
    from functools import partial

    from pta import TrainerPlaceholderValues
    from pta.trainer import replace_trainer_placeholder_values

    factory: partial[dict[str, int]] = partial(dict, train=TrainerPlaceholderValues.TRAIN_DATALOADER_LEN,
                                                 eval=TrainerPlaceholderValues.EVAL_DATALOADER_LEN)
    resolved = replace_trainer_placeholder_values(PaStyleFakeTrainer(fake_config()), factory)  # type: ignore[arg-type]  # a duck-typed stand-in
    assert resolved() == {"train": 12, "eval": 5}


def test_step_saves_count_steps_of_a_trainer_without_an_update_count(tmp_path: Path) -> None:
    trainer: Any = PaStyleFakeTrainer(fake_config(accumulation=object()))  # a setting it cannot read
    callback = SaveTrainingStateCallback(save_dir=tmp_path, save_every_n_steps=3, save_at_end=False)
    callback.on_training_run_start(trainer)
    for step in range(6):
        callback.on_train_step_end(trainer, step=step)
    assert trainer.saved == [str(tmp_path / "step_3"), str(tmp_path / "step_6")]


def test_wsd_callback_accepts_a_scheduler_without_a_position_yet(tmp_path: Path) -> None:
    class DuckScheduler:
        decay_phase_ratio = 0.1
        position: Any = None

        def get_checkpoint_steps(self) -> list[int]:
            return [10]

        def get_decay_info(self) -> Any:
            return []

        def get_phase_info(self, num_updates: int) -> dict[str, int]:
            return {"pre_decay_step": 9, "period_end": 10}

        def get_current_step(self) -> Any:
            return self.position

    trainer: Any = PaStyleFakeTrainer(fake_config())
    trainer.scheduler = DuckScheduler()
    callback = WSDCheckpointCallback(save_dir=tmp_path)
    callback.on_training_run_start(trainer)
    trainer.scheduler.position = 8
    callback.on_train_step_end(trainer, step=8)
    assert trainer.saved == [str(tmp_path / "checkpoint_9_wsd_pre_decay")]


def test_run_history_metrics_accept_direct_appends_as_in_pytorch_accelerated() -> None:
    history = InMemoryRunHistory()
    history._metrics["my_metric"].extend([0, 1, 2])  # pytorch-accelerated's users (and tests) do this
    assert history.get_metric_values("my_metric") == [0, 1, 2]
    assert history.get_metric_values("never_recorded") == [] and history.get_metric_names() == {"my_metric"}

"""Class-creation checks of trainers (issue 9): broken hook chains, misspelled hooks, capability
arguments and data arguments refused at run time for code no type checker saw."""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

import pta
import pta.default_trainer
import pta.trainer
from pta import (
    AMPMixin,
    BatchOutput,
    DefaultTrainer,
    DevicePlacementMixin,
    DistributedEvalMixin,
    GradAccumMixin,
    SchedulerMixin,
    TrainerBase,
    TrainerCallback,
)
from tests._helpers import linear_model, params_of, regression_data

MIXINS: tuple[type[TrainerBase[Any]], ...] = (
    AMPMixin, GradAccumMixin, DistributedEvalMixin, SchedulerMixin, DevicePlacementMixin,
)


class _Noop(TrainerCallback):
    """Listens to nothing (keeps the console quiet)."""


def _sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.05)


def _chained_hooks() -> list[tuple[str, type[TrainerBase[Any]]]]:
    """Every (hook, mixin) where a pta mixin overrides a TrainerBase hook and calls super()."""
    found: list[tuple[str, type[TrainerBase[Any]]]] = []
    for mixin in MIXINS:
        for name, member in vars(mixin).items():
            function = member.fget if isinstance(member, property) else member
            if not name.startswith("_") and inspect.isfunction(function) and name in function.__code__.co_names:
                found.append((name, mixin))
    return found


CHAINED = _chained_hooks()


def test_the_mixins_chain_many_hooks() -> None:
    names = {name for name, _ in CHAINED}
    assert {"scale_loss", "is_update_step", "train_step_context", "forward_context", "before_optimizer_step",
            "reduce_epoch_loss", "iterate_eval_batches", "gather", "configure_run", "accelerator_kwargs",
            "optimizer_step_was_skipped", "training_state_dict"} <= names


# ------------------------------------------------------------------------- item 2: broken chains
def test_scale_loss_without_super_under_grad_accum_fails_before_any_weight_changes() -> None:
    model = linear_model()
    before = params_of(model)
    with pytest.raises(pta.HookChainError, match=r"scale_loss") as info:

        class PlainLoss(DefaultTrainer[Any]):  # pyright: ignore[reportUnusedClass]  # defining it is what raises
            @override
            def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
                return loss  # forgets super(): GradAccumMixin's 1/k weighting would be lost (updates k times too large)

    message = str(info.value)
    assert "PlainLoss.scale_loss() does not call super().scale_loss()" in message and "GradAccumMixin" in message
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model), strict=True))


@pytest.mark.parametrize(("hook", "mixin"), CHAINED, ids=[f"{h}-{m.__name__}" for h, m in CHAINED])
def test_every_chained_hook_override_without_super_is_refused(hook: str, mixin: type[TrainerBase[Any]]) -> None:
    def forgetful(self: Any, *args: Any, **kwargs: Any) -> Any:
        return None

    for bases in ((DefaultTrainer,), (mixin, TrainerBase)):
        member: Any = property(forgetful) if isinstance(getattr(TrainerBase, hook), property) else forgetful
        with pytest.raises(pta.HookChainError, match=hook):
            type("Forgetful", bases, {hook: member})


def test_a_forgetful_mixin_is_refused_where_it_is_composed_above_a_cooperative_one() -> None:
    class ReplacesScaleLoss(TrainerBase[Any]):  # alone it replaces TrainerBase's default: allowed
        @override
        def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
            return loss

    with pytest.raises(pta.HookChainError, match=r"ReplacesScaleLoss.scale_loss\(\).*GradAccumMixin"):
        type("Composed", (ReplacesScaleLoss, GradAccumMixin, TrainerBase), {})
    type("Fine", (GradAccumMixin, ReplacesScaleLoss, TrainerBase), {})  # below the mixin it is the chain's end


def test_overrides_of_hooks_only_trainer_base_defines_need_no_super() -> None:
    class Replaces(DefaultTrainer[Any]):  # the user-replaceable hooks: replacing them whole is fine
        @override
        def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
            return {"loss": self.model(batch[0]).sum()}

        @override
        def scheduler_step(self) -> None:
            pass

        @override
        def backward_step(self, loss: Tensor) -> None:
            loss.backward()  # type: ignore[no-untyped-call]  # torch's backward is untyped

    assert Replaces.__mro__[1] is DefaultTrainer
    assert pta.trainer.TrainerWithTimmScheduler.__mro__[1] is DefaultTrainer  # its scheduler_step replaces


def test_a_wrapper_that_delegates_counts_as_calling_super() -> None:
    original = DefaultTrainer.scale_loss

    @functools.wraps(original)
    def logged(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs)

    type("Logged", (DefaultTrainer,), {"scale_loss": logged})


# ------------------------------------------------------------------------ item 3: misspelled hooks
@pytest.mark.parametrize(("typo", "hook"), [
    ("calculate_train_batch_los", "calculate_train_batch_loss"),  # deletion
    ("trian_epoch_start", "train_epoch_start"),  # swapped neighbours
    ("optimizer_steps", "optimizer_step"),  # insertion
    ("scale_lass", "scale_loss"),  # substitution
    ("evalute", "evaluate"),
])
def test_a_method_one_edit_from_a_hook_fails_at_class_creation(typo: str, hook: str) -> None:
    def method(self: Any) -> None:
        pass

    with pytest.raises(pta.HookNameError, match=rf"Typo\.{typo}\(\) is not a hook, but {hook}\(\) is"):
        type("Typo", (DefaultTrainer,), {typo: method})


def test_unrelated_names_and_marked_overrides_are_not_typos() -> None:
    def method(self: Any) -> None:
        pass

    type("Helpers", (DefaultTrainer,), {"log_samples": method, "scheduler_metric": method, "_optimizer_steps": method})
    # @override says "this is meant to override": mypy and pyright then report a missing base method
    marked = override(method)
    type("Marked", (DefaultTrainer,), {"optimizer_steps": marked})


# ------------------------------------------------------------- item 1 at run time (untyped code)
def _scheduler(trainer: DefaultTrainer[Any]) -> object:
    return trainer.scheduler  # (a function, so that the checker does not narrow it across train() calls)


def test_scheduler_exists_only_with_scheduler_mixin() -> None:
    model = linear_model()
    plain: Any = type("Plain", (DevicePlacementMixin, TrainerBase), {})(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    with pytest.raises(AttributeError, match="has no scheduler: add SchedulerMixin"):
        plain.scheduler  # noqa: B018
    assert not hasattr(plain, "scheduler")
    trainer = DefaultTrainer(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    assert _scheduler(trainer) is None  # pytorch-accelerated's value before train()
    trainer.train(regression_data(8), 1, per_device_batch_size=4,
                  create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    assert isinstance(_scheduler(trainer), torch.optim.lr_scheduler.StepLR)
    trainer.evaluate(regression_data(4))
    assert isinstance(_scheduler(trainer), torch.optim.lr_scheduler.StepLR)  # evaluate() keeps the run's scheduler
    trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert _scheduler(trainer) is None


def test_untyped_capability_arguments_fail_before_any_work() -> None:
    model = linear_model()
    plain: Any = type("Plain", (DevicePlacementMixin, TrainerBase), {})
    with pytest.raises(pta.ConfigurationError, match="mixed_precision needs AMPMixin"):
        plain(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()], mixed_precision="bf16")
    trainer = plain(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    with pytest.raises(pta.ConfigurationError, match="gradient_accumulation_steps other than 1 needs GradAccumMixin"):
        trainer.train(regression_data(8), 1, gradient_accumulation_steps=3)
    with pytest.raises(pta.ConfigurationError, match="create_scheduler_fn needs SchedulerMixin"):
        trainer.train(regression_data(8), 1, create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))


# ----------------------------------------------------------------------- item 5 at run time
def test_a_dataloader_or_a_tensor_is_not_a_dataset() -> None:
    model = linear_model()
    trainer: Any = DefaultTrainer(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    data = regression_data(8)
    with pytest.raises(pta.ConfigurationError, match="train_dataset must be a dataset, got a DataLoader"):
        trainer.train(DataLoader(data), 1)
    with pytest.raises(pta.ConfigurationError, match="eval_dataset must be a dataset, got a tensor: wrap it"):
        trainer.train(data, 1, eval_dataset=torch.zeros(4, 2))
    with pytest.raises(pta.ConfigurationError, match="dataset must be a dataset, got a DataLoader"):
        trainer.evaluate(DataLoader(data))


def test_a_sized_indexable_object_is_a_dataset() -> None:
    class Rows:  # the shape of a Hugging Face datasets.Dataset
        def __init__(self) -> None:
            self.data = regression_data(8)

        def __getitem__(self, index: int) -> tuple[Tensor, ...]:
            return tuple(self.data[index])

        def __len__(self) -> int:
            return len(self.data)

    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    trainer.train(Rows(), 1, eval_dataset=Rows(), per_device_batch_size=4)
    assert trainer.run_history.get_metric_names() >= {"train_loss_epoch", "eval_loss_epoch"}


# ------------------------------------------------------------------------------------- item 8
PTA = Path(pta.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return found | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_trainer_and_timm_trainer_do_not_import_each_other() -> None:
    assert "pta.trainer" not in _imported_modules(PTA / "timm_trainer.py")
    assert "pta.timm_trainer" in _imported_modules(PTA / "trainer.py")
    assert pta.trainer.DefaultTrainer is pta.default_trainer.DefaultTrainer


@pytest.mark.parametrize("path", sorted((PTA / "callbacks").glob("*.py")), ids=lambda p: p.name)
def test_callbacks_use_no_private_trainer_attributes(path: Path) -> None:
    private = {"_train_dataloader", "_eval_dataloader", "_run_eval_epoch", "_num_updates", "_accelerator"}
    used = {node.attr for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)}
    assert used & private == set()


def test_callbacks_can_replace_dataloaders_and_run_an_evaluation_epoch() -> None:
    seen: list[int] = []

    class Halve(TrainerCallback):
        @override
        def on_training_run_start(self, trainer: Any, **kwargs: Any) -> None:
            loader = trainer.train_dataloader
            trainer.train_dataloader = [batch for i, batch in enumerate(loader) if i % 2 == 0]

        @override
        def on_train_step_end(self, trainer: Any, **kwargs: Any) -> None:
            seen.append(kwargs["step"])

        @override
        def on_training_run_end(self, trainer: Any, **kwargs: Any) -> None:
            trainer.run_evaluation_epoch("extra_eval_loss")

    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), _sgd(model), callbacks=[Halve()])
    trainer.train(regression_data(16), 1, eval_dataset=regression_data(4), per_device_batch_size=4)
    assert seen == [0, 1]
    assert "extra_eval_loss" in trainer.run_history.get_metric_names()


def test_accelerate_options_are_accelerates_own_classes() -> None:
    import accelerate.utils  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information

    import pta.accelerate_options as options

    for name in options.__all__:
        assert getattr(options, name) is getattr(accelerate.utils, name)

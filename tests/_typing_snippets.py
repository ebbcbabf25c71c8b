"""User-code snippets for tests/test_typing.py: correct code (``ok_*``) and one-mistake code (``bad_*``).

A line where a checker must report an error carries a marker comment: ``E: [code] text`` for mypy and
``P: [rule,rule] text`` for pyright (``text``: a substring of one message on that line). A line that
one checker cannot flag carries only the other's marker, and the snippet says why.
"""

from __future__ import annotations

PRELUDE = """\
from __future__ import annotations

import functools
from typing import Any, assert_type

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from typing_extensions import override

from pta import (
    AMPMixin, BatchOutput, DefaultTrainer, DevicePlacementMixin, DistributedEvalMixin, GradAccumMixin,
    SchedulerMixin, TrainerBase, TrainerCallback,
)
from pta.protocols import TrainerLike
from pta.trainer import TrainerPlaceholderValues

__all__ = [
    "functools", "Any", "assert_type", "torch", "Tensor", "nn", "DataLoader", "IterableDataset", "TensorDataset",
    "override", "AMPMixin", "BatchOutput", "DefaultTrainer", "DevicePlacementMixin", "DistributedEvalMixin",
    "GradAccumMixin", "SchedulerMixin", "TrainerBase", "TrainerCallback", "TrainerLike", "TrainerPlaceholderValues",
    "Batch", "make_data", "make_model", "make_sgd", "step_lr",
]

Batch = tuple[Tensor, Tensor]


def make_data() -> TensorDataset:
    return TensorDataset(torch.randn(8, 2), torch.randn(8, 1))


def make_model() -> nn.Module:
    return nn.Linear(2, 1)


def make_sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.1)


def step_lr() -> functools.partial[torch.optim.lr_scheduler.StepLR]:
    return functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)
"""

OK: dict[str, str] = {
    "ok_typed_trainer": """
        class MyOutput(BatchOutput):
            logits: Tensor


        class RegressionTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                assert_type(batch, tuple[Tensor, Tensor])
                xb, yb = batch
                logits = self.model(xb)
                out: MyOutput = {"loss": nn.functional.mse_loss(logits, yb), "logits": logits, "batch_size": xb.shape[0]}
                return out

            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> BatchOutput:
                xb, yb = batch
                return {"loss": nn.functional.mse_loss(self.model(xb), yb)}

            @override
            def train_epoch_start(self) -> None:
                super().train_epoch_start()


        def main() -> None:
            model = make_model()
            trainer = RegressionTrainer(model, nn.MSELoss(), make_sgd(model), mixed_precision="bf16", seed=0)
            trainer.train(make_data(), num_epochs=1, eval_dataset=make_data(), per_device_batch_size=4)
            trainer.evaluate(make_data())
    """,
    "ok_custom_composition": """
        class MyTrainer(GradAccumMixin, DevicePlacementMixin, TrainerBase):
            pass


        class MyTypedTrainer(GradAccumMixin[Batch], SchedulerMixin[Batch], DevicePlacementMixin[Batch], TrainerBase[Batch]):
            @override
            def configure_run(self) -> None:
                super().configure_run()

            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"loss": nn.functional.mse_loss(self.model(batch[0]), batch[1]), "batch_size": 8}


        class OnlyScheduler(SchedulerMixin, TrainerBase):
            pass


        def main() -> None:
            model = make_model()
            MyTrainer(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, gradient_accumulation_steps=2)
            MyTypedTrainer(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, None, 8, None, 4, None, step_lr())
            MyTypedTrainer(model, nn.MSELoss(), None).evaluate(make_data())
            OnlyScheduler(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, create_scheduler_fn=step_lr())
            TrainerBase(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, gradient_accumulation_steps=1)
    """,
    "ok_amp_brings_device_placement": """
        class BF16Trainer(AMPMixin, TrainerBase):  # AMPMixin subclasses DevicePlacementMixin
            pass


        class EvalTrainer(DistributedEvalMixin, AMPMixin, TrainerBase):
            pass


        def main() -> None:
            model = make_model()
            trainer = BF16Trainer(model, nn.MSELoss(), make_sgd(model), mixed_precision="bf16")
            assert_type(trainer.device, torch.device)
            EvalTrainer(model, nn.MSELoss(), None, mixed_precision="no").evaluate(make_data())
    """,
    "ok_callbacks": """
        class StepCounter(TrainerCallback):
            def __init__(self) -> None:
                self.steps = 0

            @override
            def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
                self.steps += 1


        class LossPrinter(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
                trainer.print(float(batch_output["loss"]))

            @override
            def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
                trainer.print(trainer.run_history.get_latest_metric("eval_loss_epoch"))


        def main() -> None:
            model = make_model()
            DefaultTrainer(model, nn.MSELoss(), make_sgd(model), callbacks=[StepCounter, LossPrinter()])
    """,
    "ok_scheduler_factory": """
        def main() -> None:
            model = make_model()
            trainer = DefaultTrainer(model, nn.MSELoss(), make_sgd(model))
            one_cycle = functools.partial(
                torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            )
            trainer.train(make_data(), 1, create_scheduler_fn=one_cycle)
            step = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=TrainerPlaceholderValues.NUM_EPOCHS * 2)
            trainer.train(make_data(), 2, create_scheduler_fn=step)
    """,
    "ok_scheduler_keeps_its_type": """
        class LoggingTrainer(DefaultTrainer[Batch]):
            @override
            def train_epoch_end(self) -> None:
                super().train_epoch_end()
                self.print(self.scheduler.get_last_lr())


        class OneCycleTrainer(DefaultTrainer[Batch, torch.optim.lr_scheduler.OneCycleLR]):
            @override
            def train_epoch_end(self) -> None:
                super().train_epoch_end()
                lrs = self.scheduler.get_last_lr()
                self.print(lrs, self.scheduler.total_steps)
    """,
    "ok_num_items_in_batch_tensor": """
        class TokenTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                xb, yb = batch
                mask = yb > 0
                loss = nn.functional.mse_loss(self.model(xb), yb)
                return {"loss": loss, "num_items_in_batch": mask.sum()}  # a tensor: no .item() sync
    """,
    "ok_datasets": """
        class Rows:  # like a Hugging Face datasets.Dataset: __getitem__ and __len__
            def __getitem__(self, index: int) -> dict[str, Tensor]:
                return {"x": torch.zeros(2), "y": torch.zeros(1)}

            def __len__(self) -> int:
                return 8


        class Stream(IterableDataset[Batch]):
            @override
            def __iter__(self) -> Any:
                return iter([(torch.zeros(2), torch.zeros(1))])


        def main() -> None:
            model = make_model()
            trainer = DefaultTrainer(model, nn.MSELoss(), make_sgd(model))
            trainer.train(make_data(), 1, eval_dataset=Rows())
            trainer.train(Stream(), None, max_num_train_steps=3)
            trainer.evaluate(Rows())
            trainer.predict(make_data())
    """,
    "ok_hook_override_reaching_super": """
        class HalfLoss(DefaultTrainer[Batch]):
            @override
            def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
                return super().scale_loss(loss, batch_output, batch_size) * 0.5
    """,
    "ok_accelerate_options_through_pta": """
        from pta.accelerate_options import (
            DataLoaderConfiguration, DistributedDataParallelKwargs, FullyShardedDataParallelPlugin, GradScalerKwargs,
        )


        def main() -> None:
            DefaultTrainer(make_model(), nn.MSELoss(), None, accelerator_options={
                "dataloader_config": DataLoaderConfiguration(even_batches=False),
                "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True), GradScalerKwargs()],
                "fsdp_plugin": FullyShardedDataParallelPlugin(fsdp_version=2),
            })
    """,
    "ok_pytorch_accelerated_style_callback": """
        class PaStyle(TrainerCallback):
            @override
            def on_eval_step_end(self, trainer: TrainerLike, batch: Any, batch_output: BatchOutput, **kwargs: Any) -> None:
                trainer.print(batch_output["loss"])
    """,
}

_TRAINER = """
        def trainer() -> DefaultTrainer[Batch]:
            model = make_model()
            return DefaultTrainer(model, nn.MSELoss(), make_sgd(model))
"""

BAD: dict[str, str] = {
    # ------------------------------------------------------------------ item 1: mis-composition
    "bad_provider_listed_before_amp": """
        class T(DevicePlacementMixin, AMPMixin, TrainerBase):  # E: [misc] consistent method resolution order  P: [reportGeneralTypeIssues] consistent method ordering
            pass
    """,
    "bad_provider_listed_before_distributed_eval": """
        class T(DevicePlacementMixin, DistributedEvalMixin, TrainerBase):  # E: [misc] consistent method resolution order  P: [reportGeneralTypeIssues] consistent method ordering
            pass
    """,
    "bad_mixed_precision_without_amp": """
        class T(GradAccumMixin, DevicePlacementMixin, TrainerBase):
            pass


        def main() -> None:
            model = make_model()
            T(model, nn.MSELoss(), make_sgd(model), mixed_precision="bf16")  # E: [arg-type] NeedsAMPMixin  P: [reportArgumentType] NeedsAMPMixin
    """,
    "bad_mixed_precision_on_trainer_base": """
        def main() -> None:
            model = make_model()
            TrainerBase(model, nn.MSELoss(), make_sgd(model), mixed_precision="fp16")  # E: [arg-type] NeedsAMPMixin  P: [reportArgumentType] NeedsAMPMixin
    """,
    "bad_mixed_precision_with_device_placement_only": """
        class T(DistributedEvalMixin, TrainerBase):
            pass


        def main() -> None:
            T(make_model(), None, None, mixed_precision="no")  # E: [arg-type] NeedsAMPMixin  P: [reportArgumentType] NeedsAMPMixin
    """,
    "bad_accumulation_without_grad_accum": """
        class T(SchedulerMixin, DevicePlacementMixin, TrainerBase):
            pass


        def main() -> None:
            model = make_model()
            T(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, gradient_accumulation_steps=4)  # E: [call-overload] No overload variant of "train"  P: [reportCallIssue,reportArgumentType] NeedsGradAccumMixin
    """,
    "bad_accumulation_positional_without_grad_accum": """
        def main() -> None:
            model = make_model()
            TrainerBase(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, None, 8, None, 2)  # E: [arg-type] NeedsGradAccumMixin  P: [reportArgumentType] NeedsGradAccumMixin
    """,
    "bad_accumulation_from_a_variable_without_grad_accum": """
        class T(DevicePlacementMixin, TrainerBase):
            pass


        def main(steps: int) -> None:
            model = make_model()
            T(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, gradient_accumulation_steps=steps)  # E: [arg-type] NeedsGradAccumMixin  P: [reportArgumentType] NeedsGradAccumMixin
    """,
    "bad_scheduler_fn_without_scheduler_mixin": """
        class T(GradAccumMixin, DevicePlacementMixin, TrainerBase):
            pass


        def main() -> None:
            model = make_model()
            T(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, create_scheduler_fn=step_lr())  # E: [call-overload] No overload variant of "train"  P: [reportCallIssue,reportArgumentType] NeedsSchedulerMixin
    """,
    "bad_scheduler_fn_on_trainer_base": """
        def main() -> None:
            model = make_model()
            TrainerBase(model, nn.MSELoss(), make_sgd(model)).train(make_data(), 1, create_scheduler_fn=step_lr())  # E: [arg-type] NeedsSchedulerMixin  P: [reportArgumentType] NeedsSchedulerMixin
    """,
    "bad_scheduler_attribute_without_scheduler_mixin": """
        class T(GradAccumMixin, DevicePlacementMixin, TrainerBase):
            @override
            def train_epoch_end(self) -> None:
                super().train_epoch_end()
                self.print(self.scheduler)  # E: [attr-defined] scheduler  P: [reportAttributeAccessIssue,reportUnknownMemberType] scheduler
    """,
    "bad_scheduler_attribute_from_outside": """
        def main() -> None:
            model = make_model()
            trainer = TrainerBase(model, nn.MSELoss(), make_sgd(model))
            trainer.scheduler.step()  # E: [attr-defined] scheduler  P: [reportAttributeAccessIssue,reportUnknownMemberType] scheduler
    """,
    "bad_scheduler_method_of_its_own_type": """
        class T(DefaultTrainer[Batch, torch.optim.lr_scheduler.StepLR]):
            @override
            def train_epoch_end(self) -> None:
                super().train_epoch_end()
                self.scheduler.get_last_lrs()  # E: [attr-defined] get_last_lrs  P: [reportAttributeAccessIssue,reportUnknownMemberType] get_last_lrs
    """,
    # ------------------------------------------------------------------ hooks
    "bad_misspelled_hook": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_los(self, batch: Batch) -> BatchOutput:  # E: [misc] no base method was found  P: [reportGeneralTypeIssues] no base method
                return {"loss": batch[0].sum()}
    """,
    "bad_missing_override_decorator": """
        class MyTrainer(DefaultTrainer[Batch]):
            def train_epoch_start(self) -> None:  # E: [explicit-override] not using @override
                super().train_epoch_start()
        # pyright strict leaves reportImplicitOverride off; pta's class-creation check covers typos instead
    """,
    "bad_hook_extra_argument": """
        class ExtraArg(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch, extra: int) -> BatchOutput:  # E: [override] calculate_train_batch_loss  P: [reportIncompatibleMethodOverride] calculate_train_batch_loss
                return {"loss": batch[0].sum()}
    """,
    "bad_hook_batch_type": """
        class WrongBatchType(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: str) -> BatchOutput:  # E: [override] tuple[Tensor, Tensor]  P: [reportIncompatibleMethodOverride] calculate_train_batch_loss
                return {"loss": torch.zeros(())}
    """,
    "bad_hook_return_type": """
        class WrongReturn(DefaultTrainer[Batch]):
            @override
            def calculate_eval_batch_loss(self, batch: Batch) -> Tensor:  # E: [override] Return type  P: [reportIncompatibleMethodOverride] calculate_eval_batch_loss
                return batch[0]
    """,
    "bad_scale_loss_returns_float": """
        class T(DefaultTrainer[Batch]):
            @override
            def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> float:  # E: [override] Return type  P: [reportIncompatibleMethodOverride] scale_loss
                return float(super().scale_loss(loss, batch_output, batch_size))
    """,
    "bad_is_update_step_signature": """
        class T(DefaultTrainer[Batch]):
            @override
            def is_update_step(self, step: int) -> bool:  # E: [override] is_update_step  P: [reportIncompatibleMethodOverride] is_update_step
                return True
    """,
    "bad_batch_output_without_loss": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"batch_size": 3, "model_outputs": batch[0]}  # E: [typeddict-item] Missing key "loss"  P: [reportReturnType] BatchOutput
    """,
    "bad_batch_output_loss_not_a_tensor": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"loss": 0.5}  # E: [typeddict-item] loss  P: [reportReturnType] BatchOutput
    """,
    "bad_num_items_in_batch_string": """
        class MyTrainer(DefaultTrainer[Batch]):
            @override
            def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
                return {"loss": batch[0].sum(), "num_items_in_batch": "3"}  # E: [typeddict-item] num_items_in_batch  P: [reportReturnType] BatchOutput
    """,
    # ------------------------------------------------------------------ train()/evaluate() arguments
    "bad_scheduler_instance": """
        def main() -> None:
            model = make_model()
            optimizer = make_sgd(model)
            trainer = DefaultTrainer(model, nn.MSELoss(), optimizer)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
            trainer.train(make_data(), 1, create_scheduler_fn=scheduler)  # E: [call-overload] StepLR  P: [reportCallIssue,reportArgumentType] create_scheduler_fn
    """,
    "bad_mixed_precision_value": """
        def main() -> None:
            DefaultTrainer(make_model(), nn.MSELoss(), None, mixed_precision="fp32")  # E: [arg-type] mixed_precision  P: [reportArgumentType] mixed_precision
    """,
    "bad_train_without_num_epochs": _TRAINER + """
        def main() -> None:
            trainer().train(make_data())  # E: [call-overload] train  P: [reportCallIssue] No overloads for "train"
    """,
    "bad_batch_size_string": _TRAINER + """
        def main() -> None:
            trainer().train(make_data(), 1, per_device_batch_size="8")  # E: [call-overload] train  P: [reportCallIssue,reportArgumentType] per_device_batch_size
    """,
    "bad_clip_value_string": _TRAINER + """
        def main() -> None:
            trainer().train(make_data(), 1, gradient_clip_value="1.0")  # E: [call-overload] train  P: [reportCallIssue,reportArgumentType] gradient_clip_value
    """,
    "bad_evaluate_unknown_keyword": _TRAINER + """
        def main() -> None:
            trainer().evaluate(make_data(), batch_size=4)  # E: [call-arg] batch_size  P: [reportCallIssue] batch_size
    """,
    "bad_get_model_argument": _TRAINER + """
        def main() -> None:
            trainer().get_model(keep_torch_compile="no")  # E: [arg-type] keep_torch_compile  P: [reportArgumentType] keep_torch_compile
    """,
    "bad_gather_argument": _TRAINER + """
        def main() -> None:
            trainer().gather([1, 2])  # E: [arg-type] gather  P: [reportArgumentType] tensor
    """,
    "bad_run_config_is_frozen": _TRAINER + """
        def main() -> None:
            trainer().run_config.num_epochs = 3  # E: [misc] read-only  P: [reportAttributeAccessIssue] num_epochs
    """,
    "bad_optimizer_is_a_model": """
        def main() -> None:
            model = make_model()
            DefaultTrainer(model, nn.MSELoss(), model)  # E: [arg-type] Optimizer | None  P: [reportArgumentType] optimizer
    """,
    "bad_loss_func_is_a_number": """
        def main() -> None:
            DefaultTrainer(make_model(), 3, None)  # E: [arg-type] Callable[..., Tensor]  P: [reportArgumentType] loss_func
    """,
    "bad_accelerator_option_misspelled": """
        def main() -> None:
            DefaultTrainer(make_model(), None, None, accelerator_options={"cpuu": True})  # E: [arg-type] AcceleratorKwargs  P: [reportArgumentType] AcceleratorKwargs
    """,
    "bad_accelerator_option_type": """
        def main() -> None:
            DefaultTrainer(make_model(), None, None, accelerator_options={"cpu": "yes"})  # E: [arg-type] AcceleratorKwargs  P: [reportArgumentType] AcceleratorKwargs
    """,
    "bad_accelerate_option_keyword": """
        from pta.accelerate_options import DataLoaderConfiguration


        def main() -> None:
            DataLoaderConfiguration(even_batch=False)  # E: [call-arg] even_batch  P: [reportCallIssue] even_batch
    """,
    # ------------------------------------------------------------------ item 5: data arguments
    "bad_dataloader_as_train_dataset": _TRAINER + """
        def main() -> None:
            trainer().train(DataLoader(make_data(), batch_size=4), 1)  # E: [call-overload] DataLoader  P: [reportCallIssue,reportArgumentType] DataLoader
    """,
    "bad_dataloader_as_eval_dataset": _TRAINER + """
        def main() -> None:
            trainer().train(make_data(), 1, eval_dataset=DataLoader(make_data()))  # E: [call-overload] DataLoader  P: [reportCallIssue,reportArgumentType] DataLoader
    """,
    "bad_dataloader_in_evaluate": _TRAINER + """
        def main() -> None:
            trainer().evaluate(DataLoader(make_data()))  # E: [arg-type] DataLoader  P: [reportArgumentType] DataLoader
    """,
    "bad_dataloader_in_predict": _TRAINER + """
        def main() -> None:
            trainer().predict(DataLoader(make_data()))  # E: [arg-type] DataLoader  P: [reportArgumentType] DataLoader
    """,
    "bad_number_as_dataset": _TRAINER + """
        def main() -> None:
            trainer().train(100, 1)  # E: [call-overload] train  P: [reportCallIssue,reportArgumentType] DatasetLike
    """,
    "bad_callback_class_needing_arguments": """
        class Threshold(TrainerCallback):
            def __init__(self, limit: float) -> None:
                self.limit = limit


        def main() -> None:
            DefaultTrainer(make_model(), None, None, callbacks=[Threshold])  # E: [list-item] Threshold  P: [reportArgumentType] Threshold
    """,
    "bad_callback_that_is_not_a_callback": """
        class NotACallback:
            pass


        def main() -> None:
            DefaultTrainer(make_model(), None, None, callbacks=[NotACallback()])  # E: [list-item] NotACallback  P: [reportArgumentType] NotACallback
    """,
    "bad_single_callback_not_in_a_list": """
        def main() -> None:
            DefaultTrainer(make_model(), None, None, callbacks=TrainerCallback())  # E: [arg-type] callbacks  P: [reportArgumentType] callbacks
    """,
    # ------------------------------------------------------------------ callbacks
    # pyright checks the two data-keyword events (on_train_step_end, on_eval_step_end) against a
    # declaration with *args, so that pytorch-accelerated's positional style type-checks (see
    # TrainerCallback): it then reports neither of the next two mistakes; mypy does, and so does pyright on
    # every other event (bad_callback_trainer_type).
    "bad_callback_without_kwargs": """
        class PositionalNoKwargs(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, batch_output: BatchOutput) -> None:  # E: [override] on_train_step_end
                pass
    """,
    "bad_callback_keyword_type": """
        class WrongKeywordType(TrainerCallback):
            @override
            def on_train_step_end(self, trainer: TrainerLike, *, batch_output: int, **kwargs: Any) -> None:  # E: [override] on_train_step_end
                pass
    """,
    "bad_callback_trainer_type": """
        class WrongTrainerType(TrainerCallback):
            @override
            def on_eval_epoch_end(self, trainer: int, **kwargs: Any) -> None:  # E: [override] on_eval_epoch_end  P: [reportIncompatibleMethodOverride] on_eval_epoch_end
                pass
    """,
    "bad_callback_reads_private_trainer_state": """
        class Peeker(TrainerCallback):
            @override
            def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
                trainer.print(trainer._train_dataloader)  # E: [attr-defined] _train_dataloader  P: [reportAttributeAccessIssue,reportUnknownMemberType] _train_dataloader
    """,
    "bad_not_strict_enough": """
        def untyped_helper(x):  # E: [no-untyped-def] missing a type annotation  P: [reportUnknownParameterType,reportMissingParameterType] x
            return x  # P: [reportUnknownVariableType] Return type
    """,
}

SNIPPETS: dict[str, str] = {**OK, **BAD}

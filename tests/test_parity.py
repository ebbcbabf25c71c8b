"""pta against pytorch-accelerated (pa): same results on the same task, and the same API surface.

pa is installed by the ``dev`` extra; nothing is installed at test time. pa seeds every RNG when it is
imported (``set_seed(42)``) and again at the start of every run; the RNG states are restored around
its import so that this module does not change the RNG of the tests collected after it, and the
parity runs use ``shuffle=False`` and models without randomness, so pa's reseeding changes nothing.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import random
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from typing_extensions import override

import pta
import pta.trainer
from pta import DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.callbacks import get_default_callbacks
from pta.callbacks.base import EVENTS
from pta.tracking import RunHistory
from tests._helpers import max_abs_diff, mlp, params_of, regression_data


@contextmanager
def _rng_preserved() -> Generator[None, None, None]:
    """Restore torch's, Python's and NumPy's global RNG states (NumPy comes with Accelerate)."""
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


with _rng_preserved():
    pytest.importorskip("pytorch_accelerated")
    import pytorch_accelerated.callbacks as pa_callbacks
    import pytorch_accelerated.run_config as pa_run_config
    import pytorch_accelerated.tracking as pa_tracking
    import pytorch_accelerated.trainer as pa_trainer
    from pytorch_accelerated.trainer import Trainer as PaTrainer

PTA_NO_CALLBACKS: tuple[type[TrainerCallback], ...] = ()  # as pa's callbacks=(): a quiet console
# pa's default dataloaders start one worker per CPU core and shuffle; both runs read the data in order
# in the main process.
TRAIN_DL: dict[str, Any] = {"shuffle": False, "num_workers": 0}
EVAL_DL: dict[str, Any] = {"num_workers": 0}
ATOL = 1e-6


# ====================================================================================== same results
def _data() -> tuple[TensorDataset, TensorDataset]:
    return regression_data(n=64, seed=0), regression_data(n=24, seed=1)


def _model_pair() -> tuple[nn.Module, nn.Module]:
    """Two models with identical weights (the second loads the first's state_dict)."""
    first, second = mlp(seed=0), mlp(seed=1)
    second.load_state_dict(first.state_dict())
    return first, second


def _run_pair(
    train_kwargs: Callable[[Any], dict[str, Any]],
    *,
    lr: float = 0.05,
    pa_class: Any = None,
    pta_class: type[DefaultTrainer] = DefaultTrainer,
) -> tuple[Any, DefaultTrainer]:
    """Train a pa trainer and a pta trainer on the same data from the same weights.

    ``train_kwargs`` receives the library's ``TrainerPlaceholderValues`` and returns ``train()``'s keywords.
    """
    pa_model, pta_model = _model_pair()
    train_set, eval_set = _data()
    pa_run = (pa_class or pa_trainer.Trainer)(
        pa_model, nn.MSELoss(), torch.optim.SGD(pa_model.parameters(), lr=lr), callbacks=()
    )
    pa_run.train(train_set, **_with_defaults(eval_set, train_kwargs(pa_trainer.TrainerPlaceholderValues)))
    reset_accelerate_state()
    pta_run = pta_class(pta_model, nn.MSELoss(), torch.optim.SGD(pta_model.parameters(), lr=lr),
                        callbacks=PTA_NO_CALLBACKS)
    pta_run.train(train_set, **_with_defaults(eval_set, train_kwargs(pta.TrainerPlaceholderValues)))
    return pa_run, pta_run


def _with_defaults(eval_set: TensorDataset, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"eval_dataset": eval_set, "per_device_batch_size": 8, "train_dataloader_kwargs": TRAIN_DL,
            "eval_dataloader_kwargs": EVAL_DL, **kwargs}


def _history(trainer: Any, metric: str) -> list[float]:
    return [float(v) for v in trainer.run_history.get_metric_values(metric)]


def _assert_same_run(pa_run: Any, pta_run: DefaultTrainer, *, train_loss_factor: float = 1.0) -> None:
    assert max_abs_diff(params_of(pa_run.get_model()), params_of(pta_run.get_model())) <= ATOL
    pa_train = [v * train_loss_factor for v in _history(pa_run, "train_loss_epoch")]
    assert _history(pta_run, "train_loss_epoch") == pytest.approx(pa_train, rel=1e-6, abs=1e-7)
    assert _history(pta_run, "eval_loss_epoch") == pytest.approx(_history(pa_run, "eval_loss_epoch"), rel=1e-6, abs=1e-7)


def test_same_weights_and_loss_histories() -> None:
    pa_run, pta_run = _run_pair(lambda _: {"num_epochs": 4})
    assert len(_history(pta_run, "train_loss_epoch")) == len(_history(pta_run, "eval_loss_epoch")) == 4
    _assert_same_run(pa_run, pta_run)


def test_same_with_placeholder_scheduler_clipping_and_max_steps() -> None:
    """OneCycleLR from placeholders, clipping by value, and a stop after 12 of 8-per-epoch updates."""

    def kwargs(placeholders: Any) -> dict[str, Any]:
        factory = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1,
                                    epochs=placeholders.NUM_EPOCHS,
                                    steps_per_epoch=placeholders.NUM_UPDATE_STEPS_PER_EPOCH)
        return {"num_epochs": 3, "max_num_train_steps": 12, "gradient_clip_value": 0.05,
                "create_scheduler_fn": factory}

    pa_run, pta_run = _run_pair(kwargs)
    assert pta_run.run_config.num_epochs == pa_run.run_config.num_epochs == 2
    assert len(_history(pta_run, "train_loss_epoch")) == 2
    assert pta_run.scheduler is not None and pa_run.scheduler is not None
    assert pta_run.scheduler.state_dict()["last_epoch"] == pa_run.scheduler.state_dict()["last_epoch"] == 12
    _assert_same_run(pa_run, pta_run)


def test_same_update_under_accumulation_with_the_true_loss_recorded() -> None:
    """Full windows of equal batches: the same weights; pa records the loss divided by the window
    (a deliberate difference, docs/migration.md), pta the true mean."""
    pa_run, pta_run = _run_pair(lambda _: {"num_epochs": 2, "gradient_accumulation_steps": 2})
    _assert_same_run(pa_run, pta_run, train_loss_factor=2.0)


def test_same_evaluation_loss() -> None:
    pa_model, pta_model = _model_pair()
    _, eval_set = _data()
    pa_run = pa_trainer.Trainer(pa_model, nn.MSELoss(), None, callbacks=())
    pa_run.evaluate(eval_set, per_device_batch_size=5, dataloader_kwargs=EVAL_DL)
    reset_accelerate_state()
    pta_run: DefaultTrainer = DefaultTrainer(pta_model, nn.MSELoss(), None, callbacks=PTA_NO_CALLBACKS)
    pta_run.evaluate(eval_set, per_device_batch_size=5, dataloader_kwargs=EVAL_DL)
    assert _history(pta_run, "evaluation_loss") == pytest.approx(_history(pa_run, "evaluation_loss"), rel=1e-6)


def test_continued_run_steps_a_placeholder_scheduler_to_its_end() -> None:
    """pa's fine-tuning example (pets_finetune.py): train a frozen model, then call train() again with
    reset_run_history=False and a OneCycleLR sized by NUM_EPOCHS x NUM_UPDATE_STEPS_PER_EPOCH. The second
    run must step that scheduler exactly to its end. (pa itself gets this wrong the other way: its step
    counter mixes the history's epochs with the run's, and stops the second run early.)"""
    model = mlp()
    train_set, _ = _data()
    trainer: DefaultTrainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                                             callbacks=PTA_NO_CALLBACKS)
    P = pta.TrainerPlaceholderValues
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, epochs=P.NUM_EPOCHS,
                                  steps_per_epoch=P.NUM_UPDATE_STEPS_PER_EPOCH)
    trainer.train(train_set, num_epochs=2, per_device_batch_size=8, train_dataloader_kwargs=TRAIN_DL)
    trainer.train(train_set, num_epochs=3, per_device_batch_size=8, train_dataloader_kwargs=TRAIN_DL,
                  create_scheduler_fn=one_cycle, reset_run_history=False)
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert trainer.scheduler.last_epoch == trainer.scheduler.total_steps == 3 * 8
    assert len(_history(trainer, "train_loss_epoch")) == 2 + 3


def test_overriding_train_dataloader_defaults_leaves_evaluation_alone() -> None:
    class PaDropLast(PaTrainer):  # type: ignore[misc]  # pa is untyped (Any)
        @override
        def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
            return {**super().get_default_train_dl_kwargs(batch_size), "drop_last": True}

    class PtaDropLast(DefaultTrainer):
        @override
        def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
            return {**super().get_default_train_dl_kwargs(batch_size), "drop_last": True}

    # 24 eval samples in batches of 16: dropping the last batch would leave 16.
    pa_run, pta_run = _run_pair(lambda _: {"num_epochs": 1, "eval_dataloader_kwargs": {"num_workers": 0,
                                                                                       "batch_size": 16}},
                                pa_class=PaDropLast, pta_class=PtaDropLast)
    assert pta_run.run_config.eval_dl_kwargs is not None
    assert not pta_run.run_config.eval_dl_kwargs.get("drop_last", False)
    _assert_same_run(pa_run, pta_run)


@pytest.mark.parametrize("operation", ["sub", "rsub", "floordiv", "neg"])
def test_placeholder_arithmetic_is_never_silently_wrong(operation: str) -> None:
    """`-` resolves correctly (pa raises NotImplementedError for it); `//` and unary `-` are refused."""
    expressions: dict[str, Callable[[Any], Any]] = {
        "sub": lambda p: p - 1, "rsub": lambda p: 10 - p, "floordiv": lambda p: p // 2, "neg": lambda p: -p,
    }
    expected = {"sub": 4, "rsub": 5}  # with NUM_EPOCHS = 5
    if operation not in expected:
        with pytest.raises(TypeError, match="placeholders"):
            expressions[operation](pta.TrainerPlaceholderValues.NUM_EPOCHS)
        return
    value = expressions[operation](pta.TrainerPlaceholderValues.NUM_EPOCHS)
    trainer: Any = SimpleNamespace(run_config=SimpleNamespace(num_epochs=5))
    resolved = pta.trainer.replace_trainer_placeholder_values(trainer, functools.partial(dict, value=value))
    assert resolved()["value"] == expected[operation]


def test_a_pytorch_accelerated_style_callback_works_unchanged() -> None:
    """Events are called with pa's keyword names; a callback written against pa's signatures just works."""
    calls: dict[str, int] = {}

    class Counter(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: Any, batch: Any, batch_output: Any, **kwargs: Any) -> None:  # pa's spelling
            assert "loss" in batch_output and isinstance(batch[0], Tensor) and "step" in kwargs
            calls["step"] = calls.get("step", 0) + 1

        @override
        def on_eval_epoch_end(self, trainer: Any, **kwargs: Any) -> None:
            assert kwargs == {"is_intermediate": False}
            calls["eval"] = calls.get("eval", 0) + 1

    model = mlp()
    train_set, eval_set = _data()
    trainer: DefaultTrainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                                             callbacks=[Counter()])
    trainer.train(train_set, num_epochs=2, eval_dataset=eval_set, per_device_batch_size=8)
    assert calls == {"step": 16, "eval": 2}


# ====================================================================================== API surface
MODULES = ("", "trainer", "callbacks", "run_config", "tracking", "finetuning", "utils", "schedulers")
"""pa's modules whose public names pta mirrors under the same path ("" is the package itself)."""

PENDING: dict[str, set[str]] = {}
"""pa names pta does not provide yet (to be added); their tests are expected failures until then."""

PENDING_TRAINER_METHODS: set[str] = set()
"""pa ``Trainer`` methods pta does not provide yet."""


def _pa_module(name: str) -> ModuleType:
    return importlib.import_module(f"pytorch_accelerated.{name}" if name else "pytorch_accelerated")


def pa_public_names(module_name: str) -> list[str]:
    """The names a pa module defines at top level (a package: also what its ``__init__`` re-exports),
    without private names and loggers."""
    module = _pa_module(module_name)
    assert module.__file__ is not None
    path = Path(module.__file__)
    names: list[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, ast.ImportFrom) and path.name == "__init__.py":
            # re-exports: pa's own names, and third-party names imported without renaming (set_seed)
            own = (node.module or "").startswith("pytorch_accelerated")
            names += [alias.asname or alias.name for alias in node.names if own or alias.asname is None]
    return sorted({n for n in names if not n.startswith("_") and n != "logger"})


def _public_name_cases() -> list[Any]:
    cases: list[Any] = []
    for module_name in MODULES:
        for name in pa_public_names(module_name):
            marks = [pytest.mark.xfail(reason=f"not in pta yet: pta.{module_name or '__init__'}.{name}", strict=False)
                     ] if name in PENDING.get(module_name, set()) else []
            cases.append(pytest.param(module_name, name, marks=marks, id=f"{module_name or 'pta'}.{name}"))
    return cases


@pytest.mark.parametrize(("module_name", "name"), _public_name_cases())
def test_public_name_importable_from_the_same_pta_module(module_name: str, name: str) -> None:
    module = importlib.import_module(f"pta.{module_name}" if module_name else "pta")
    assert hasattr(module, name), f"from pytorch_accelerated{'.' + module_name if module_name else ''} import " \
                                  f"{name} has no pta equivalent"


def test_pending_lists_only_real_pa_names() -> None:
    for module_name, names in PENDING.items():
        assert names <= set(pa_public_names(module_name)), module_name


def _positional_names(signature: inspect.Signature) -> list[str]:
    return [p.name for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


def _trainer_method_cases() -> list[Any]:
    names = sorted(name for name, value in vars(pa_trainer.Trainer).items()
                   if not name.startswith("_") and inspect.isfunction(value))
    return [pytest.param(name, marks=[pytest.mark.xfail(reason=f"not in pta yet: Trainer.{name}", strict=False)]
                         if name in PENDING_TRAINER_METHODS else [])
            for name in ["__init__", *names]]


@pytest.mark.parametrize("method", _trainer_method_cases())
def test_trainer_method_accepts_every_pa_parameter(method: str) -> None:
    """Every pa parameter name exists in pta, positional ones at the same position, with the same default
    (``callbacks``: pa's default tuple is pta's ``None``, meaning the class's ``DEFAULT_CALLBACKS``)."""
    assert hasattr(pta.Trainer, method), f"pta.Trainer has no {method}"
    pa_sig = inspect.signature(getattr(pa_trainer.Trainer, method))
    pta_sig = inspect.signature(getattr(pta.Trainer, method))
    pa_positional = _positional_names(pa_sig)
    assert _positional_names(pta_sig)[: len(pa_positional)] == pa_positional
    for name, param in pa_sig.parameters.items():
        assert name in pta_sig.parameters, f"pta.Trainer.{method} lacks parameter {name!r}"
        if param.default is not param.empty and name != "callbacks":
            assert pta_sig.parameters[name].default == param.default, f"{method}({name}=...)"
    # pta's extra parameters are optional, so every pa call stays valid
    extra = [p for n, p in pta_sig.parameters.items() if n not in pa_sig.parameters and p.kind not in (p.VAR_KEYWORD,)]
    assert all(p.default is not p.empty for p in extra), extra


def test_trainer_properties() -> None:
    for name, value in vars(pa_trainer.Trainer).items():
        if isinstance(value, property):
            assert isinstance(inspect.getattr_static(pta.Trainer, name), property), name


def test_callback_events_and_their_arguments_match() -> None:
    pa_events = {name for name in vars(pa_callbacks.TrainerCallback) if name.startswith("on_")}
    assert pa_events == set(EVENTS)
    for event in EVENTS:
        pa_params = set(inspect.signature(getattr(pa_callbacks.TrainerCallback, event)).parameters) - {"self", "kwargs"}
        pta_params = set(inspect.signature(getattr(TrainerCallback, event)).parameters)
        assert pa_params <= pta_params, event


def test_default_callbacks_match() -> None:
    assert [c.__name__ for c in pta.DEFAULT_CALLBACKS] == [c.__name__ for c in pa_trainer.DEFAULT_CALLBACKS]
    for progress_bar in (True, False):
        assert [c.__name__ for c in get_default_callbacks(progress_bar)] == \
               [c.__name__ for c in pa_callbacks.get_default_callbacks(progress_bar)]


def test_run_config_history_and_placeholders_match() -> None:
    pa_fields = set(pa_run_config.TrainerRunConfig.__dataclass_fields__)
    assert pa_fields <= set(pta.TrainerRunConfig.__dataclass_fields__)
    pa_history_api = {n for n in vars(pa_tracking.RunHistory) if not n.startswith("__")}
    assert pa_history_api <= {n for n in dir(RunHistory) if not n.startswith("__")}
    pa_placeholders = [p.name for p in pa_trainer.TrainerPlaceholderValues]
    assert pa_placeholders == [p.name for p in pta.TrainerPlaceholderValues][: len(pa_placeholders)]

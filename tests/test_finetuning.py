"""pta.finetuning.ModelFreezer: layer groups, inclusive index ranges, BatchNorm handling, train/eval modes.

Tests named ``..._pa_...`` pin a behaviour where pytorch-accelerated's ModelFreezer is wrong.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

from pta.finetuning import BN_MODULES, Layer, LayerGroup, ModelFreezer
from tests._helpers import manual_seed


class Net(nn.Module):
    """Three layer groups: ``input``, ``block`` (nested, with BatchNorms) and ``output``."""

    def __init__(self) -> None:
        super().__init__()
        manual_seed(0)
        self.input = nn.Linear(4, 4)
        self.block = nn.Sequential(
            nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU())
        )
        self.output = nn.Linear(4, 2)

    @override
    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.output(self.block(self.input(x)))
        return out


def trainable(module: nn.Module) -> bool:
    return all(p.requires_grad for p in module.parameters())


def frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BN_MODULES)]


def test_layer_groups_and_layers() -> None:
    model = Net()
    freezer = ModelFreezer(model)
    groups = freezer.get_layer_groups()
    assert freezer.num_groups == 3
    assert [g.layer_group_idx for g in groups] == [(0, -3), (1, -2), (2, -1)]
    assert [g.module for g in groups] == [model.input, model.block, model.output]
    assert all(not g.is_frozen for g in groups)
    layers = freezer.get_layers()
    assert all(isinstance(layer, Layer) for layer in layers)
    assert [type(layer.module).__name__ for layer in layers] == \
        ["Linear", "Linear", "BatchNorm1d", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [layer.layer_group_idx[0] for layer in layers] == [0, 1, 1, 1, 1, 1, 2]


def test_creating_a_freezer_unfreezes_everything() -> None:
    model = Net()
    for p in model.parameters():
        p.requires_grad_(False)
    freezer = ModelFreezer(model)
    assert trainable(model)
    assert freezer.get_trainable_parameters() == list(model.parameters())


def test_default_freeze_keeps_the_last_group_and_batch_norms_trainable() -> None:
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze()
    assert frozen(model.input) and trainable(model.output)
    assert all(trainable(bn) for bn in batch_norms(model))
    assert frozen(model.block[0]) and frozen(model.get_submodule("block.2.0"))
    assert [g.is_frozen for g in freezer.get_layer_groups()] == [True, True, False]
    expected = list(model.output.parameters()) + [p for bn in batch_norms(model) for p in bn.parameters()]
    assert {id(p) for p in freezer.get_trainable_parameters()} == {id(p) for p in expected}


def test_freeze_batch_norms_true_freezes_them() -> None:
    model = Net()
    ModelFreezer(model, freeze_batch_norms=True).freeze()
    assert frozen(model.input) and frozen(model.block) and trainable(model.output)


@pytest.mark.parametrize(
    ("from_index", "to_index", "expected_frozen"),
    [
        (1, 1, [False, True, False]),  # both ends inclusive
        (0, 1, [True, True, False]),
        (-2, -1, [False, True, True]),  # negative indices count from the end
        (-3, -3, [True, False, False]),
        (2, 0, [True, True, True]),  # order does not matter
        (-1, 1, [False, True, True]),
        (0, 2, [True, True, True]),
    ],
)
def test_freeze_ranges(from_index: int, to_index: int, expected_frozen: list[bool]) -> None:
    model = Net()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze(from_index=from_index, to_index=to_index)
    assert [frozen(m) for m in (model.input, model.block, model.output)] == expected_frozen
    assert [g.is_frozen for g in freezer.get_layer_groups()] == expected_frozen


@pytest.mark.parametrize(("from_index", "to_index"), [(0, 3), (-4, 0), (0, -4), (5, 1)])
def test_out_of_range_indices_raise_pa_silently_freezes_another_range(from_index: int, to_index: int) -> None:
    freezer = ModelFreezer(Net())
    with pytest.raises(IndexError, match="out of range"):
        freezer.freeze(from_index, to_index)
    with pytest.raises(IndexError, match="out of range"):
        freezer.unfreeze(from_index, to_index)
    assert freezer.get_trainable_parameters() == list(freezer.model.parameters())


def test_default_freeze_of_a_one_group_model_raises_pa_freezes_everything() -> None:
    """pa converts to_index=-2 to -1 for one group, swaps the range and freezes the only (last) group."""
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(IndexError, match="to_index=-2"):
        ModelFreezer(model).freeze()
    assert trainable(model)
    with pytest.raises(TypeError, match="must be an int"):
        ModelFreezer(model).freeze(0, 0.5)  # type: ignore[arg-type]  # a wrong type is rejected at run time too


def test_unfreeze_returns_the_unfrozen_params_per_group_for_the_optimizer() -> None:
    model = Net()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze(0, -1)
    optimizer = torch.optim.SGD(freezer.get_trainable_parameters() or [nn.Parameter(torch.zeros(1))], lr=0.1)
    groups = freezer.unfreeze(-1, -2)
    assert set(groups) == {1, 2}  # non-negative group indices, only groups where something changed
    assert [id(p) for p in groups[2]["params"]] == [id(p) for p in model.output.parameters()]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.block.parameters()}
    for group in groups.values():
        optimizer.add_param_group(group)
    assert len(optimizer.param_groups) == 3
    assert freezer.unfreeze(-1, -2) == {}  # already unfrozen: nothing to add twice
    assert set(freezer.unfreeze()) == {0}
    assert trainable(model)


class TiedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 3, bias=False)
        self.head = nn.Linear(3, 3, bias=False)
        self.head.weight = self.embed.weight


def test_unfreeze_returns_a_shared_parameter_once() -> None:
    model = TiedNet()
    freezer = ModelFreezer(model)
    freezer.freeze(0, 1)
    groups = freezer.unfreeze()
    assert [len(g["params"]) for g in groups.values()] == [1]
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for group in groups.values():
        optimizer.add_param_group(group)  # pa returns it twice: "some parameters appear in more than one group"


def test_set_modules_as_eval_freezes_and_sets_eval_pa_leaves_params_trainable() -> None:
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze(set_modules_as_eval=True)
    assert frozen(model.input) and frozen(model.block[0])  # pa swaps the flags: requires_grad stays True
    assert not model.input.training and not model.get_submodule("block.2.2").training  # ReLU too
    assert all(bn.training and trainable(bn) for bn in batch_norms(model))  # kept BatchNorms untouched
    assert model.output.training
    assert [layer.is_frozen for layer in freezer.get_layers()][5] is True  # ReLU: frozen means eval


def test_freeze_without_eval_leaves_modes_alone() -> None:
    model = Net()
    ModelFreezer(model, freeze_batch_norms=True).freeze()
    assert all(m.training for m in model.modules())


def test_frozen_eval_modules_stay_in_eval_through_model_train() -> None:
    """Trainers call ``model.train()`` every epoch; a frozen BatchNorm must keep its running statistics."""
    model = Net()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze(set_modules_as_eval=True)
    bn = model.block[1]
    assert isinstance(bn, nn.BatchNorm1d)
    assert bn.running_mean is not None
    stats = bn.running_mean.clone()
    model.train()
    model(torch.randn(8, 4))
    assert torch.equal(bn.running_mean, stats)
    assert not bn.training and model.output.training
    freezer.unfreeze(set_modules_as_training=True)
    assert all(m.training for m in model.modules())
    model(torch.randn(8, 4))
    assert not torch.equal(bn.get_buffer("running_mean"), stats)


def test_unfreeze_without_training_mode_unfreezes_and_leaves_modes_pa_keeps_params_frozen() -> None:
    model = Net()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze(0, -1, set_modules_as_eval=True)
    groups = freezer.unfreeze(set_modules_as_training=False)
    assert trainable(model) and set(groups) == {0, 1, 2}
    assert not model.input.training and not model.output.training


def test_freeze_with_eval_on_already_frozen_layers_still_sets_eval() -> None:
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze()
    freezer.freeze(set_modules_as_eval=True)
    assert not model.input.training


class OwnParams(nn.Module):
    """Parameters on the model itself and on a non-leaf block (e.g. a ViT's ``cls_token``, a layer scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 4))
        self.block = nn.Sequential(nn.Linear(4, 4))
        self.block.register_parameter("gamma", nn.Parameter(torch.ones(4)))
        self.head = nn.Linear(4, 2)


def test_parameters_outside_leaf_modules_are_frozen_pa_leaves_them_trainable() -> None:
    model = OwnParams()
    freezer = ModelFreezer(model)
    freezer.freeze(set_modules_as_eval=True)
    assert not model.cls_token.requires_grad  # the model's own parameters belong to group 0
    assert not model.block.get_parameter("gamma").requires_grad
    assert model.training  # the model's own mode covers every group: left alone
    assert trainable(model.head)
    assert set(freezer.unfreeze()) == {0}
    assert trainable(model)


def test_a_model_without_children_is_one_group() -> None:
    model = nn.Linear(3, 3)
    freezer = ModelFreezer(model)
    assert freezer.num_groups == 1 and freezer.get_layer_groups()[0].module is model
    freezer.freeze(0, 0, set_modules_as_eval=True)
    assert frozen(model) and not model.training


def test_a_partly_frozen_layer_is_reported_pa_raises_a_bare_value_error() -> None:
    model = Net()
    freezer = ModelFreezer(model)
    model.input.bias.requires_grad_(False)
    assert freezer.get_layers()[0].is_frozen
    freezer.freeze(0, 0)
    assert frozen(model.input)


def test_wrapped_models_are_looked_through_pa_sees_one_group() -> None:
    model = Net()
    freezer = ModelFreezer(nn.DataParallel(model))
    assert [g.module for g in freezer.get_layer_groups()] == [model.input, model.block, model.output]
    freezer.freeze()
    assert frozen(model.input) and trainable(model.output)


def test_public_api_accepts_pa_parameters() -> None:
    finetuning = pytest.importorskip("pytorch_accelerated.finetuning")
    for name in ("__init__", "get_layer_groups", "get_layers", "get_trainable_parameters", "freeze", "unfreeze"):
        pa_params = inspect.signature(getattr(finetuning.ModelFreezer, name)).parameters
        pta_params = inspect.signature(getattr(ModelFreezer, name)).parameters
        assert list(pta_params)[: len(pa_params)] == list(pa_params), name
        assert [p.default for p in pta_params.values()][: len(pa_params)] == \
            [p.default for p in pa_params.values()], name
    assert Layer._fields == finetuning.Layer._fields and LayerGroup._fields == finetuning.LayerGroup._fields
    assert set(finetuning.BN_MODULES) <= set(BN_MODULES)

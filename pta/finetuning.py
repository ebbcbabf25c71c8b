"""Freeze and unfreeze parts of a model for transfer learning (the API of ``pytorch_accelerated.finetuning``).

Two abstractions, as in pytorch-accelerated:

- a *layer group* is a direct child of the model (``model.children()``), numbered from 0; a model
  without children is one layer group. Parameters registered on the model itself (e.g. a ViT's
  ``cls_token``) belong to layer group 0.
- a *layer* is a module inside a layer group that has no children, or that has parameters of its own
  (``parameters(recurse=False)``); each layer owns only its own parameters.

``DistributedDataParallel``, ``DataParallel`` and ``torch.compile`` wrappers are looked through.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from torch import nn
from torch.utils.hooks import RemovableHandle

from pta.utils import unwrap_model

BN_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
)
"""The modules that ``freeze_batch_norms=False`` leaves trainable (and in their current mode)."""

ParamGroup = dict[str, list[nn.Parameter]]
"""``{"params": [...]}``: ready for ``optimizer.add_param_group``."""


class Layer(NamedTuple):
    """One layer; ``layer_group_idx`` is its group's index as ``(positive, negative)``."""

    layer_group_idx: tuple[int, int]
    module: nn.Module
    is_frozen: bool
    """True if any of its parameters is frozen; for a layer without parameters, if it is in eval mode."""


class LayerGroup(NamedTuple):
    """One layer group; ``layer_group_idx`` is ``(positive, negative)``."""

    layer_group_idx: tuple[int, int]
    module: nn.Module
    is_frozen: bool
    """True if any parameter of the group is frozen."""


class ModelFreezer:
    """Freeze and unfreeze layer groups of a model, e.g. train only the head, then unfreeze the backbone.

    Creating a freezer unfreezes every parameter of ``model``; freeze and unfreeze through it afterwards.
    With ``freeze_batch_norms=False`` (the default) BatchNorm layers (:data:`BN_MODULES`) are never
    frozen and their train/eval mode is never changed, so they keep adapting to the new data.

    ``freeze(..., set_modules_as_eval=True)`` keeps the frozen layers in eval mode until they are
    unfrozen with ``set_modules_as_training=True``, even through ``model.train()`` (which every trainer
    calls at the start of each training epoch): a forward pre-hook puts each such layer back in eval
    mode before it runs. This is what stops a frozen BatchNorm from updating its running statistics.
    """

    def __init__(self, model: nn.Module, freeze_batch_norms: bool = False) -> None:
        self.model = model
        _set_requires_grad(model.parameters(), value=True)
        self._root = unwrap_model(model)
        self._layer_groups, self._layers = _get_layer_groups_for_module(self._root)
        self.freeze_bn = freeze_batch_norms
        self.num_groups = len(self._layer_groups)
        self._eval_locks: dict[nn.Module, RemovableHandle] = {}

    def get_layer_groups(self) -> list[LayerGroup]:
        """Every layer group, in order."""
        frozen_groups = {idx for idx, module in self._layers if _any_frozen(module)}
        return [
            LayerGroup(self._both_idxs(idx), module, idx in frozen_groups) for idx, module in self._layer_groups.items()
        ]

    def get_layers(self) -> list[Layer]:
        """Every layer, in order (a module shared by two groups is listed under each)."""
        layers: list[Layer] = []
        for idx, module in self._layers:
            has_params = next(module.parameters(recurse=False), None) is not None
            is_frozen = _any_frozen(module) if has_params else (not module.training or module in self._eval_locks)
            layers.append(Layer(self._both_idxs(idx), module, is_frozen))
        return layers

    def get_trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model that requires a gradient (each shared parameter once)."""
        return [param for param in self.model.parameters() if param.requires_grad]

    def freeze(self, from_index: int = 0, to_index: int = -2, set_modules_as_eval: bool = False) -> None:
        """Freeze the layer groups ``from_index`` to ``to_index``, both inclusive (negative indices count from the end).

        The default freezes every group except the last. The order of the two indices does not matter;
        an index outside ``-num_groups .. num_groups - 1`` raises ``IndexError``. With
        ``set_modules_as_eval=True`` the frozen layers are also put (and kept) in eval mode.
        """
        self._freeze_unfreeze(from_index, to_index, freeze=True, toggle_train_eval=set_modules_as_eval)

    def unfreeze(self, from_index: int = -1, to_index: int = 0, set_modules_as_training: bool = True) -> dict[int, ParamGroup]:
        """Unfreeze the layer groups ``from_index`` to ``to_index``, both inclusive; the default unfreezes all.

        With ``set_modules_as_training=True`` the layers are also put back in training mode (and released
        from an eval mode set by ``freeze``). Returns, per layer group index (non-negative), the
        parameters that this call unfroze as ``{"params": [...]}``, each parameter once across all groups,
        ready for ``optimizer.add_param_group``; groups where nothing changed are left out.
        """
        return self._freeze_unfreeze(from_index, to_index, freeze=False, toggle_train_eval=set_modules_as_training)

    def _freeze_unfreeze(
        self, from_layer_group_index: int, to_layer_group_index: int, freeze: bool = True, toggle_train_eval: bool = True
    ) -> dict[int, ParamGroup]:
        first, last = self._convert_idxs(from_layer_group_index, to_layer_group_index)
        modified: dict[int, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for idx, module in self._layers:
            if not first <= idx <= last or (_module_is_batch_norm(module) and not self.freeze_bn):
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == freeze and id(param) not in seen:
                    param.requires_grad_(not freeze)
                    seen.add(id(param))
                    modified.setdefault(idx, []).append(param)
            if toggle_train_eval:
                self._set_mode(module, training=not freeze)
        return {idx: {"params": params} for idx, params in modified.items()}

    def _set_mode(self, module: nn.Module, training: bool) -> None:
        if module is self._root and next(module.children(), None) is not None:
            return  # the model's own parameters are in group 0, but its mode covers every group
        handle = self._eval_locks.pop(module, None)
        if handle is not None:
            handle.remove()
        if next(module.children(), None) is None:
            module.train(training)
        else:
            module.training = training  # only this module: its children are layers of their own
        if not training:
            self._eval_locks[module] = module.register_forward_pre_hook(_stay_in_eval)

    def _convert_idxs(self, from_idx: int, to_idx: int) -> tuple[int, int]:
        first = _convert_idx(from_idx, self.num_groups, "from_index")
        last = _convert_idx(to_idx, self.num_groups, "to_index")
        return (last, first) if first > last else (first, last)

    def _both_idxs(self, idx: int) -> tuple[int, int]:
        return idx, idx - self.num_groups


def _stay_in_eval(module: nn.Module, args: object) -> None:
    module.training = False


def _module_is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, BN_MODULES)


def _any_frozen(module: nn.Module) -> bool:
    return any(not param.requires_grad for param in module.parameters(recurse=False))


def _convert_idx(idx: int, num_groups: int, name: str = "index") -> int:
    """A non-negative layer group index from a possibly negative one; ``IndexError`` when out of range."""
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise TypeError(f"{name} must be an int, got {idx!r}")
    if not -num_groups <= idx < num_groups:
        raise IndexError(
            f"{name}={idx} is out of range for a model with {num_groups} layer group(s): "
            f"use {-num_groups} .. {num_groups - 1}"
        )
    return idx + num_groups if idx < 0 else idx


def _set_requires_grad(parameters: Iterable[nn.Parameter], value: bool = True) -> None:
    for param in parameters:
        param.requires_grad_(value)


def _get_layer_groups_for_module(module: nn.Module) -> tuple[dict[int, nn.Module], list[tuple[int, nn.Module]]]:
    """The layer groups by index, and every layer as ``(group index, module)`` in order."""
    children = list(module.children())
    if not children:
        return {0: module}, [(0, module)]
    layers: list[tuple[int, nn.Module]] = []
    if next(module.parameters(recurse=False), None) is not None:
        layers.append((0, module))
    for idx, group in enumerate(children):
        for sub in group.modules():
            if next(sub.children(), None) is None or next(sub.parameters(recurse=False), None) is not None:
                layers.append((idx, sub))
    return dict(enumerate(children)), layers

"""Optional packages for tests: skip (not fail) when one is missing OR installed but broken."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def import_or_skip(name: str) -> ModuleType:
    """``pytest.importorskip`` for packages whose import can fail in other ways than ``ImportError``
    (a timm or torchvision built for another torch raises ``RuntimeError`` or ``AttributeError``)."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any failure to import means "not usable here"
        pytest.skip(f"{name} is not usable here: {type(error).__name__}: {error}")

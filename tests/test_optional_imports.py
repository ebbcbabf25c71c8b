"""Tests that need timm/torchvision/transformers skip when those are installed but broken (issue 12, item 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests._optional import import_or_skip


@pytest.mark.parametrize("failure", ["raise RuntimeError('operator torchvision::nms does not exist')",
                                     "raise AttributeError('module torch has no attribute x')",
                                     "import not_a_module_anywhere_12"])
def test_a_broken_install_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    (tmp_path / "broken_pkg_12.py").write_text(failure + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # pyright: ignore[reportUnknownMemberType]  # pytest leaves its `path` parameter unannotated
    monkeypatch.delitem(sys.modules, "broken_pkg_12", raising=False)
    with pytest.raises(pytest.skip.Exception, match="broken_pkg_12 is not usable here"):
        import_or_skip("broken_pkg_12")


def test_a_working_package_is_returned() -> None:
    assert import_or_skip("json").dumps([1]) == "[1]"


def test_no_test_uses_importorskip_for_timm_torchvision_or_transformers() -> None:
    tests = Path(__file__).parent
    offenders = [str(path) for path in tests.rglob("*.py")
                 for name in ("timm", "torchvision", "transformers")
                 if f'importorskip("{name}' in path.read_text() and path.name != Path(__file__).name]
    assert offenders == []

"""plot_run_history draws the run history's curves to a PNG (matplotlib is optional)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pta.plotting import plot_run_history
from pta.tracking import InMemoryRunHistory


def _history() -> InMemoryRunHistory:
    history = InMemoryRunHistory()
    for epoch in range(1, 6):
        history.update_metric("train_loss_epoch", 2.0 / epoch)
        history.update_metric("eval_loss_epoch", 2.2 / epoch)
        history.update_metric("accuracy", 1 - 0.5 / epoch)
        history.update_metric("note", f"epoch {epoch}")  # not a number: skipped
        history._increment_epoch()
    return history


def _pixels(path: Path) -> tuple[int, int, float, float]:
    image = pytest.importorskip("matplotlib.image").imread(str(path))
    rgb = image[..., :3]
    non_white = float((rgb.min(axis=-1) < 0.95).mean())
    return image.shape[0], image.shape[1], non_white, float(rgb.std())


@pytest.mark.parametrize("metrics", [None, ["train_loss_epoch", "eval_loss_epoch"], ["accuracy"]])
def test_the_png_is_written_and_not_blank(tmp_path: Path, metrics: list[str] | None) -> None:
    pytest.importorskip("matplotlib")
    path = plot_run_history(_history(), tmp_path / "plots" / "history.png", metrics, title="run")
    assert path == tmp_path / "plots" / "history.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, non_white, spread = _pixels(path)
    assert height >= 300 and width >= 400
    assert 0.01 < non_white < 0.9 and spread > 0.05  # lines, axes and text on a white background
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.png"]  # written atomically


def test_losses_and_other_metrics_get_separate_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    one = plot_run_history(_history(), tmp_path / "one.png", ["train_loss_epoch"])
    two = plot_run_history(_history(), tmp_path / "two.png")
    assert _pixels(two)[1] > 1.5 * _pixels(one)[1]


def test_unknown_or_non_numeric_metrics_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no metric named"):
        plot_run_history(_history(), tmp_path / "x.png", ["val_acc"])
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_run_history(_history(), tmp_path / "x.png", ["note"])


def test_without_matplotlib_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg",
                 "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pta-trainer\[plot\]"):
        plot_run_history(_history(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

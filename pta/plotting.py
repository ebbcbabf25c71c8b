"""Plot a run history's curves to an image file.

matplotlib is an optional extra: ``pip install 'pta-trainer[plot]'``.
"""

# pyright: reportUnknownMemberType=false
# (matplotlib's own annotations leave parts of the Axes API unknown)

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pta._files import chmod_like_open
from pta.callbacks._numbers import as_number
from pta.tracking import RunHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_lr_sweep", "plot_run_history", "save_figure"]


def plot_run_history(
    history: RunHistory,
    path: str | Path,
    metrics: Iterable[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw every metric of ``history`` (or only ``metrics``) against its index (1, 2, ...: the epoch
    for per-epoch metrics) and save the figure to ``path`` (PNG, or any format matplotlib knows from the
    suffix), atomically. Returns the path.

    Losses (names containing ``loss``) and other metrics get separate panels when both are present, so
    a loss near 2 does not flatten an accuracy near 0.9. Values that are not numbers are skipped.
    Uses matplotlib's Agg canvas directly: no display, no pyplot state, safe in scripts and tests.
    Call it on the main process only in distributed runs.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise ImportError(
            "plot_run_history needs matplotlib: pip install 'pta-trainer[plot]' (or pip install matplotlib)"
        ) from error

    curves = _curves(history, metrics)
    losses = {name: values for name, values in curves.items() if "loss" in name}
    others = {name: values for name, values in curves.items() if "loss" not in name}
    panels = [group for group in (losses, others) if group]

    figure = Figure(figsize=(6.4 * len(panels), 4.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes_list: list[Axes] = [figure.add_subplot(1, len(panels), index + 1) for index in range(len(panels))]
    for axes, group, label in zip(axes_list, panels, ("loss" if losses else "value", "value"), strict=False):
        for name, values in group.items():
            steps = range(1, len(values) + 1)
            axes.plot(steps, values, marker="o" if len(values) < 30 else None, markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    if title is not None:
        figure.suptitle(title)

    return save_figure(figure, path)


def plot_lr_sweep(lrs: list[float], losses: list[float], smoothed_losses: list[float], suggestion: float | None,
                  path: str | Path, *, dpi: int = 100) -> Path:
    """Draw an LR finder's loss against the learning rate (log scale), with ``suggestion`` marked, and save
    it to ``path`` atomically (``LRFinderResult.plot``). Returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "LRFinderResult.plot needs matplotlib: pip install 'pta-trainer[plot]' (or pip install matplotlib)"
        ) from error

    figure = Figure(figsize=(6.4, 4.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(lrs, losses, alpha=0.3, label="loss")
    axes.plot(lrs, smoothed_losses, label="smoothed loss")
    if suggestion is not None:
        axes.axvline(suggestion, color="red", linestyle="--", label=f"suggestion {suggestion:.3g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` to ``path`` (format from the suffix, PNG by default) atomically, with the mode
    ``open()`` gives under the umask. Returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".png", dir=target.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, format=target.suffix.lstrip(".") or "png")
        chmod_like_open(temporary)  # mkstemp creates 0o600
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _curves(history: RunHistory, metrics: Iterable[str] | None) -> dict[str, list[float]]:
    names = sorted(history.get_metric_names()) if metrics is None else list(metrics)
    known = history.get_metric_names()
    unknown = [name for name in names if name not in known and f"{history.metric_name_prefix}{name}" not in known]
    if unknown:
        raise ValueError(f"no metric named {unknown} in the run history; it has {sorted(known)}")
    curves: dict[str, list[float]] = {}
    for name in names:
        numbers = [float(number) for number in map(as_number, history.get_metric_values(name)) if number is not None]
        if numbers:
            curves[name] = numbers
    if not curves:
        raise ValueError(f"nothing to plot: none of {names} has numeric values")
    return curves

"""Where each experiment tracker writes: under the run's project directory, not the working directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def route_tracker_output(name: str, directory: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for the tracker ``name`` with its output put under ``directory`` (the run's project
    directory) unless the user chose a place: MLflow's store (``directory/mlflow.db``; not when
    ``MLFLOW_TRACKING_URI`` is set or a ``tracking_uri`` option is given) and artifacts
    (``directory/mlartifacts``), W&B's ``dir``, DVCLive's ``dir``, SwanLab's ``logdir``. TensorBoard and Aim
    get the directory from Accelerate; Comet, ClearML and Trackio keep their own settings."""
    routed = dict(options)
    if directory is None:
        return routed
    root = Path(directory).resolve()
    if name == "mlflow":
        routed.setdefault("logging_dir", str(root / "mlartifacts"))
        uri = routed.pop("tracking_uri", None)
        if uri is None and "MLFLOW_TRACKING_URI" not in os.environ:
            uri = f"sqlite:///{root / 'mlflow.db'}"
        if uri is not None:
            root.mkdir(parents=True, exist_ok=True)
            _set_mlflow_tracking_uri(str(uri))
    elif name in _DIRECTORY_OPTION:
        option, subdirectory = _DIRECTORY_OPTION[name]
        routed.setdefault(option, str(root / subdirectory))
        root.mkdir(parents=True, exist_ok=True)
    return routed


_DIRECTORY_OPTION = {"wandb": ("dir", ""), "dvclive": ("dir", "dvclive"), "swanlab": ("logdir", "swanlog")}
"""The option that tells a tracker where to write, and the folder under the project directory."""


def _set_mlflow_tracking_uri(uri: str) -> None:
    import mlflow  # type: ignore[import-not-found, unused-ignore]  # optional, untyped

    set_tracking_uri: Callable[[str], object] = getattr(mlflow, "set_tracking_uri")  # untyped module
    set_tracking_uri(uri)

"""Single-file checkpoints: written atomically, read back with clear errors."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, cast

import torch

from pta._files import chmod_like_open


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, foreign or incompatible; the message names the file."""


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A reader sees either the previous file or the complete new one, never a partial write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        chmod_like_open(tmp_name)  # mkstemp creates 0o600; torch.save would give the umask's mode
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_torch_file(path: str | Path, *, weights_only: bool = True) -> Any:
    """``torch.load`` on CPU, turning every way a file can be unreadable into a :class:`CheckpointError`."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} does not exist")
    try:
        return torch.load(source, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as error:
        hint = (
            " It holds objects that are not plain tensors or containers; if you trust the file, load it "
            "with weights_only=False."
            if weights_only and "weights_only" in str(error)
            else " The file is truncated or not a torch checkpoint."
        )
        raise CheckpointError(f"cannot read checkpoint {source}: {error}.{hint}") from error


def require_keys(checkpoint: Any, path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict")
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {', '.join(missing)}: it was not written by save_checkpoint"
        )
    return cast("dict[str, Any]", checkpoint)

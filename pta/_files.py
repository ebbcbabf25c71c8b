"""File-mode helpers: files pta writes through a temporary file get the mode ``open()`` would give."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def _umask() -> int:
    """The current umask: from /proc on Linux (no side effect), else by setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a new regular file gets from ``open()`` under the process's umask (0o644 under 022)."""
    return 0o666 & ~_umask()


def chmod_like_open(path: str | Path) -> None:
    """Give ``path`` (e.g. a ``tempfile.mkstemp`` file, created 0o600) the mode ``open()`` would give."""
    os.chmod(path, default_file_mode())


def chmod_tree_like_open(directory: Path) -> None:
    """``chmod_like_open`` for every file under ``directory``."""
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                chmod_like_open(path)
        except FileNotFoundError:  # another process's temporary file, renamed meanwhile
            continue

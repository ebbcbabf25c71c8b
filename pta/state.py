"""Training states on disk: atomic directories, RNG snapshots, and finding the latest complete state.

A training state is a directory::

    <name>/
      pta_meta.json          format version, process count, epoch, position in the epoch (written last)
      pta_state_<rank>.pt    per process: loop position, loss sums, run history, scheduler, RNG states,
                             gradients of an unfinished accumulation window
      model.safetensors, optimizer.bin, scaler.pt, random_states_<rank>.pkl, ...
                             Accelerate's ``save_state`` files (sharded for FSDP/DeepSpeed)

It is written under ``.<name>.partial`` and renamed into place once complete, so a reader never
sees half a state, and an interrupted save leaves the previous state intact.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from pta.checkpoint import CheckpointError

FORMAT_VERSION = 1
META_FILE = "pta_meta.json"
LATEST = "latest"


def rank_file(directory: Path, rank: int) -> Path:
    return directory / f"pta_state_{rank}.pt"


def partial_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


def commit_dir(partial: Path, target: Path) -> None:
    """Replace ``target`` by the complete ``partial`` directory (two renames; no half state is visible)."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    partial.rename(target)
    if old.exists():
        shutil.rmtree(old)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))


def read_meta(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise CheckpointError(f"training state {directory} does not exist or is not a directory")
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(
            f"{directory} is not a complete pta training state: {META_FILE} is missing "
            "(was it written by save_training_state, and did the save finish?)"
        )
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_path} is corrupt: {error}") from error
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} has format {meta.get('format')!r}; this pta reads format {FORMAT_VERSION}")
    return meta


def resolve_state_dir(path: str | Path) -> Path:
    """``dir/latest`` means the complete state in ``dir`` with the most optimizer updates."""
    path = Path(path)
    if path.name != LATEST or path.is_dir():
        return path
    candidates: list[tuple[int, float, Path]] = []
    for child in path.parent.iterdir() if path.parent.is_dir() else ():
        if child.name.startswith(".") or not (child / META_FILE).is_file():
            continue
        try:
            meta = read_meta(child)
        except CheckpointError:
            continue
        candidates.append((int(meta.get("num_updates", 0)), child.stat().st_mtime, child))
    if not candidates:
        raise CheckpointError(f"no complete pta training state found in {path.parent}")
    return max(candidates)[2]


# ---------------------------------------------------------------------------- RNG states
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG a training step may draw from: Python, NumPy (if imported), torch CPU/CUDA, and a sampler's."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (name, keys.tolist(), pos, has_gauss, cached)  # plain types load with weights_only
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state((name, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def sampler_generator(dataloader: object) -> torch.Generator | None:
    """The generator that shuffles ``dataloader``'s sampler (Accelerate keeps it synchronised)."""
    generator = getattr(dataloader, "synchronized_generator", None)
    if generator is None:
        sampler = getattr(dataloader, "sampler", None)
        generator = getattr(sampler, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None

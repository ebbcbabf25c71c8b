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
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from pta.checkpoint import CheckpointError

FORMAT_VERSION = 1
META_FILE = "pta_meta.json"
LATEST = "latest"


def rank_file(directory: Path, rank: int) -> Path:
    return directory / f"pta_state_{rank}.pt"


def partial_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


def old_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


# ---------------------------------------------------------------------------- the commit protocol
# Every rename and fsync of a save goes through these two functions, so that a test can crash the
# process at each one (tests/test_resume_commit.py) and check what a restart finds.
def _rename(source: Path, destination: Path) -> None:
    os.rename(source, destination)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to the disk."""
    if os.name == "nt" and path.is_dir():  # Windows cannot open directories; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file under ``directory``, then every directory's entries, deepest first."""
    for root, _dirs, files in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
        for name in sorted(files):
            _fsync(Path(root) / name)
        _fsync(Path(root))


def remove_state(directory: Path) -> None:
    """Delete a state so that no crash can leave it half-deleted under a visible name: rename it to a
    hidden name first (leftovers of a crash there are removed by the next save)."""
    hidden = directory.parent / f".{directory.name}.deleting"
    if hidden.exists():
        shutil.rmtree(hidden)
    _rename(directory, hidden)
    _fsync(directory.parent)
    shutil.rmtree(hidden)


def commit_dir(partial: Path, target: Path) -> None:
    """Replace ``target`` by the complete (fsynced, ``pta_meta.json`` last) ``partial`` directory.

    At every moment either ``target`` or ``.<name>.old`` is a complete state: a crash between the two
    renames leaves the previous state at ``.<name>.old``, which :func:`resolve_state_dir` finds by
    ``target``'s name and by ``latest``, and :func:`clean_leftovers` moves back.
    """
    old = old_dir(target)
    if old.exists():
        _remove_old(old)
    if target.exists():
        _rename(target, old)
        _fsync(target.parent)
    _rename(partial, target)
    _fsync(target.parent)
    if old.exists():
        _remove_old(old)


def _remove_old(old: Path) -> None:
    """Make ``old`` incomplete first (its metadata gone, durably), then delete the rest."""
    (old / META_FILE).unlink(missing_ok=True)
    _fsync(old)
    shutil.rmtree(old)


def clean_leftovers(parent: Path) -> None:
    """What crashed saves left in ``parent``: restore a previous state stranded at ``.<name>.old``,
    remove unfinished ``.partial`` writes and half-deleted states. The main process calls this before
    each save (nothing else may be writing states into ``parent`` then)."""
    if not parent.is_dir():
        return
    for child in sorted(parent.iterdir()):
        name = child.name
        if not name.startswith(".") or not child.is_dir():
            continue
        if name.endswith(".old"):
            target = parent / name[1:-len(".old")]
            if not target.exists() and (child / META_FILE).is_file():
                _rename(child, target)
                _fsync(parent)
            else:
                shutil.rmtree(child)
        elif name.endswith((".partial", ".deleting")):
            shutil.rmtree(child)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Written last: a directory with this file is a complete state."""
    path = directory / META_FILE
    path.write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
    _fsync(path)
    _fsync(directory)


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
    """Where the complete state ``path`` names is: ``path`` itself, or the previous state that a save
    interrupted between its two renames left at ``.<name>.old``; ``dir/latest`` means the complete
    state in ``dir`` with the most optimizer updates (the newest on ties)."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name != LATEST:
        stranded = old_dir(path)
        return stranded if (stranded / META_FILE).is_file() else path
    candidates: list[tuple[int, float, Path]] = []
    for child in path.parent.iterdir() if path.parent.is_dir() else ():
        if child.name.startswith("."):
            visible = child.parent / child.name[1:].removesuffix(".old")
            if not child.name.endswith(".old") or visible.exists():
                continue  # unfinished writes and deletions are never "latest"
        if not (child / META_FILE).is_file():
            continue
        try:
            meta = read_meta(child)
        except CheckpointError:
            continue
        candidates.append((int(meta.get("num_updates", 0)), (child / META_FILE).stat().st_mtime, child))
    if not candidates:
        raise CheckpointError(f"no complete pta training state found in {path.parent}")
    return max(candidates)[2]


# ---------------------------------------------------------------------------- RNG states
def capture_rng(generator: torch.Generator | None = None, dataset: object = None) -> dict[str, Any]:
    """Every RNG a training step may draw from: Python, NumPy (if imported), torch CPU/CUDA, and a sampler's;
    with ``dataset``, also the state of an iterable dataset that has ``state_dict`` (its data order)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if is_stateful_iterable(dataset):
        state["dataset"] = dataset.state_dict()  # type: ignore[attr-defined]  # checked by is_stateful_iterable
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (name, keys.tolist(), pos, has_gauss, cached)  # plain types load with weights_only
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None, dataset: object = None) -> None:
    if "dataset" in state and is_stateful_iterable(dataset):
        dataset.load_state_dict(state["dataset"])  # type: ignore[attr-defined]  # checked by is_stateful_iterable
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


def is_iterable_dataset(dataset: object) -> bool:
    return isinstance(dataset, IterableDataset)


def is_stateful_iterable(dataset: object) -> bool:
    """An ``IterableDataset`` whose position can be saved: ``state_dict()`` and ``load_state_dict(state)``."""
    return is_iterable_dataset(dataset) and callable(getattr(dataset, "state_dict", None)) and callable(
        getattr(dataset, "load_state_dict", None))


def sampler_generator(dataloader: object) -> torch.Generator | None:
    """The generator that shuffles ``dataloader``'s sampler (Accelerate keeps it synchronised; its
    DataLoaderShard shuffles with its batch_sampler's sampler)."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    for holder, name in ((dataloader, "synchronized_generator"), (getattr(dataloader, "sampler", None), "generator"),
                         (getattr(batch_sampler, "sampler", None), "generator")):
        generator = getattr(holder, name, None)
        if isinstance(generator, torch.Generator):
            return generator
    return None

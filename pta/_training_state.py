"""``save_training_state`` / ``load_training_state``: what a save writes and how the processes agree
on its outcome, and what a resume checks before it loads anything. The on-disk layout and the commit
protocol are in ``pta.state``; the run fingerprint and checksums in ``pta._fingerprint``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pta._unwrap import unwrap_optimizer
from pta._checksums import Pending, Stamp, WriteBehind, checksum_pool, start_checksums, verify_checksums
from pta._fingerprint import check_fingerprint, run_fingerprint
from pta.checkpoint import CheckpointError, load_torch_file
from pta.state import (
    capture_rng,
    clean_leftovers,
    commit_dir,
    fsync_tree,
    is_iterable_dataset,
    is_stateful_iterable,
    partial_dir,
    rank_file,
    read_meta,
    resolve_state_dir,
    sampler_generator,
    write_meta,
)

if TYPE_CHECKING:
    from pta._trainer_checkpoints import TrainerCheckpoints

_MARGIN = 1 << 20  # bytes beyond the tensors' own size: metadata, RNG states, file headers
_NEARLY_FULL = 1 << 20  # a write that failed with less free space than this most likely ran out of it


# ---------------------------------------------------------------------------- callback state
def stateful_callbacks(callbacks: Iterable[object]) -> list[tuple[str, Any]]:
    """Callbacks with ``state_dict`` and ``load_state_dict`` methods, keyed by class name and occurrence
    (``EarlyStoppingCallback#0``), so that two callbacks of one class keep separate states."""
    seen: dict[str, int] = {}
    found: list[tuple[str, Any]] = []
    for callback in callbacks:
        if callable(getattr(callback, "state_dict", None)) and callable(getattr(callback, "load_state_dict", None)):
            name = type(callback).__qualname__
            found.append((f"{name}#{seen.get(name, 0)}", callback))
            seen[name] = seen.get(name, 0) + 1
    return found


def callback_states(callbacks: Iterable[object]) -> dict[str, Any]:
    return {key: callback.state_dict() for key, callback in stateful_callbacks(callbacks)}


def load_callback_states(callbacks: Iterable[object], states: Mapping[str, Any]) -> None:
    for key, callback in stateful_callbacks(callbacks):
        if key in states:
            callback.load_state_dict(states[key])


# ---------------------------------------------------------------------------- saving
def fingerprint(trainer: TrainerCheckpoints[Any]) -> dict[str, Any]:
    config = trainer.run_config
    return run_fingerprint(
        per_device_batch_size=config.train_per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_processes=config.num_processes,
        train_dataset=trainer.train_dataset,
        optimizer=unwrap_optimizer(trainer.optimizer) if trainer.optimizer is not None else None,
        model=trainer.get_model(),
        stateful_callbacks=[key for key, _ in stateful_callbacks(trainer.callback_handler.callbacks)],
    )


def _bytes_needed(trainer: TrainerCheckpoints[Any]) -> int:
    """About what the main process writes: the model's tensors and the optimizer's state."""
    model = trainer.get_model()
    tensors = [*model.parameters(), *model.buffers()]
    if trainer.optimizer is not None:
        states = trainer.optimizer.state.values()
        tensors += [v for state in states for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors) + _MARGIN


def _cause(error: BaseException, parent: Path, needed: int) -> str:
    cause = f"{os.strerror(error.errno).lower()} ({error})" if isinstance(error, OSError) and error.errno else (
        f"{type(error).__name__}: {error}")
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return cause
    if free < max(needed, _NEARLY_FULL) and "no space left" not in cause.lower():  # torch says "unexpected pos"
        cause = f"no space left on device ({free} bytes free, about {needed} needed); {cause}"
    return cause


class _Save:
    """One save: each phase runs on the processes it concerns, then all processes agree on its outcome,
    so that a failure on one process raises the same ``CheckpointError`` on every process."""

    def __init__(self, trainer: TrainerCheckpoints[Any], target: Path) -> None:
        self.trainer, self.acc, self.target = trainer, trainer._accelerator, target
        self.partial = partial_dir(target)
        self.needed = _bytes_needed(trainer)
        self.meta: dict[str, Any] = {}
        self.early_checksums: dict[str, tuple[Stamp, Pending]] = {}

    def phase(self, action: Callable[[], None], *, main_only: bool = False) -> None:
        error: Exception | None = None
        if self.acc.is_main_process or not main_only:
            try:
                action()
            except Exception as caught:  # a crash (BaseException) leaves leftovers for the next save
                error = caught
        failed = error is not None
        if self.acc.num_processes > 1:
            flags = self.acc.gather(torch.tensor([int(failed)], device=self.trainer.device))
            failed = bool(flags.max().item())
        if not failed:
            return
        # the cause first: free space is measured while the partial output still fills the disk
        cause = _cause(error, self.target.parent, self.needed) if error else "another process failed to write its part"
        if self.acc.is_main_process and self.partial.exists():
            shutil.rmtree(self.partial, ignore_errors=True)
        raise CheckpointError(
            f"cannot save the training state to {self.target} (directory {self.target.parent}): {cause}. "
            "The partial output was removed; earlier training states are intact."
        ) from error

    def prepare(self) -> None:
        parent = self.target.parent
        parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(parent)
        free = shutil.disk_usage(parent).free
        if free < self.needed:
            raise OSError(28, f"{free} bytes free in {parent}, about {self.needed} needed")

    def write_parts(self, checkpoint_kwargs: dict[str, Any] | None, *, commit_next: bool) -> None:
        # When the commit follows at once, the main process (which commits) flushes the files while
        # they are written, and checksums Accelerate's while it writes its own; a background commit
        # leaves the writer alone.
        behind = None
        if commit_next and self.acc.is_main_process:
            behind = WriteBehind(self.partial, checksum_pool())
        try:
            self.acc.save_state(self.partial)
            if behind is not None and self.acc.num_processes == 1:  # no other process writes there
                behind.written()
            self._write_own_state(checkpoint_kwargs)
        finally:
            if behind is not None:
                behind.stop()
                self.early_checksums = behind.early

    def _write_own_state(self, checkpoint_kwargs: dict[str, Any] | None) -> None:
        trainer = self.trainer
        state = trainer._call_chain("training_state_dict", trainer.training_state_dict)
        pending = trainer._resume
        if pending is not None:  # saved in a resumed run before its epoch set up its batches: the same save point
            state["epoch_rng"], state["rng"] = pending["epoch_rng"], pending["rng"]
        else:
            state["rng"] = capture_rng(sampler_generator(trainer._train_dataloader), trainer.train_dataset)
        state["callbacks"] = callback_states(trainer.callback_handler.callbacks)
        state["user"] = dict(checkpoint_kwargs or {})
        torch.save(state, rank_file(self.partial, self.acc.process_index))
        self.meta = {"num_processes": self.acc.num_processes, "epoch": state["epoch"], "phase": state["phase"],
                     "batches_done": state["batches_done"], "num_updates": state["num_updates"]}
        if self.acc.is_main_process:  # read from the trainer now: a background commit runs while it trains on
            self.meta["fingerprint"] = fingerprint(trainer)

    def commit(self) -> None:
        """Make the written files durable and the state visible; reads only the files and ``meta``."""
        # Checksumming and flushing the same files overlap: zlib and fsync both release the GIL.
        checksums = start_checksums(self.partial, checksum_pool(), self.early_checksums)
        fsync_tree(self.partial)
        write_meta(self.partial, {**self.meta, "checksums": checksums()})
        commit_dir(self.partial, self.target)


class _BackgroundCommit:
    """The commit of one save, run by a thread of the main process while training goes on."""

    unreported: set[_BackgroundCommit] = set()  # failed or not, never waited for: reported at exit

    def __init__(self, save: _Save) -> None:
        self.save = save
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if save.acc.is_main_process:
            _BackgroundCommit.unreported.add(self)
            # not a daemon: an interpreter that exits first waits for the commit instead of cutting it off
            self._thread = threading.Thread(target=self._run, name=f"pta-commit-{save.target.name}")
            self._thread.start()

    def _run(self) -> None:
        try:
            self.save.commit()
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits (join), or reported at exit
            self.error = error

    def join(self) -> None:
        """Wait for the commit on this process; raise what made it fail."""
        if self._thread is not None:
            self._thread.join()
        _BackgroundCommit.unreported.discard(self)
        if self.error is not None:
            raise self.error


def _report_unwaited_commits() -> None:
    for commit in list(_BackgroundCommit.unreported):
        if commit.error is not None:
            print(f"pta: the training state saved in the background to {commit.save.target} could not be "
                  f"committed: {commit.error!r}. Earlier training states are intact.", file=sys.stderr)
    _BackgroundCommit.unreported.clear()


atexit.register(_report_unwaited_commits)  # runs after the interpreter joined the commit threads


def save_training_state(trainer: TrainerCheckpoints[Any], output_dir: str | Path,
                        checkpoint_kwargs: dict[str, Any] | None, background: bool = False) -> Path:
    wait_for_save(trainer)  # one commit at a time, in order, and the outcome of the previous one first
    save = _Save(trainer, Path(output_dir))
    save.phase(save.prepare, main_only=True)
    save.phase(lambda: save.write_parts(checkpoint_kwargs, commit_next=not background))
    if background:
        trainer._pending_commit = _BackgroundCommit(save)
    else:
        save.phase(save.commit, main_only=True)
    return save.target


def wait_for_save(trainer: TrainerCheckpoints[Any]) -> None:
    """Wait for the background commit of the trainer's last save, if any; every process must call it,
    and a failed commit raises the same ``CheckpointError`` on each."""
    pending, trainer._pending_commit = trainer._pending_commit, None
    if pending is not None:
        pending.save.phase(pending.join, main_only=True)


@contextmanager
def commits_awaited(trainer: TrainerCheckpoints[Any]) -> Generator[None, None, None]:
    """Wait for a background commit when the block ends. While an error ends it, wait without a
    collective (the processes may have parted) and note on the error if the commit failed too."""
    try:
        yield
    except BaseException as error:
        pending, trainer._pending_commit = trainer._pending_commit, None
        if pending is not None:
            try:
                pending.join()
            except Exception as failed:  # noqa: BLE001 - the run's own error is the one raised; this one is noted on it
                error.add_note(f"pta: the training state saved in the background to {pending.save.target} "
                               f"could not be committed either: {failed!r}")
        raise
    wait_for_save(trainer)


# ---------------------------------------------------------------------------- loading
def _check_dataset_position(directory: Path, meta: Mapping[str, Any], dataset: object) -> None:
    """A mid-epoch state of an IterableDataset resumes exactly only if the dataset can restore its position."""
    if not is_iterable_dataset(dataset) or is_stateful_iterable(dataset):
        return
    if meta["phase"] == "train" and meta["batches_done"] > 0:
        raise CheckpointError(
            f"training state {directory} was saved {meta['batches_done']} batches into epoch {meta['epoch']}, and "
            f"train_dataset ({type(dataset).__name__}) is an IterableDataset without state_dict()/load_state_dict(): "
            "pta cannot replay its order to that batch. Give the dataset both methods (its state at the start of "
            "an epoch must reproduce that epoch's samples), or resume from a state saved at the end of an epoch "
            "(SaveTrainingStateCallback(save_every_n_epochs=1))."
        )


def load_training_state(trainer: TrainerCheckpoints[Any], input_dir: str | Path,
                        allowed_changes: frozenset[str] = frozenset()) -> dict[str, Any]:
    wait_for_save(trainer)  # it may be the state being committed
    directory, acc = resolve_state_dir(input_dir), trainer._accelerator
    meta = read_meta(directory)
    if meta["num_processes"] != acc.num_processes:
        raise CheckpointError(f"training state {directory} was saved by {meta['num_processes']} process(es); "
                              f"this run has {acc.num_processes}")
    verify_checksums(directory, meta.get("checksums", {}))
    for note in check_fingerprint(directory, meta.get("fingerprint", {}), fingerprint(trainer), allowed_changes):
        trainer.print(f"Resuming with a changed setting (resume_allow_changes): {note}")
    _check_dataset_position(directory, meta, trainer.train_dataset)
    state = load_torch_file(rank_file(directory, acc.process_index))
    try:
        acc.load_state(directory)
    except Exception as error:
        raise CheckpointError(f"cannot load the model/optimizer state in {directory}: {error}") from error
    trainer._call_chain("load_training_state_dict", lambda: trainer.load_training_state_dict(state))
    trainer._resume = {key: state[key] for key in ("phase", "batches_done", "epoch_rng", "rng")}
    trainer._resume["callbacks"] = state.get("callbacks", {})
    if state["phase"] != "train" and is_stateful_iterable(trainer.train_dataset) and "dataset" in state["rng"]:
        # the saved epoch's pass is complete: the dataset continues after it
        trainer.train_dataset.load_state_dict(state["rng"]["dataset"])
    return {**meta, **state["user"], "current_epoch": state["epoch"]}

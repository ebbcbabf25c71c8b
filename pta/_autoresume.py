"""``train(resume_from="auto")``: continue from the most advanced complete training state of the run.

The run's state directories are the ``save_dir`` of every ``SaveTrainingStateCallback`` and the
trainer's ``interrupt_state_dir``. Among the complete states found there (``pta_meta.json`` present),
the one furthest into the run wins: most optimizer updates, then epoch, then position in the epoch
(training < evaluation < epoch done), then the newest. No state: a fresh start. This is what an
elastic restart (``torchrun --max-restarts N``) needs: the same command resumes after every restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pta._agreement import StopAgreement
from pta.callbacks.base import TrainerCallback
from pta.callbacks.training_state import SaveTrainingStateCallback
from pta.checkpoint import CheckpointError
from pta.state import LATEST, META_FILE, read_meta, resolve_state_dir

if TYPE_CHECKING:
    from pta.base import TrainerBase

AUTO = "auto"
_PHASES = {"train": 0, "eval": 1, "done": 2}


def state_directories(callbacks: Iterable[TrainerCallback], interrupt_state_dir: str | Path | None) -> list[Path]:
    """Where this run keeps its training states, in a stable order."""
    found = [Path(cb.save_dir) for cb in callbacks if isinstance(cb, SaveTrainingStateCallback)]
    if interrupt_state_dir is not None:
        found.append(Path(interrupt_state_dir))
    return list(dict.fromkeys(found))


def _progress(state: Path, meta: dict[str, Any]) -> tuple[int, int, int, int, float]:
    return (int(meta.get("num_updates", 0)), int(meta.get("epoch", 0)), _PHASES.get(str(meta.get("phase")), 0),
            int(meta.get("batches_done", 0)), (state / META_FILE).stat().st_mtime)


def latest_state(directories: Iterable[Path]) -> Path | None:
    """The most advanced complete state in ``directories`` (each a state itself or a folder of states)."""
    best: tuple[tuple[int, int, int, int, float], Path] | None = None
    for directory in directories:
        candidates: list[Path] = []
        if (directory / META_FILE).is_file():
            candidates.append(directory)
        try:
            candidates.append(resolve_state_dir(directory / LATEST))
        except (CheckpointError, OSError):
            pass  # no complete state in it
        for state in candidates:
            try:
                key = _progress(state, read_meta(state))
            except (CheckpointError, OSError):
                continue
            if best is None or key > best[0]:
                best = (key, state)
    return None if best is None else best[1]


def auto_resume_dir(trainer: TrainerBase[Any], agreement: StopAgreement) -> Path | None:
    """Process 0 picks the state for ``resume_from="auto"``; every process resumes from the same one."""
    directories = state_directories(trainer.callback_handler.callbacks, trainer.interrupt_state_dir)
    chosen: Path | None = agreement.broadcast(latest_state(directories) if trainer.is_world_main_process else None)
    if chosen is None:
        trainer.print(f"resume_from='auto': no training state in {', '.join(map(str, directories)) or '(none)'}; "
                      "starting fresh")
    return chosen

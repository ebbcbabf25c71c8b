"""Writes the run history to a CSV file, one row per epoch, without any dependency."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from typing_extensions import override

from pta._files import chmod_like_open
from pta._types import BatchOutput
from pta.callbacks._step_metrics import StepMetrics
from pta.callbacks.base import TrainerCallback
from pta.callbacks._numbers import as_number
from pta.protocols import TrainerLike
from pta.tracking import RunHistory

__all__ = ["CSVLoggerCallback"]


class CSVLoggerCallback(TrainerCallback):
    """Writes one CSV row per epoch: ``epoch`` and the latest value of every metric recorded in it.

    Runs on the main process only. Columns are ``epoch`` then the metrics in the order they first
    appeared; a metric that got no value in an epoch leaves its cell empty. When a new metric appears
    the whole file is rewritten with the wider header, atomically (a reader sees the old file or the new
    one, never a mix); otherwise the row is appended. A fresh run (empty run history) starts a new file;
    a resumed or continued run keeps the rows of the epochs before the one it starts in. Evaluation runs
    (``trainer.evaluate()``) are not written. Numbers are written exactly (``repr``), other values with ``str``.

    Every ``log_every_n_updates`` optimizer updates (default 50; ``None``: never) a row is appended to
    ``steps_path`` (default: ``<name>_steps.csv`` beside ``path``) with ``update``, ``epoch``,
    ``train_loss_step`` (the main process's mean loss over those updates), ``lr`` (``lr_group_<i>`` per
    param group when there are several) and ``samples_per_second``. The loss is read from the device once
    per N updates, never on the steps in between. A resumed run keeps the rows up to its update count.
    The file stays open while the run lasts; each row is in it when its step ends.
    """

    def __init__(self, path: str | Path, log_every_n_updates: int | None = 50,
                 steps_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.log_every_n_updates = log_every_n_updates
        self.steps_path = Path(steps_path) if steps_path is not None else self.path.with_name(
            f"{self.path.stem}_steps{self.path.suffix or '.csv'}")
        self._steps = StepMetrics(log_every_n_updates) if log_every_n_updates is not None else None
        self._step_columns: list[str] = []
        self._steps_file: BinaryIO | None = None
        self._columns: list[str] = ["epoch"]
        self._rows: list[dict[str, str]] = []
        self._seen: dict[str, int] = {}
        self._active = False

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._active = trainer.is_world_main_process
        if not self._active:
            return
        history = trainer.run_history
        self._seen = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        self._columns, self._rows = ["epoch"], []
        if self._seen and self.path.exists():  # resumed or continued: keep the epochs already done
            self._read_existing(before_epoch=history.current_epoch)
        self._rewrite(keeps_written_rows=bool(self._rows))
        if self._steps is not None:
            self._steps.start(trainer)
            self._start_step_file(keep_up_to=trainer.num_updates if self._seen else 0)

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        steps = self._steps
        if steps is None or not self._active or not steps.due(trainer):
            return
        row = {"update": str(trainer.num_updates), "epoch": str(trainer.run_history.current_epoch)}
        row.update({name: repr(value) for name, value in steps.collect(trainer, batch_output).items()})
        file = self._steps_file
        if file is None:
            file = self._open_step_file(list(row))
        file.write(_line(row.get(name, "") for name in self._step_columns))
        file.flush()  # in the file when the step ends, for whoever follows it

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self._active:
            self._write_row(trainer.run_history)

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self._active:
            self._write_row(trainer.run_history)  # what a run stopped mid-epoch recorded
        self._active = False
        self._close_step_file()

    # ------------------------------------------------------------------ work
    def _write_row(self, history: RunHistory) -> None:
        row: dict[str, str] = {}
        for name in sorted(history.get_metric_names()):
            values = history.get_metric_values(name)
            if len(values) > self._seen.get(name, 0):
                self._seen[name] = len(values)
                row[name] = _format(values[-1])
        if not row:
            return
        row["epoch"] = str(history.current_epoch)
        self._rows.append(row)
        new_columns = [name for name in row if name not in self._columns]
        if new_columns:
            self._columns.extend(new_columns)
            self._rewrite(keeps_written_rows=len(self._rows) > 1)
        else:
            with self.path.open("a", newline="", encoding="utf-8") as file:
                csv.DictWriter(file, self._columns).writerow(row)

    def _rewrite(self, keeps_written_rows: bool) -> None:
        """Replace the file atomically. Where it carries rows written before, they are on the disk before
        the old file goes (fsync); otherwise nothing written could be lost, and waiting for the disk
        (about a millisecond, in the middle of training at the first epoch's end) is left out."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, self._columns)
        writer.writeheader()
        writer.writerows(self._rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            chmod_like_open(temporary)  # mkstemp creates 0o600: readable by others as open() would make it
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as file:
                file.write(buffer.getvalue())
                if keeps_written_rows:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _start_step_file(self, keep_up_to: int) -> None:
        """Start the per-step file afresh, keeping the rows of updates up to ``keep_up_to`` (a resume)."""
        self._close_step_file()  # a run that failed left it open
        kept: list[dict[str, str]] = []
        self._step_columns = []
        if keep_up_to and self.steps_path.exists():
            with self.steps_path.open(newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                self._step_columns = list(reader.fieldnames or [])
                kept = [row for row in reader if int(row.get("update") or 0) <= keep_up_to]
        if not self._step_columns:  # a fresh run: the file appears with its first row
            self.steps_path.unlink(missing_ok=True)
            return
        with self.steps_path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, self._step_columns)
            writer.writeheader()
            writer.writerows(kept)

    def _open_step_file(self, columns: list[str]) -> BinaryIO:
        """The per-step file, open for appending until the run ends: opening and closing it for every row
        cost about as much as the rest of the row (its loss read included) inside a run."""
        self.steps_path.parent.mkdir(parents=True, exist_ok=True)
        file = self._steps_file = self.steps_path.open("ab")
        if not self._step_columns:
            self._step_columns = columns
            file.write(_line(columns))
        return file

    def _close_step_file(self) -> None:
        if self._steps_file is not None:
            self._steps_file.close()
            self._steps_file = None

    def _read_existing(self, before_epoch: int) -> None:
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            columns = list(reader.fieldnames or [])
            rows = [row for row in reader if _epoch_of(row) < before_epoch]
        if columns and columns[0] == "epoch":
            self._columns = columns
            self._rows = [{key: value for key, value in row.items() if key in columns and value} for row in rows]


def _epoch_of(row: dict[str, str]) -> int:
    try:
        return int(row.get("epoch") or 0)
    except ValueError:
        return 0


def _line(cells: Iterable[str]) -> bytes:
    """A CSV line of cells that need no quoting (column names, numbers), ended as ``csv`` ends it."""
    return (",".join(cells) + "\r\n").encode()


def _format(value: object) -> str:
    number = as_number(value)
    return repr(number) if number is not None else str(value)

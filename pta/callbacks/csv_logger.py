"""Writes the run history to a CSV file, one row per epoch, without any dependency."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from typing_extensions import override

from pta._files import chmod_like_open
from pta.callbacks.base import TrainerCallback
from pta.callbacks.trackers import as_number
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
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._columns: list[str] = ["epoch"]
        self._rows: list[dict[str, str]] = []
        self._seen: dict[str, int] = {}
        self._active = False

    @override
    def on_training_run_start(self, trainer: TrainerLike, /, **kwargs: Any) -> None:
        self._active = trainer.is_world_main_process
        if not self._active:
            return
        history = trainer.run_history
        self._seen = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        self._columns, self._rows = ["epoch"], []
        if self._seen and self.path.exists():  # resumed or continued: keep the epochs already done
            self._read_existing(before_epoch=history.current_epoch)
        self._rewrite()

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, /, **kwargs: Any) -> None:
        if self._active:
            self._write_row(trainer.run_history)

    @override
    def on_training_run_end(self, trainer: TrainerLike, /, **kwargs: Any) -> None:
        if self._active:
            self._write_row(trainer.run_history)  # what a run stopped mid-epoch recorded
        self._active = False

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
            self._rewrite()
        else:
            with self.path.open("a", newline="", encoding="utf-8") as file:
                csv.DictWriter(file, self._columns).writerow(row)

    def _rewrite(self) -> None:
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
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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


def _format(value: object) -> str:
    number = as_number(value)
    return repr(number) if number is not None else str(value)

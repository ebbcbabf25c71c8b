"""``save_checkpoint`` is atomic: a write that fails part-way leaves the previous checkpoint whole; a file that
is not a checkpoint is refused with an error that names it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer
from pta.checkpoint import CheckpointError, atomic_torch_save, load_torch_file
from tests._helpers import linear_model, params_of, regression_data


class WriteFailure(Exception):
    pass


class FailsWhilePickled:
    """Raises while ``torch.save`` serialises it: after the output file is opened, before it is complete."""

    @override
    def __reduce__(self) -> str:
        raise WriteFailure("the disk filled up")


def _trained(path: Path) -> DefaultTrainer:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.train(regression_data(16), 1, per_device_batch_size=4)
    trainer.save_checkpoint(path, checkpoint_kwargs={"epoch": 1})
    return trainer


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    trainer = _trained(path)
    saved = params_of(trainer.get_model())
    before = path.read_bytes()
    trainer.train(regression_data(16), 1, per_device_batch_size=4)  # the weights move on

    with pytest.raises(WriteFailure):
        trainer.save_checkpoint(path, checkpoint_kwargs={"epoch": 2, "bad": FailsWhilePickled()})

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind
    restored = DefaultTrainer(linear_model(seed=1), nn.MSELoss(), None, callbacks=())
    assert restored.load_checkpoint(path, load_optimizer=False)["epoch"] == 1
    for got, want in zip(params_of(restored.get_model()), saved, strict=True):
        assert torch.equal(got, want)


def test_a_failed_first_save_leaves_no_file(tmp_path: Path) -> None:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), None, callbacks=())
    with pytest.raises(WriteFailure):
        trainer.save_checkpoint(tmp_path / "model.pt", checkpoint_kwargs={"bad": FailsWhilePickled()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content", "message"), [
    ({"weights": {}}, "lacks model_state_dict: it was not written by save_checkpoint"),
    ([1, 2], "holds a list, expected a dict"),
])
def test_a_torch_file_that_is_no_checkpoint_is_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    trainer = DefaultTrainer(linear_model(), nn.MSELoss(), None, callbacks=())
    with pytest.raises(CheckpointError, match=f"{path}.*{message}"):
        trainer.load_checkpoint(path)


def test_save_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "one" / "model.pt"
    trainer = DefaultTrainer(linear_model(), nn.MSELoss(), None, callbacks=())
    trainer.save_checkpoint(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert set(trainer.load_checkpoint(path)) == {"model_state_dict"}


class NotWeights:
    """A pickled object that is not a tensor or a plain container."""


def test_files_are_read_weights_only_by_default(tmp_path: Path) -> None:
    # load_torch_file also reads training-state files; by default it must not unpickle arbitrary objects
    path = tmp_path / "state.pt"
    torch.save({"model_state_dict": {}, "extra": NotWeights()}, path)
    hint = ("It holds objects that are not plain tensors or containers; if you trust the file, load it with "
            "weights_only=False.")
    with pytest.raises(CheckpointError, match=re.escape(hint)):
        load_torch_file(path)
    assert isinstance(load_torch_file(path, weights_only=False)["extra"], NotWeights)


def test_the_temporary_file_is_renamed_from_the_target_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # a rename is atomic only within one file system: the temporary file must sit beside the target
    renames: list[tuple[Path, Path]] = []
    original = os.replace

    def recording_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        renames.append((Path(source), Path(target)))
        original(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    path = tmp_path / "model.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    assert renames == [(renames[0][0], path)] and renames[0][0].parent == tmp_path
    assert renames[0][0].name.startswith(".model.pt.")  # hidden, named after its target


def test_a_truncated_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save({"model_state_dict": {"w": torch.ones(64)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}: .*The file is truncated or not a "
                                              "torch checkpoint.$"):
        load_torch_file(path)

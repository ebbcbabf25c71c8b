"""A resume checks the state's files and that it was saved by the same kind of run, before training."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta._checksums import file_checksums, verify_checksums
from pta._validation import ConfigurationError
from pta.protocols import TrainerLike
from tests._helpers import manual_seed
from tests.test_resume import StopAfter, _data, _model


class NoStep(TrainerCallback):
    """Fails the test if a resumed run starts training."""

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        raise AssertionError("training started")


def _run(callbacks: list[TrainerCallback], resume_from: Path | None = None, *, batch_size: int = 8,
         accumulation: int = 1, data: TensorDataset | None = None, optimizer: str = "AdamW", hidden: int = 16,
         allow: tuple[str, ...] = ()) -> DefaultTrainer:
    reset_accelerate_state()
    manual_seed(0)
    model = _model() if hidden == 16 else nn.Sequential(nn.Linear(4, hidden), nn.Dropout(0.3), nn.ReLU(),
                                                        nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2) if optimizer == "AdamW" else torch.optim.SGD(
        model.parameters(), lr=1e-2, momentum=0.9)
    trainer = DefaultTrainer(model, nn.MSELoss(), opt, callbacks=callbacks)
    try:
        trainer.train(data if data is not None else _data(), 2, per_device_batch_size=batch_size,
                      gradient_accumulation_steps=accumulation, resume_from=resume_from, resume_allow_changes=allow)
    except KeyboardInterrupt:
        pass
    return trainer


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> Path:
    _run([StopAfter(tmp_path, (3,))])
    return tmp_path / "step_3"


def _longer_data() -> TensorDataset:
    x = torch.randn(60, 4)
    return TensorDataset(x, x.sum(1, keepdim=True))


@pytest.mark.parametrize(("change", "listed"), [
    ({"batch_size": 4}, ["per_device_batch_size: saved 8, now 4"]),
    ({"accumulation": 2}, ["gradient_accumulation_steps: saved 1, now 2"]),
    ({"data": "longer"}, ["dataset_length: saved 52, now 60"]),
    ({"optimizer": "SGD"}, ["optimizer: saved 'torch.optim.adamw.AdamW', now 'torch.optim.sgd.SGD'"]),
    ({"hidden": 8}, ["model_parameters: other shape: 0.weight [16, 4] -> [8, 4]", "optimizer_param_groups"]),
    ({"batch_size": 4, "accumulation": 2, "optimizer": "SGD"},
     ["per_device_batch_size", "gradient_accumulation_steps", "optimizer:"]),
])
def test_a_changed_run_is_refused_before_training_with_every_difference(
    state: Path, change: dict[str, Any], listed: list[str]
) -> None:
    if change.get("data") == "longer":
        change = {**change, "data": _longer_data()}
    with pytest.raises(CheckpointError, match="saved by a different run") as raised:
        _run([NoStep()], state, **change)
    for text in listed:
        assert text in str(raised.value)


def test_changeable_settings_can_be_allowed_explicitly(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"resume_allow_changes=\{'per_device_batch_size'\}"):
        _run([], state, batch_size=4)
    trainer = _run([], state, batch_size=4, allow=("per_device_batch_size",))
    assert trainer.run_history.current_epoch == 3  # finished the run
    assert "changed setting (resume_allow_changes): per_device_batch_size: saved 8, now 4" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="optimizer"):  # not changeable: no override accepts it
        _run([], state, optimizer="SGD", allow=("per_device_batch_size",))
    with pytest.raises(ConfigurationError, match="resume_allow_changes has 'optimizer'"):
        _run([], state, allow=("optimizer",))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("name", ["optimizer.bin", "model.safetensors", "pta_state_0.pt"])
def test_corrupt_or_altered_files_are_detected_before_training(state: Path, damage: str, name: str) -> None:
    path = state / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[-len(data) // 3] ^= 0x10  # one flipped bit inside the tensors
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name} is corrupt"):
        _run([NoStep()], state)


def test_a_missing_file_is_named(state: Path) -> None:
    (state / "optimizer.bin").unlink()
    with pytest.raises(CheckpointError, match="optimizer.bin is missing"):
        _run([NoStep()], state)


def test_the_fingerprint_is_in_the_metadata(state: Path) -> None:
    meta = json.loads((state / "pta_meta.json").read_text())
    assert meta["fingerprint"]["per_device_batch_size"] == 8
    assert meta["fingerprint"]["num_processes"] == 1
    assert meta["fingerprint"]["model_parameters"]["0.weight"] == [16, 4]
    assert set(meta["checksums"]) >= {"model.safetensors", "optimizer.bin", "pta_state_0.pt"}


def test_states_saved_with_sha256_checksums_still_verify(state: Path) -> None:
    """Before CRC-32, training states recorded bare SHA-256 digests: they resume, and are still checked."""
    meta_path = state / "pta_meta.json"
    meta = json.loads(meta_path.read_text())
    assert all(value.startswith(("crc32:", "zip-crc32:")) for value in meta["checksums"].values())
    meta["checksums"] = {name: hashlib.sha256((state / name).read_bytes()).hexdigest() for name in meta["checksums"]}
    meta_path.write_text(json.dumps(meta))
    verify_checksums(state, meta["checksums"])
    meta["checksums"]["optimizer.bin"] = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(CheckpointError, match="optimizer.bin is corrupt"):
        verify_checksums(state, meta["checksums"])


def test_checksums_are_the_crc32_of_each_files_bytes_empty_files_included(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    contents = {"empty.bin": b"", "sub/data.bin": bytes(range(256)) * 4099, "pta_meta.json": b"{}"}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    assert file_checksums(tmp_path) == {  # the metadata file records the others, not itself
        "empty.bin": "crc32:00000000", "sub/data.bin": f"crc32:{zlib.crc32(contents['sub/data.bin']):08x}"}
    (tmp_path / "empty.bin").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="empty.bin is corrupt"):
        verify_checksums(tmp_path, {"empty.bin": "crc32:00000000"})

"""Checksums of a training state's files: CRC-32 in parallel blocks, the same as zlib's over the whole
file; torch.save's archives checked through the CRC-32 of each record; early checksums used only for
unchanged files; files flushed while a save still writes them."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing import BinaryIO

from typing_extensions import ParamSpec, TypeVar, override

import pta._checksums as checksums
from pta import CheckpointError, DefaultTrainer, reset_accelerate_state
from pta._checksums import (WriteBehind, crc32_combine, file_checksums, start_checksum, start_checksums, start_crc32,
                            verify_checksums)
from tests._helpers import manual_seed

P = ParamSpec("P")
T = TypeVar("T")


def test_combined_crcs_are_the_crc_of_the_joined_bytes() -> None:
    rng = random.Random(0)
    for _ in range(300):
        first, second = (rng.randbytes(rng.randrange(0, 5000)) for _ in range(2))
        assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of 1000 bytes, so that a small file is checksummed in several blocks, the last one short."""
    monkeypatch.setattr(checksums, "_BLOCK", 1000)
    return 1000


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 7777])
def test_a_checksum_in_blocks_is_zlibs_over_the_whole_file(tmp_path: Path, small_blocks: int, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with ThreadPoolExecutor(max_workers=3) as pool:
        stamp, pending = start_crc32(path, pool)
        assert pending() == f"crc32:{zlib.crc32(data):08x}"
    assert stamp[:2] == (path.stat().st_ino, size)


def test_a_change_in_any_block_is_found(tmp_path: Path, small_blocks: int) -> None:
    data = bytearray(random.Random(1).randbytes(5500))
    (tmp_path / "data.bin").write_bytes(data)
    recorded = file_checksums(tmp_path)
    for offset in (0, 1500, 5499):
        changed = bytearray(data)
        changed[offset] ^= 0x01
        (tmp_path / "data.bin").write_bytes(changed)
        with pytest.raises(CheckpointError, match="data.bin is corrupt"):
            verify_checksums(tmp_path, recorded)
    (tmp_path / "data.bin").write_bytes(data)
    verify_checksums(tmp_path, recorded)


def _sentinel(value: str, calls: list[str]) -> checksums.Pending:
    def pending() -> str:
        calls.append(value)
        return value
    return pending


def test_an_early_checksum_counts_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    """The early checksums here are deliberately wrong, to show which ones the result takes."""
    (tmp_path / "kept.bin").write_bytes(b"kept")
    (tmp_path / "changed.bin").write_bytes(b"before")
    calls: list[str] = []
    early = {name: (checksums._stamp((tmp_path / name).stat()), _sentinel(f"early {name}", calls))
             for name in ("kept.bin", "changed.bin")}
    (tmp_path / "changed.bin").write_bytes(b"after!")  # another size: another stamp
    with ThreadPoolExecutor(max_workers=2) as pool:
        result = start_checksums(tmp_path, pool, early)()
    assert result == {"changed.bin": f"crc32:{zlib.crc32(b'after!'):08x}", "kept.bin": "early kept.bin"}
    assert sorted(calls) == ["early changed.bin", "early kept.bin"]  # the superseded one is waited for too


def test_a_file_rewritten_with_the_same_size_gets_a_new_stamp(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 100)
    with ThreadPoolExecutor(max_workers=1) as pool:
        before, _pending = start_crc32(path, pool)
        _pending()
        time.sleep(0.05)  # beyond the coarsest tick of file times
        path.write_bytes(b"b" * 100)
        after, _pending = start_crc32(path, pool)
        _pending()
    assert before[1] == after[1] and before != after


def test_the_write_behind_flushes_a_file_while_it_is_still_being_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[int] = []  # the size of the file at each flush

    def flush(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)

    monkeypatch.setattr(checksums, "_flush", flush)
    with ThreadPoolExecutor(max_workers=1) as pool:
        behind = WriteBehind(tmp_path, pool)
        with (tmp_path / "growing.bin").open("wb") as handle:
            handle.write(b"x" * 100)
            handle.flush()
            deadline = time.monotonic() + 10
            while 100 not in flushed:  # the writer is still in the middle of its file
                assert time.monotonic() < deadline, "the file was not flushed while it was written"
                time.sleep(0.001)
            handle.write(b"y" * 100)
        behind.stop()
    time.sleep(0.05)
    count = len(flushed)
    time.sleep(0.05)
    assert len(flushed) == count  # stopped: nothing more is flushed


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open file descriptors through /proc")
def test_the_write_behind_holds_no_descriptor_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharded state has hundreds of files: the writer must not run out of descriptors."""
    flushes = threading.Semaphore(0)

    def flush(fd: int) -> None:
        flushes.release()

    monkeypatch.setattr(checksums, "_flush", flush)
    for index in range(200):
        (tmp_path / f"shard_{index}.bin").write_bytes(b"x")
    before = len(list(Path("/proc/self/fd").iterdir()))
    with ThreadPoolExecutor(max_workers=1) as pool:
        behind = WriteBehind(tmp_path, pool)
        for _ in range(400):  # two passes over the files
            assert flushes.acquire(timeout=10)
        during = len(list(Path("/proc/self/fd").iterdir()))
        behind.stop()
    assert during - before < 10


def test_files_written_are_checksummed_before_the_commit_reads_them(tmp_path: Path) -> None:
    (tmp_path / "done.bin").write_bytes(b"done")
    with ThreadPoolExecutor(max_workers=1) as pool:
        behind = WriteBehind(tmp_path, pool)
        behind.written()
        behind.stop()
        (tmp_path / "later.bin").write_bytes(b"later")
        assert set(behind.early) == {"done.bin"}
        assert start_checksums(tmp_path, pool, behind.early)() == {
            "done.bin": f"crc32:{zlib.crc32(b'done'):08x}", "later.bin": f"crc32:{zlib.crc32(b'later'):08x}"}



def test_one_pool_serves_every_save_and_a_forked_child_gets_its_own(tmp_path: Path) -> None:
    """Threads are started once per process; a child forked after they started (a dataloader worker,
    say) inherits the pool but not its threads, and must not wait for them forever."""
    (tmp_path / "data.bin").write_bytes(b"x" * (3 * 1024))
    expected = {"data.bin": f"crc32:{zlib.crc32(b'x' * (3 * 1024)):08x}"}
    assert file_checksums(tmp_path) == expected
    assert checksums.checksum_pool() is checksums.checksum_pool()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit status is the result
        signal.alarm(20)  # a hang ends the child, and so fails the test
        os._exit(0 if file_checksums(tmp_path) == expected else 1)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0

# ---------------------------------------------------------------------------- torch.save's archives
class _NoReads(Executor):
    """A pool that fails any task: proves that a checksum read no data."""

    @override
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        raise AssertionError(f"a task was submitted: {fn}")


def _saved(path: Path) -> Path:
    torch.save({"weights": torch.arange(300_000, dtype=torch.float32), "step": torch.tensor(7)}, path)
    return path


def _record_data(path: Path, suffix: str) -> tuple[int, int]:
    """Where the data of the (first) record whose name ends with ``suffix`` lies in the archive."""
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith(suffix))
    header = path.read_bytes()[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    return start, start + info.compress_size


def test_a_torch_save_archive_is_checksummed_from_its_directory_without_reading_its_data(tmp_path: Path) -> None:
    path = _saved(tmp_path / "state.pt")
    with _NoReads() as pool:
        _stamp, pending = start_checksum(path, pool)
        recorded = pending()
    assert recorded == _expected_checksum(path)
    assert recorded.startswith("zip-crc32:")
    verify_checksums(tmp_path, {"state.pt": recorded})


def _flip(data: bytearray, at: int) -> None:
    data[at] ^= 0x10


@pytest.mark.parametrize("damage", ["tensor data", "pickle", "directory", "extra field length", "unused header field",
                                    "padding", "truncated", "appended"])
def test_damage_anywhere_in_a_torch_save_archive_is_found(tmp_path: Path, damage: str) -> None:
    path = _saved(tmp_path / "state.pt")
    recorded = file_checksums(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        directory = archive.start_dir
        header = archive.getinfo(f"{archive.namelist()[0].split('/')[0]}/data/0").header_offset
    if damage == "tensor data":
        start, end = _record_data(path, "/data/0")
        _flip(data, (start + end) // 2)
    elif damage == "pickle":
        _flip(data, _record_data(path, "/data.pkl")[0] + 3)
    elif damage == "directory":
        _flip(data, directory + 20)  # the first record's CRC-32 in the directory
    elif damage == "extra field length":
        _flip(data, header + 28)  # its data would be read from elsewhere
    elif damage == "unused header field":
        _flip(data, header + 22)  # the size in the local header (a load reads the directory's)
    elif damage == "padding":
        _flip(data, _record_data(path, "/data/0")[0] - 1)  # the alignment padding before the tensor's data
    elif damage == "truncated":
        del data[-1]
    else:
        data += b"\0"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        verify_checksums(tmp_path, recorded)


def test_every_truncation_and_flipped_byte_of_a_torch_save_archive_is_found(tmp_path: Path) -> None:
    """Exhaustive over a small archive: no byte is outside the checksum or the records' CRC-32s, and a
    damaged archive raises CheckpointError, never what the zip reader raises."""
    path = tmp_path / "state.pt"
    torch.save({"weights": torch.arange(10.0), "step": torch.tensor(3)}, path)
    recorded = file_checksums(tmp_path)
    original = path.read_bytes()
    rng = random.Random(0)
    damaged = [original[:length] for length in range(len(original))]
    damaged += [original[:at] + bytes([original[at] ^ 0x10]) + original[at + 1:] for at in range(len(original))]
    damaged += [bytes(rng.randrange(256) if rng.random() < 0.01 else byte for byte in original) for _ in range(100)]
    for data in damaged:
        if data == original:
            continue
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="state.pt is corrupt"):
            verify_checksums(tmp_path, recorded)

def _with_zip64_offset(data: bytes, offset: int) -> bytes:
    """The archive with its first record's place given in a zip64 field (as torch writes past 4 GB)."""
    archive = bytearray(data)
    entry = archive.find(b"PK\x01\x02")
    name_length, extra_length = struct.unpack_from("<HH", archive, entry + 28)
    struct.pack_into("<H", archive, entry + 30, extra_length + 12)
    struct.pack_into("<I", archive, entry + 42, 0xFFFFFFFF)  # "in the zip64 field"
    archive[entry + 46 + name_length:entry + 46 + name_length] = struct.pack("<HHQ", 1, 8, offset)
    end = archive.rfind(b"PK\x05\x06")  # the directory grew by those 12 bytes
    if struct.unpack_from("<I", archive, end + 12)[0] != 0xFFFFFFFF:
        struct.pack_into("<I", archive, end + 12, struct.unpack_from("<I", archive, end + 12)[0] + 12)
    if (zip64_end := archive.rfind(b"PK\x06\x06")) >= 0:
        struct.pack_into("<Q", archive, zip64_end + 40, struct.unpack_from("<Q", archive, zip64_end + 40)[0] + 12)
    return bytes(archive)


@pytest.mark.parametrize("offset", [0, 2**62, 2**63 - 1, 2**64 - 1])
def test_a_record_placed_anywhere_is_damage_not_a_crash(tmp_path: Path, offset: int) -> None:
    """A flipped bit in a 64-bit record offset points far past the file: the archive is corrupt."""
    path = tmp_path / "state.pt"
    torch.save({"weights": torch.arange(4.0)}, path)
    recorded = file_checksums(tmp_path)
    path.write_bytes(_with_zip64_offset(path.read_bytes(), offset))
    if offset == 0:  # the true place, in the other field: still a valid archive, with other bytes
        assert file_checksums(tmp_path)["state.pt"].startswith("zip-crc32:")
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        verify_checksums(tmp_path, recorded)

def test_archives_recorded_with_a_crc32_of_their_bytes_still_verify(tmp_path: Path) -> None:
    """States saved before zip-crc32 recorded a CRC-32 of the whole archive: they resume, and are still checked."""
    path = _saved(tmp_path / "state.pt")
    recorded = {"state.pt": f"crc32:{zlib.crc32(path.read_bytes()):08x}"}
    verify_checksums(tmp_path, recorded)
    data = bytearray(path.read_bytes())
    _flip(data, len(data) // 2)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        verify_checksums(tmp_path, recorded)

def test_archives_without_record_crcs_and_other_zips_are_read_whole(tmp_path: Path) -> None:
    torch.serialization.set_crc32_options(False)
    try:
        _saved(tmp_path / "no_crcs.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(tmp_path / "compressed.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", "a" * 1000)
    recorded = file_checksums(tmp_path)
    assert recorded == {name: f"crc32:{zlib.crc32((tmp_path / name).read_bytes()):08x}"
                        for name in ("no_crcs.pt", "compressed.zip")}


# ---------------------------------------------------------------------------- in a save
class _Counting:
    """Records each file a checksum starts for, whether pta's own state file was written by then, and
    which files are read whole (a CRC-32 of all their bytes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[tuple[str, bool]] = []
        self.read_whole: list[str] = []
        started, read_whole = checksums.start_checksum, checksums._start_crc32_of

        def counting(path: Path, pool: Executor) -> tuple[checksums.Stamp, checksums.Pending]:
            self.paths.append((path.name, (path.parent / "pta_state_0.pt").exists()))
            return started(path, pool)

        def reading(handle: BinaryIO, pool: Executor) -> checksums.Pending:
            self.read_whole.append(Path(handle.name).name)
            return read_whole(handle, pool)

        monkeypatch.setattr(checksums, "start_checksum", counting)
        monkeypatch.setattr(checksums, "_start_crc32_of", reading)


def _expected_checksum(path: Path) -> str:
    """Computed here without pta: for a torch.save archive, the CRC-32 of all bytes outside its records'
    data (whose own CRC-32s its directory holds); for any other file, the CRC-32 of the file."""
    data = path.read_bytes()
    if not data.startswith(b"PK\x03\x04"):
        return f"crc32:{zlib.crc32(data):08x}"
    outside, position = b"", 0
    for start, end in sorted(_record_data(path, info.filename) for info in zipfile.ZipFile(path).infolist()):
        outside += data[position:start]
        position = end
    return f"zip-crc32:{zlib.crc32(outside + data[position:]):08x}"


def _trained() -> DefaultTrainer:
    reset_accelerate_state()
    manual_seed(0)
    model = nn.Linear(4, 2)
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 2))
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks=[])
    trainer.train(data, 1, per_device_batch_size=8)
    return trainer


@pytest.mark.parametrize("background", [False, True])
def test_a_save_reads_each_file_once_and_records_its_crc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool) -> None:
    """A blocking save checksums Accelerate's files while it writes its own, and the commit does not
    read them again; a background save leaves all of it to its commit."""
    trainer = _trained()
    counting = _Counting(monkeypatch)
    if background:
        trainer.save_training_state_in_background(tmp_path / "state")
        trainer.wait_for_save()
    else:
        trainer.save_training_state(tmp_path / "state")
    meta = json.loads((tmp_path / "state" / "pta_meta.json").read_text())
    files = sorted(meta["checksums"])
    assert {"model.safetensors", "optimizer.bin", "pta_state_0.pt"} <= set(files)
    assert sorted(name for name, _ in counting.paths) == sorted(Path(name).name for name in files)
    early = {name for name, own_state_written in counting.paths if not own_state_written}
    assert early == (set() if background else {"model.safetensors", "optimizer.bin", "random_states_0.pkl"})
    assert counting.read_whole == ["model.safetensors"]  # torch.save's archives: their directories only
    for name in files:
        assert meta["checksums"][name] == _expected_checksum(tmp_path / "state" / name)


def test_a_failed_save_leaves_no_flushing_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trained()

    def fail(self: object, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "half.bin").write_bytes(b"half")
        raise OSError(5, "input/output error")

    monkeypatch.setattr(type(trainer._accelerator), "save_state", fail)
    with pytest.raises(CheckpointError, match="input/output error"):
        trainer.save_training_state(tmp_path / "state")
    deadline = time.monotonic() + 5
    while any(thread.name.startswith("pta-write-behind") for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the write-behind thread outlived its save"
        time.sleep(0.01)
    assert not (tmp_path / ".state.partial").exists()

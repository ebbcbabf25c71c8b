"""pta.state's building blocks, one by one: fsync, the commit helpers, finding ``latest``, cleaning
leftovers, metadata, and RNG snapshots (the end-to-end crash tests are in tests/test_resume_commit.py)."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path, PosixPath
from types import SimpleNamespace
from typing import Any

import numpy
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from typing_extensions import override

import pta.state
from pta import CheckpointError
from pta.state import (
    META_FILE,
    capture_rng,
    clean_leftovers,
    commit_dir,
    fsync_tree,
    is_stateful_iterable,
    old_dir,
    partial_dir,
    rank_file,
    read_meta,
    remove_state,
    resolve_state_dir,
    restore_rng,
    sampler_generator,
    write_meta,
)


def make_state(parent: Path, name: str, mtime: float = 1_000_000.0, **meta: Any) -> Path:
    """A complete state directory (metadata only) whose metadata file has modification time ``mtime``."""
    directory = parent / name
    directory.mkdir(parents=True)
    write_meta(directory, meta)
    os.utime(directory / META_FILE, (mtime, mtime))
    return directory


# ---------------------------------------------------------------------------------- names and fsync
def test_file_names_of_a_state(tmp_path: Path) -> None:
    assert rank_file(tmp_path / "s", 3) == tmp_path / "s" / "pta_state_3.pt"
    assert partial_dir(tmp_path / "s") == tmp_path / ".s.partial"
    assert old_dir(tmp_path / "s") == tmp_path / ".s.old"


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(device, inode) of every file descriptor passed to os.fsync."""
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        stat = os.fstat(fd)
        synced.append((stat.st_dev, stat.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def test_fsync_flushes_the_file_and_the_directory_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    synced = _record_fsyncs(monkeypatch)
    pta.state._fsync(file)
    pta.state._fsync(tmp_path)  # POSIX: a directory's entries (renames) are made durable this way
    assert synced == [_identity(file), _identity(tmp_path)]


def test_fsync_skips_directories_on_windows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    synced = _record_fsyncs(monkeypatch)
    monkeypatch.setattr(os, "name", "nt")  # Windows cannot open a directory; its files are still flushed
    pta.state._fsync(tmp_path)
    pta.state._fsync(file)
    monkeypatch.undo()
    assert synced == [_identity(file)]


def test_fsync_tree_flushes_every_file_before_its_directory_and_directories_deepest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "state"
    for relative in ("a.bin", "sub/b.bin", "sub/deeper/c.bin", "sub/deeper/d.bin", "z/e.bin"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(relative)
    synced: list[Path] = []
    monkeypatch.setattr(pta.state, "_fsync", synced.append)

    fsync_tree(root)

    every = [root, *root.rglob("*")]
    assert sorted(synced) == sorted(every)  # each file and directory exactly once
    for path in every:
        below = [other for other in every if path in other.parents]
        assert all(synced.index(other) < synced.index(path) for other in below), (path, synced)


# ---------------------------------------------------------------------------------- commit and delete
def test_commit_dir_replaces_the_target_and_removes_the_previous_state(tmp_path: Path) -> None:
    target = make_state(tmp_path, "s", num_updates=1)
    (target / "old.bin").write_text("old")
    stale = make_state(tmp_path, ".s.old", num_updates=0)  # from an earlier crash
    partial = make_state(tmp_path, ".s.partial", num_updates=2)
    (partial / "new.bin").write_text("new")

    commit_dir(partial, target)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert sorted(p.name for p in target.iterdir()) == ["new.bin", META_FILE]
    assert read_meta(target)["num_updates"] == 2
    assert not stale.exists()


def test_commit_dir_of_a_first_save(tmp_path: Path) -> None:
    partial = make_state(tmp_path, ".s.partial", num_updates=2)
    commit_dir(partial, tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert read_meta(tmp_path / "s")["num_updates"] == 2


def test_remove_state_deletes_the_state_and_an_earlier_leftover(tmp_path: Path) -> None:
    state = make_state(tmp_path, "s", num_updates=1)
    (state / "sub").mkdir()
    (state / "sub" / "w.bin").write_text("w")
    make_state(tmp_path, "keep", num_updates=2)
    make_state(tmp_path, ".s.deleting")  # a deletion that an earlier crash interrupted
    remove_state(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_a_crash_while_deleting_leaves_no_half_deleted_visible_state(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    state = make_state(tmp_path, "s", num_updates=9)
    keep = make_state(tmp_path, "keep", num_updates=2)

    def crash(path: Path) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(shutil, "rmtree", crash)
        remove_state(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.deleting", "keep"]
    assert resolve_state_dir(tmp_path / "latest") == keep
    clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


# ---------------------------------------------------------------------------------- clean_leftovers
def test_clean_leftovers_restores_stranded_states_and_removes_unfinished_writes(tmp_path: Path) -> None:
    make_state(tmp_path, ".a.old", num_updates=3)  # a crash between the renames: target "a" missing
    make_state(tmp_path, ".b.old", num_updates=1)  # "b" exists: the old one is garbage
    make_state(tmp_path, "b", num_updates=2)
    (tmp_path / ".c.old").mkdir()  # incomplete: no metadata
    (tmp_path / ".d.partial").mkdir()
    (tmp_path / ".e.deleting").mkdir()
    (tmp_path / ".0notes.partial").write_text("a file, not a state: left alone")
    make_state(tmp_path, "f.old", num_updates=4)  # visible user states, whatever their names
    make_state(tmp_path, "g.partial", num_updates=5)
    (tmp_path / ".hidden").mkdir()  # some other hidden directory

    clean_leftovers(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [".0notes.partial", ".hidden", "a", "b", "f.old", "g.partial"]
    assert read_meta(tmp_path / "a")["num_updates"] == 3
    assert read_meta(tmp_path / "b")["num_updates"] == 2


def test_clean_leftovers_of_a_directory_that_does_not_exist_yet(tmp_path: Path) -> None:
    clean_leftovers(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------------------------- metadata
def test_meta_round_trip_adds_the_format(tmp_path: Path) -> None:
    write_meta(tmp_path, {"epoch": 2, "num_updates": 7})
    assert json.loads((tmp_path / META_FILE).read_text()) == {"format": 1, "epoch": 2, "num_updates": 7}
    assert read_meta(tmp_path) == {"format": 1, "epoch": 2, "num_updates": 7}


def test_read_meta_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist or is not a directory"):
        read_meta(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=f"{META_FILE} is missing .*did the save finish"):
        read_meta(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="is corrupt"):
        read_meta(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(CheckpointError, match="has format 99; this pta reads format 1"):
        read_meta(tmp_path)


# ---------------------------------------------------------------------------------- resolve_state_dir
def test_a_named_state_resolves_to_itself_or_to_its_stranded_previous_state(tmp_path: Path) -> None:
    named = make_state(tmp_path, "s", num_updates=1)
    assert resolve_state_dir(str(named)) == named
    stranded = make_state(tmp_path, ".t.old", num_updates=1)  # "t" was renamed away, its successor never arrived
    assert resolve_state_dir(tmp_path / "t") == stranded
    (tmp_path / ".u.old").mkdir()  # incomplete: the caller then reports "u" as missing
    assert resolve_state_dir(tmp_path / "u") == tmp_path / "u"


def test_latest_is_the_state_with_most_updates_then_the_newest(tmp_path: Path) -> None:
    make_state(tmp_path, "many_updates_older", mtime=1_000_000, num_updates=5)
    make_state(tmp_path, "fewer_updates_newer", mtime=2_000_000, num_updates=3)
    assert resolve_state_dir(tmp_path / "latest") == tmp_path / "many_updates_older"
    newest = make_state(tmp_path, "tie_newest", mtime=1_500_000, num_updates=5)
    make_state(tmp_path, "tie_oldest", mtime=500_000, num_updates=5)
    assert resolve_state_dir(tmp_path / "latest") == newest


def test_latest_counts_a_state_without_an_update_count_as_zero_updates(tmp_path: Path) -> None:
    make_state(tmp_path, "no_count", mtime=1_000_000)
    newer = make_state(tmp_path, "zero", mtime=2_000_000, num_updates=0)
    assert resolve_state_dir(tmp_path / "latest") == newer
    make_state(tmp_path, "one", mtime=500_000, num_updates=1)
    assert resolve_state_dir(tmp_path / "latest") == tmp_path / "one"


class ListedHiddenFirst(PosixPath):
    """Lists a directory sorted (hidden names first, like ``ls -a``), so that the test does not depend
    on the file system's order."""

    @override
    def iterdir(self) -> Generator[ListedHiddenFirst, None, None]:
        yield from sorted(super().iterdir())


@pytest.mark.skipif(os.name == "nt", reason="PosixPath")
def test_latest_never_picks_an_unfinished_or_superseded_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pta.state, "Path", ListedHiddenFirst)
    # hidden leftovers with more updates than any real state, each complete (metadata written)
    make_state(tmp_path, ".a.partial", num_updates=9)
    make_state(tmp_path, ".b.deleting", num_updates=9)
    make_state(tmp_path, ".real.old", num_updates=9)  # superseded: "real" exists
    (tmp_path / ".c.old").mkdir()  # incomplete
    make_state(tmp_path, ".d.old", num_updates=1, format=0)  # unreadable
    make_state(tmp_path, "real", num_updates=2)
    (tmp_path / "not_a_state").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert resolve_state_dir(tmp_path / "latest") == tmp_path / "real"

    stranded = make_state(tmp_path, ".gone.old", num_updates=3)  # a crash between the renames of "gone"
    assert resolve_state_dir(tmp_path / "latest") == stranded


def test_latest_without_any_complete_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"no complete pta training state found in {tmp_path / 'missing'}"):
        resolve_state_dir(tmp_path / "missing" / "latest")
    (tmp_path / ".x.partial").mkdir()
    make_state(tmp_path, ".y.partial", num_updates=1)
    with pytest.raises(CheckpointError, match="no complete pta training state found"):
        resolve_state_dir(tmp_path / "latest")


# ---------------------------------------------------------------------------------- RNG snapshots
class Stream(IterableDataset[int]):
    def __init__(self) -> None:
        self.position = 0

    @override
    def __iter__(self) -> Iterator[int]:
        while True:
            self.position += 1
            yield self.position

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def draws(generator: torch.Generator | None = None) -> list[float]:
    """One draw from every RNG a snapshot covers."""
    values = [random.random(), float(torch.rand(1)), float(numpy.random.rand())]
    if generator is not None:
        values.append(float(torch.rand(1, generator=generator)))
    return values


def test_rng_snapshot_restores_every_generator_and_the_stream_position() -> None:
    generator = torch.Generator().manual_seed(5)
    stream = Stream()
    stream.position = 11
    snapshot = capture_rng(generator, stream)
    expected = draws(generator)
    stream.position = 40
    assert draws(generator) != expected

    restore_rng(snapshot, generator, stream)

    assert draws(generator) == expected
    assert stream.position == 11


def test_rng_snapshot_is_plain_data_that_torch_loads_weights_only(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(5)
    torch.save(capture_rng(generator), tmp_path / "rng.pt")
    expected = draws(generator)
    draws(generator)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), generator)
    assert draws(generator) == expected


def test_rng_snapshot_restores_what_it_can_without_a_generator_or_dataset() -> None:
    generator = torch.Generator().manual_seed(5)
    snapshot = capture_rng(generator, Stream())
    expected = draws()
    draws()
    restore_rng(snapshot)  # e.g. the global RNGs only, after an epoch
    assert draws() == expected


def test_a_snapshot_without_the_optional_parts_restores_the_rest() -> None:
    generator = torch.Generator().manual_seed(5)
    stream = Stream()
    snapshot = capture_rng()  # no sampler generator, no dataset
    del snapshot["numpy"]  # taken before NumPy was imported
    expected = [random.random(), float(torch.rand(1))]
    numpy_next = float(numpy.random.rand())
    before = generator.get_state()

    restore_rng(snapshot, generator, stream)

    assert [random.random(), float(torch.rand(1))] == expected
    assert float(numpy.random.rand()) != numpy_next  # NumPy's RNG was left alone
    assert torch.equal(generator.get_state(), before)
    assert stream.position == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_snapshot_restores_cuda_and_a_snapshot_taken_without_cuda_leaves_it_alone() -> None:
    snapshot = capture_rng()
    expected = torch.rand(3, device="cuda")
    restore_rng(snapshot)
    assert torch.equal(torch.rand(3, device="cuda"), expected)

    before = torch.cuda.get_rng_state_all()
    restore_rng({key: value for key, value in snapshot.items() if key != "cuda"})  # saved on a CPU machine
    after = torch.cuda.get_rng_state_all()
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_only_iterable_datasets_with_both_methods_are_stateful() -> None:
    class NoLoad(IterableDataset[int]):
        @override
        def __iter__(self) -> Iterator[int]:
            return iter(())

        def state_dict(self) -> dict[str, int]:
            return {}

    class NoSave(NoLoad):
        state_dict = None  # type: ignore[assignment]  # an attribute that is not a method

        def load_state_dict(self, state: dict[str, int]) -> None:
            pass

    class Plain(IterableDataset[int]):  # a stream that cannot save its position
        @override
        def __iter__(self) -> Iterator[int]:
            return iter(())

    class MapStyle(Dataset[int]):
        @override
        def __getitem__(self, index: int) -> int:
            return index

        def state_dict(self) -> dict[str, int]:
            return {}

        def load_state_dict(self, state: dict[str, int]) -> None:
            pass

    assert is_stateful_iterable(Stream())
    assert not is_stateful_iterable(Plain())
    assert not is_stateful_iterable(NoLoad())
    assert not is_stateful_iterable(NoSave())
    assert not is_stateful_iterable(MapStyle())
    assert not is_stateful_iterable(None)


def test_sampler_generator_finds_the_generator_that_shuffles() -> None:
    synchronized, own = torch.Generator(), torch.Generator()
    shuffled = DataLoader(TensorDataset(torch.zeros(4)), shuffle=True, generator=own)
    sampler = SimpleNamespace(generator=own)  # like DataLoader's RandomSampler
    assert sampler_generator(shuffled) is own
    assert sampler_generator(DataLoader(TensorDataset(torch.zeros(4)))) is None  # sequential: nothing to restore
    accelerate_like = SimpleNamespace(synchronized_generator=synchronized, sampler=sampler)
    assert sampler_generator(accelerate_like) is synchronized
    assert sampler_generator(SimpleNamespace(synchronized_generator=None, sampler=sampler)) is own
    assert sampler_generator(SimpleNamespace(sampler=SimpleNamespace(generator="not a generator"))) is None
    assert sampler_generator(object()) is None

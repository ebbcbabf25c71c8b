"""Checksums of a training state's files, and the write-behind that flushes and checksums them while
a save is still writing.

A state's ``pta_meta.json`` records the CRC-32 of every other file; a resume recomputes them and names
each file that is missing, truncated or altered. CRC-32 finds such accidents as a SHA-256 would (it
does not guard against attackers) at six times the speed. Large files are checksummed in blocks on a
thread pool and the blocks' CRCs combined, so a checksum uses every core.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from pathlib import Path

from pta.checkpoint import CheckpointError
from pta.state import META_FILE

_BLOCK = 16 << 20  # bytes per parallel piece of one file's checksum
_POLL_S = 0.005  # how often the write-behind flushes the files being written

Stamp = tuple[int, int, int, int]
"""What changes with a file's contents: inode, size, modification and change time (ns)."""


# ---------------------------------------------------------------------------- CRC-32 in blocks
_POLY = 0xEDB88320  # CRC-32 (zlib), bit-reflected


def _multiply(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC-32 polynomial, reflected as zlib keeps them."""
    product, bit = 0, 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


_X_2N = [1 << 30]  # x^(2^n) modulo the polynomial, n = 0..31
for _ in range(31):
    _X_2N.append(_multiply(_X_2N[-1], _X_2N[-1]))


def crc32_combine(first: int, second: int, second_length: int) -> int:
    """The CRC-32 of two byte strings one after the other, from their CRCs (zlib's ``crc32_combine``)."""
    shift, n, k = 1 << 31, second_length, 3  # x^(8 * second_length), one bit of the length at a time
    while n:
        if n & 1:
            shift = _multiply(_X_2N[k & 31], shift)
        n >>= 1
        k += 1
    return _multiply(shift, first) ^ second


def _crc32_of_range(view: mmap.mmap, start: int, end: int) -> int:
    with memoryview(view)[start:end] as block:  # released before the map closes
        return zlib.crc32(block)


Pending = Callable[[], str]
"""A checksum being computed: calling it waits for the checksum."""


def _ready(checksum: str) -> Pending:
    return lambda: checksum


def _stamp(status: os.stat_result) -> Stamp:
    return status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def start_crc32(path: Path, pool: Executor) -> tuple[Stamp, Pending]:
    """Start the CRC-32 of ``path`` in blocks on ``pool``; return the file's stamp as read, and the
    checksum pending. Map only complete files: the map cannot follow a file that shrinks.

    A read-only map lets zlib read the pages in place, without copying them into Python objects."""
    with path.open("rb") as handle:
        status = os.fstat(handle.fileno())
        size = status.st_size
        if size == 0:
            return _stamp(status), _ready(f"crc32:{0:08x}")
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    starts = range(0, size, _BLOCK)
    blocks = [pool.submit(_crc32_of_range, view, start, min(start + _BLOCK, size)) for start in starts]

    def result() -> str:
        try:
            crc = 0
            for start, block in zip(starts, blocks):
                crc = crc32_combine(crc, block.result(), min(_BLOCK, size - start))
            return f"crc32:{crc:08x}"
        finally:
            wait(blocks)
            view.close()

    return _stamp(status), result


def checksum_pool() -> ThreadPoolExecutor:
    """zlib releases the GIL while it checksums, so each core can take a block."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="pta-checksum")


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every file under ``directory`` but the metadata, by relative POSIX path."""
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            if relative != META_FILE:
                yield relative, path


def start_checksums(directory: Path, pool: Executor,
                    early: Mapping[str, tuple[Stamp, Pending]] | None = None) -> Callable[[], dict[str, str]]:
    """Start checksumming every file under ``directory`` but the metadata; the function returned waits
    for the checksums, by relative POSIX path. An ``early`` checksum counts only for a file whose stamp
    is still the one it had when that checksum started."""
    early = early or {}
    started: dict[str, Pending] = {}
    for relative, path in sorted(_files(directory)):
        stamped = early.get(relative)
        if stamped is not None and stamped[0] == _stamp(path.stat()):
            started[relative] = stamped[1]
        else:
            started[relative] = start_crc32(path, pool)[1]
    superseded = [pending for relative, (_stamp_then, pending) in early.items() if started.get(relative) is not pending]

    def result() -> dict[str, str]:
        for pending in superseded:  # waited for only to release its map: the file changed since
            pending()
        return {relative: pending() for relative, pending in started.items()}

    return result


def file_checksums(directory: Path) -> dict[str, str]:
    """CRC-32 of every file under ``directory`` but the metadata, by relative POSIX path."""
    with checksum_pool() as pool:
        return start_checksums(directory, pool)()


def _sha256(path: Path) -> str:
    """The checksum that training states saved before CRC-32 record (a bare hex digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(directory: Path, recorded: Mapping[str, str]) -> None:
    """Raise :class:`CheckpointError` naming each file that is missing, truncated or altered."""
    problems: list[str] = []
    with checksum_pool() as pool:
        started: dict[Path, tuple[str, Pending]] = {}
        for relative, expected in recorded.items():
            path = directory / relative
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif expected.startswith("crc32:"):
                started[path] = expected, start_crc32(path, pool)[1]
            else:
                started[path] = expected, _ready(_sha256(path))
        for path, (expected, result) in started.items():
            if result() != expected:
                problems.append(f"{path} is corrupt: its checksum differs from the one saved with it "
                                f"(size now {path.stat().st_size} bytes)")
    if problems:
        raise CheckpointError(f"training state {directory} is damaged:\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------------------- write-behind
_flush = getattr(os, "fdatasync", os.fsync)  # the data, and the size that reads it; the commit fsyncs the rest


class WriteBehind:
    """While a save writes its files, a thread flushes each one to the disk as it grows, so the disk
    works while the writer serialises the next file and the commit finds little left to flush.
    Files the writer is done with (:meth:`written`) are checksummed on ``pool`` meanwhile.

    Both are a head start, never a result on their own: the commit fsyncs every file again, and uses
    an early checksum only for a file whose stamp (inode, size, times) has not changed since."""

    def __init__(self, directory: Path, pool: Executor) -> None:
        self.directory, self.pool = directory, pool
        self.early: dict[str, tuple[Stamp, Pending]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pta-write-behind-{directory.name}", daemon=True)
        self._thread.start()

    def written(self) -> None:
        """Every file in the directory now is complete: start checksumming them."""
        for relative, path in _files(self.directory):
            self.early[relative] = start_crc32(path, self.pool)

    def stop(self) -> None:
        """Stop flushing; return at once (a flush in progress goes on beside the commit's)."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(_POLL_S):
            for _relative, path in list(_files(self.directory)):
                # A file that vanished (renamed into place) or cannot be flushed is the commit's: its
                # own fsync reports what is wrong. Opened for each flush, so that a sharded state's
                # hundreds of files never hold as many descriptors while the writer needs its own.
                with contextlib.suppress(OSError):
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        _flush(fd)
                    finally:
                        os.close(fd)

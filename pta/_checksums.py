"""Checksums of a training state's files, and the write-behind that flushes and checksums them while
a save is still writing.

A state's ``pta_meta.json`` records the CRC-32 of every other file; a resume recomputes them and names
each file that is missing, truncated or altered. CRC-32 finds such accidents as a SHA-256 would (it
does not guard against attackers) at six times the speed. Large files are checksummed in blocks on a
thread pool and the blocks' CRCs combined, so a checksum uses every core.

A file ``torch.save`` wrote (the optimizer's state, pta's own) is a zip archive whose central
directory already holds the CRC-32 of each record's data, computed by torch as it wrote them. Its
checksum (``zip-crc32:``) is the CRC-32 of every byte but the records' data (headers, padding, the
directory: a few kilobytes); a resume checks those bytes against it and each record's data against
the CRC-32 in the directory. Every byte is covered by one or the other, and the save reads no data
torch has checksummed already.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO

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


Blocks = list[tuple[int, Future[int]]]
"""The CRC-32s of consecutive pieces of a range being computed, with the pieces' lengths."""


def _start_blocks(view: mmap.mmap, start: int, end: int, pool: Executor) -> Blocks:
    return [(min(_BLOCK, end - first), _submit(pool, view, first, min(first + _BLOCK, end)))
            for first in range(start, end, _BLOCK)]


def _submit(pool: Executor, view: mmap.mmap, start: int, end: int) -> Future[int]:
    try:
        return pool.submit(_crc32_of_range, view, start, end)
    except RuntimeError:  # the interpreter is exiting and its pools take no work: a commit it waits for goes on
        done: Future[int] = Future()
        done.set_result(_crc32_of_range(view, start, end))
        return done


def _combined(blocks: Blocks) -> int:
    crc = 0
    for length, block in blocks:
        crc = crc32_combine(crc, block.result(), length)
    return crc


def _close_when_done(view: mmap.mmap, blocks: Iterable[tuple[int, Future[int]]]) -> None:
    wait([block for _length, block in blocks])  # a block still reading would keep the map from closing
    view.close()


Pending = Callable[[], str]
"""A checksum being computed: calling it waits for the checksum."""


def _ready(checksum: str) -> Pending:
    return lambda: checksum


def _stamp(status: os.stat_result) -> Stamp:
    return status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def start_checksum(path: Path, pool: Executor) -> tuple[Stamp, Pending]:
    """Start the checksum of a complete file on ``pool``: a zip archive's from the CRC-32s in its
    directory (:func:`zip_checksum`), any other's a CRC-32 of its bytes. Return the file's stamp as
    read, and the checksum pending."""
    with path.open("rb") as handle:
        status = os.fstat(handle.fileno())
        checksum = zip_checksum(handle)
        return _stamp(status), _ready(checksum) if checksum is not None else _start_crc32_of(handle, pool)


def start_crc32(path: Path, pool: Executor) -> tuple[Stamp, Pending]:
    """Start the CRC-32 of ``path`` in blocks on ``pool``; return the file's stamp as read, and the
    checksum pending."""
    with path.open("rb") as handle:
        return _stamp(os.fstat(handle.fileno())), _start_crc32_of(handle, pool)


def _start_crc32_of(handle: BinaryIO, pool: Executor) -> Pending:
    """The CRC-32 of an open, complete file (a map cannot follow a file that shrinks). A read-only map
    lets zlib read the pages in place, without copying them into Python objects; it outlives the handle."""
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return _ready(f"crc32:{0:08x}")
    view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    blocks = _start_blocks(view, 0, size, pool)

    def result() -> str:
        try:
            return f"crc32:{_combined(blocks):08x}"
        finally:
            _close_when_done(view, blocks)

    return result


# ---------------------------------------------------------------------------- zip archives (torch.save)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the lengths of the name and the extra field
_ZIP_SIGNATURE = b"PK\x03\x04"

Layout = list[tuple[zipfile.ZipInfo, int, int]]
"""The records of a zip archive in file order, each with where its data starts and ends."""


def _zip_layout(handle: BinaryIO) -> Layout | None:
    """Where each record's data lies in a zip archive whose records are all stored uncompressed with
    their CRC-32, one after the other; ``None`` for any other file (``torch.save`` with
    ``torch.serialization.set_crc32_options(False)`` records no CRC-32)."""
    handle.seek(0)
    if handle.read(4) != _ZIP_SIGNATURE:
        return None
    try:
        with zipfile.ZipFile(handle) as archive:
            records, directory = archive.infolist(), int(archive.start_dir)  # undocumented, kept since Python 2
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, struct.error):  # what a damaged one raises
        return None
    layout: Layout = []
    end = 0
    for info in sorted(records, key=lambda info: info.header_offset):
        if (info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size
                or (info.CRC == 0 and info.file_size)
                or not end <= info.header_offset <= directory - _LOCAL_HEADER.size):  # a damaged offset points anywhere
            return None
        header = _read(handle, info.header_offset, info.header_offset + _LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            return None
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        end = start + info.compress_size
        if signature != _ZIP_SIGNATURE or end > directory:
            return None
        layout.append((info, start, end))
    return layout


def _read(handle: BinaryIO, start: int, end: int | None = None) -> bytes:
    handle.seek(start)
    return handle.read(-1 if end is None else end - start)


def _outside_records(handle: BinaryIO, layout: Layout) -> str:
    """The CRC-32 of every byte of the archive but its records' data: headers, padding, the directory."""
    crc, position = 0, 0
    for _info, start, end in layout:
        crc = zlib.crc32(_read(handle, position, start), crc)
        position = end
    return f"zip-crc32:{zlib.crc32(_read(handle, position), crc):08x}"


def zip_checksum(handle: BinaryIO) -> str | None:
    """The checksum of a zip archive that :func:`_zip_layout` accepts, from a few kilobytes: the CRC-32
    of all but its records' data. The directory it covers holds the data's own CRC-32s."""
    layout = _zip_layout(handle)
    return None if layout is None else _outside_records(handle, layout)


def _start_zip_check(path: Path, pool: Executor) -> Pending:
    """Recompute a ``zip-crc32:`` checksum: :func:`zip_checksum` if every record's data still has the
    CRC-32 the directory holds, else a value no archive has."""
    with path.open("rb") as handle:
        layout = _zip_layout(handle)
        if layout is None:
            return _ready("zip-crc32:not a zip archive with a CRC-32 for every record")
        checksum = _outside_records(handle, layout)
        if not layout:
            return _ready(checksum)
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    checks = [(info, _start_blocks(view, start, end, pool)) for info, start, end in layout]

    def result() -> str:
        try:
            intact = all(_combined(blocks) == info.CRC for info, blocks in checks)
            return checksum if intact else "zip-crc32:a record's data differs from its CRC-32"
        finally:
            _close_when_done(view, [block for _info, blocks in checks for block in blocks])

    return result


@functools.cache
def checksum_pool() -> ThreadPoolExecutor:
    """This process's checksum threads (zlib releases the GIL while it checksums, so each core can take
    a block). Started at the first use and kept, since starting threads takes milliseconds of a save
    on a busy machine."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="pta-checksum")


if hasattr(os, "register_at_fork"):  # a forked child inherits the pool but not its threads: it makes its own
    os.register_at_fork(after_in_child=checksum_pool.cache_clear)


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
            started[relative] = start_checksum(path, pool)[1]
    superseded = [pending for relative, (_stamp_then, pending) in early.items() if started.get(relative) is not pending]

    def result() -> dict[str, str]:
        for pending in superseded:  # waited for only to release its map: the file changed since
            pending()
        return {relative: pending() for relative, pending in started.items()}

    return result


def file_checksums(directory: Path) -> dict[str, str]:
    """CRC-32 of every file under ``directory`` but the metadata, by relative POSIX path."""
    return start_checksums(directory, checksum_pool())()


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
    pool = checksum_pool()
    started: dict[Path, tuple[str, Pending]] = {}
    for relative, expected in recorded.items():
        path = directory / relative
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif expected.startswith("crc32:"):
            started[path] = expected, start_crc32(path, pool)[1]
        elif expected.startswith("zip-crc32:"):
            started[path] = expected, _start_zip_check(path, pool)
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
            self.early[relative] = start_checksum(path, self.pool)

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

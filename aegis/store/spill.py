"""Append-only spill files: where batches wait, on disk, while the database is away.

File format: a sequence of frames ``<u32 length><u32 crc32><pickle of (table, rows)>``.
Pickle, not JSON, because rows hold Decimal, bytes, UUID, NaN and numpy scalars that must come
back exactly as they went in; the files are private to the data directory, written and read
only by AEGIS. A torn last frame (crash mid-write) fails its length or CRC check and is
skipped with a log line; every earlier frame is intact.

fsync policy: every appended frame is flushed and fsync'ed before ``append`` returns, so a
batch that reached a spill file survives a crash of the process or the machine. Spilling
only happens while the database is down, so the cost is paid only then.

Ownership: a writer holds an exclusive ``flock`` on its open spill file. A file is created
under a ``.tmp`` name, locked, then renamed, so a replayer (which only considers ``*.spill``
and must take the lock first) can never read or delete a file that is still being written.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
SUFFIX = ".spill"


class SpillFile:
    """An open, locked spill file this process appends to."""

    def __init__(self, directory: Path, stem: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{stem}{SUFFIX}"
        tmp = directory / f"{stem}.tmp"
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.rename(tmp, self.path)
        _fsync_dir(directory)
        self.frames = 0
        self.rows = 0

    def append(self, table: str, rows: list[tuple]) -> None:
        """Write one batch durably (fsync) before returning."""
        payload = pickle.dumps((table, rows), protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.frames += 1
        self.rows += len(rows)

    def close(self) -> None:
        """Close and unlock: from now on a replayer may claim the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ClaimedSpill:
    """A spill file locked by this process for replay; ``delete`` once its rows are stored."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.torn_frames = 0

    def batches(self) -> Iterator[tuple[str, list[tuple]]]:
        with open(self.path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                self._torn(offset, len(data))
                return
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                self._torn(offset, len(data))
                return
            table, rows = pickle.loads(payload)
            yield table, rows
            offset = start + length

    def _torn(self, offset: int, size: int) -> None:
        self.torn_frames += 1
        log.error(
            "spill file %s: torn frame at byte %d of %d skipped (crash mid-write)",
            self.path,
            offset,
            size,
        )

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_spills(directory: Path, exclude: Path | None = None) -> list[ClaimedSpill]:
    """Lock every complete spill file in ``directory`` that no live writer holds, oldest first."""
    if not directory.exists():
        return []
    claimed = []
    paths = sorted(directory.glob(f"*{SUFFIX}"), key=_mtime)
    for path in paths:
        if exclude is not None and path == exclude:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another replayer finished it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if not path.exists():  # replayed and deleted between our open and lock
            os.close(fd)
            continue
        claimed.append(ClaimedSpill(path, fd))
    return claimed


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

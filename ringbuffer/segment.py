"""POSIX shared-memory segments opened by name, without ``multiprocessing.resource_tracker``.

``multiprocessing.shared_memory.SharedMemory`` (Python 3.11) registers every segment it opens,
even one merely attached, with the process's resource tracker, which unlinks it when that
process exits and warns about "leaked" segments. For a ring shared by supervised processes
that is wrong twice: a consumer exiting would destroy the producer's ring, and a crashed
owner's ring would vanish before its stale header could be inspected. So segments are opened
with ``_posixshmem`` directly and their lifetime is explicit: the creator unlinks on close,
and a stale segment is reclaimed by the next creator (see ``ring.py``).
"""

from __future__ import annotations

import _posixshmem
import contextlib
import glob
import mmap
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SHM_DIR = "/dev/shm"  # where glibc's shm_open keeps segments on Linux


def _posix_name(name: str) -> str:
    if not name or "/" in name or len(name) > 200:
        raise ValueError(f"segment name must be 1..200 characters without '/', got {name!r}")
    return "/" + name


@dataclass
class Segment:
    """One mapped shared-memory object; ``buf`` is the mapping (writable unless read-only)."""

    name: str
    buf: mmap.mmap
    size: int

    def close(self) -> bool:
        """Unmap; return False when numpy views still export the mapping (it then dies with them)."""
        try:
            self.buf.close()
        except BufferError:
            return False
        return True


def create_segment(name: str, size: int) -> Segment:
    """Create a new zero-filled segment; ``FileExistsError`` when the name is taken."""
    fd = _posixshmem.shm_open(_posix_name(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, size)
        buf = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    os.close(fd)
    return Segment(name=name, buf=buf, size=size)


def publish_segment(
    name: str, size: int, meta_words: int, initialise: Callable[[np.ndarray], None]
) -> Segment:
    """Create a segment, fill its header, then give it ``name`` in one atomic step.

    The segment is built under a temporary name and hard-linked to ``name`` (``link`` fails
    with ``FileExistsError`` when the name is taken), so a segment found under a ring's name
    always has a complete header: a crash mid-creation can never leave a half-written ring.
    """
    _posix_name(name)
    _remove_orphan_temporaries(name)
    temporary = f"{name}.init-{os.getpid()}-{secrets.token_hex(4)}"
    segment = create_segment(temporary, size)
    try:
        meta = np.frombuffer(segment.buf, dtype=np.int64, count=meta_words)
        initialise(meta)
        del meta
        os.link(os.path.join(SHM_DIR, temporary), os.path.join(SHM_DIR, name))
    except BaseException:
        segment.close()
        raise
    finally:
        unlink_segment(temporary)
    segment.name = name
    return segment


def _remove_orphan_temporaries(name: str) -> None:
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(name) + ".init-*")):
        pid = path.rsplit(".init-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def attach_segment(name: str, *, readonly: bool = False) -> Segment:
    """Map an existing segment; ``FileNotFoundError`` when there is none."""
    flags = os.O_RDONLY if readonly else os.O_RDWR
    fd = _posixshmem.shm_open(_posix_name(name), flags, mode=0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise FileNotFoundError(f"shared-memory segment {name!r} is empty")
        access = mmap.ACCESS_READ if readonly else mmap.ACCESS_WRITE
        buf = mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)
    return Segment(name=name, buf=buf, size=size)


def unlink_segment(name: str) -> bool:
    """Remove the name from /dev/shm; return False when it was already gone."""
    try:
        _posixshmem.shm_unlink(_posix_name(name))
    except FileNotFoundError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """Return True when ``pid`` names a running (not zombie) process of this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 3 is the state; the command name in field 2 may hold spaces, so split after ')'.
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")

"""The control block: one 128-byte slot per supervised process in shared memory.

The watchdog creates it and is the only writer of every field except two: each child writes its
own ``heartbeat_ns`` and ``ready_ns``. ``status`` and the metrics endpoint attach read-only.

Why a plain ``/dev/shm`` file and not ``multiprocessing.shared_memory``: in Python 3.11 every
``SharedMemory`` — even a mere attach — registers with the resource tracker, which then unlinks
the segment when *that* process exits (or warns about a "leak"), so a restarted child or a
``status`` call would destroy the watchdog's block. Owning the file directly keeps exactly one
unlinker: the watchdog, on exit.

Memory ordering: every field is a naturally aligned 8-byte (or 4-byte) word written by exactly
one process with a single store, so a reader sees either the old or the new value, never a torn
mix. Readers only need freshness of a few milliseconds (heartbeat deadlines are seconds), so no
fences are used.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

SHM_DIR = "/dev/shm"
MAGIC = int.from_bytes(b"AEGISCTL", "little")
VERSION = 1
HEADER_SIZE = 128
SLOT_SIZE = 128
NAME_BYTES = 16
EXIT_NONE = -(2**31)  # last_exit_code before the first exit


class ControlBlockError(RuntimeError):
    """The control block is missing, stale or of another layout version."""


class ProcessState(IntEnum):
    """Supervisor-style states of one child (values are stored in shared memory)."""

    STOPPED = 0  # not started yet, or stopped on purpose
    STARTING = 1  # spawned, not ready yet
    RUNNING = 2  # ready and heartbeating
    BACKOFF = 3  # exited; waiting for its restart delay
    STOPPING = 4  # asked to stop (SIGTERM sent)
    EXITED = 5  # exited during shutdown
    FATAL = 6  # will not be restarted (boot error)


class KernelState(IntEnum):
    """State of the watchdog itself, in the header."""

    STARTING = 0
    RUNNING = 1
    RELOADING = 2
    STOPPING = 3
    CRASH_LOOP = 4
    FATAL = 5
    STOPPED = 6


HEADER_DTYPE = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "n_slots",
            "kernel_pid",
            "started_wall_ns",
            "started_mono_ns",
            "loop_ns",
            "heartbeat_deadline_ns",
            "kernel_state",
        ],
        "formats": ["<u8", "<u4", "<u4", "<i8", "<i8", "<i8", "<i8", "<i8", "<i4"],
        "offsets": [0, 8, 12, 16, 24, 32, 40, 48, 56],
        "itemsize": HEADER_SIZE,
    }
)

SLOT_DTYPE = np.dtype(
    {
        "names": [
            "name",
            "pid",
            "state",
            "last_exit_code",
            "started_mono_ns",
            "started_wall_ns",
            "heartbeat_ns",
            "ready_ns",
            "restarts",
            "stalls",
            "rss_bytes",
            "cpu_pct",
            "backoff_until_ns",
            "failures",
            "spare_pid",
            "spare_ready",
        ],
        "formats": [
            f"S{NAME_BYTES}",
            "<i8",
            "<i4",
            "<i4",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<f8",
            "<i8",
            "<i8",
            "<i8",
            "<i4",
        ],
        "offsets": [0, 16, 24, 28, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120],
        "itemsize": SLOT_SIZE,
    }
)
_HEARTBEAT_OFFSET = SLOT_DTYPE.fields["heartbeat_ns"][1]
_READY_OFFSET = SLOT_DTYPE.fields["ready_ns"][1]


def _size(n_slots: int) -> int:
    return HEADER_SIZE + SLOT_SIZE * n_slots


def shm_path(name: str) -> str:
    """Filesystem path of a shared-memory segment name."""
    return os.path.join(SHM_DIR, name)


@dataclass(frozen=True)
class SlotView:
    """A consistent-enough copy of one slot, for status, metrics and the watchdog's decisions."""

    name: str
    pid: int
    state: ProcessState
    last_exit_code: int | None
    started_mono_ns: int
    started_wall_ns: int
    heartbeat_ns: int
    ready_ns: int
    restarts: int
    stalls: int
    rss_bytes: int
    cpu_pct: float
    backoff_until_ns: int
    failures: int
    spare_pid: int  # the warm spare waiting to replace this process (0 = none)
    spare_ready: bool  # the spare finished importing and preparing

    def heartbeat_age_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the last heartbeat of the current child (None before the first one)."""
        if self.heartbeat_ns <= 0 or self.heartbeat_ns < self.started_mono_ns:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0.0, (now - self.heartbeat_ns) / 1e9)

    def uptime_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the current child was started (None when not alive)."""
        if self.state not in (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING):
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0.0, (now - self.started_mono_ns) / 1e9)


class ControlBlock:
    """A mapped control block; create it with ``create`` (watchdog) or ``attach``."""

    def __init__(self, name: str, fd: int, mm: mmap.mmap, *, owner: bool, writable: bool) -> None:
        self.name = name
        self._fd = fd
        self._mm = mm
        self.owner = owner
        self.writable = writable
        self.header = np.ndarray((), HEADER_DTYPE, buffer=mm, offset=0)
        n = int(self.header["n_slots"])
        self.slots = np.ndarray((n,), SLOT_DTYPE, buffer=mm, offset=HEADER_SIZE)
        if not writable:
            self.header.flags.writeable = False
            self.slots.flags.writeable = False

    @classmethod
    def create(cls, name: str, process_names: tuple[str, ...]) -> ControlBlock:
        """Create a new block (``FileExistsError`` if one exists) with one slot per process."""
        for n in process_names:
            if len(n.encode()) > NAME_BYTES:
                raise ValueError(f"process name {n!r} longer than {NAME_BYTES} bytes")
        size = _size(len(process_names))
        fd = os.open(shm_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(shm_path(name))
            raise
        # The header must name the slot count before __init__ builds the views.
        hdr = np.ndarray((), HEADER_DTYPE, buffer=mm, offset=0)
        hdr["n_slots"] = len(process_names)
        hdr["version"] = VERSION
        hdr["kernel_pid"] = os.getpid()
        hdr["started_wall_ns"] = time.time_ns()
        hdr["started_mono_ns"] = time.monotonic_ns()
        del hdr
        block = cls(name, fd, mm, owner=True, writable=True)
        for i, n in enumerate(process_names):
            block.slots[i]["name"] = n.encode()
            block.slots[i]["last_exit_code"] = EXIT_NONE
        block.header["magic"] = MAGIC  # last: a reader that sees the magic sees a full block
        return block

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> ControlBlock:
        """Map an existing block; ``ControlBlockError`` if absent or of another layout."""
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            fd = os.open(shm_path(name), flags)
        except FileNotFoundError:
            raise ControlBlockError(f"no control block {name!r}: is the kernel running?") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise ControlBlockError(f"control block {name!r} is truncated ({size} bytes)")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        except BaseException:
            os.close(fd)
            raise
        hdr = np.ndarray((), HEADER_DTYPE, buffer=mm, offset=0)
        magic, version, n = int(hdr["magic"]), int(hdr["version"]), int(hdr["n_slots"])
        del hdr
        if magic != MAGIC or version != VERSION or size < _size(n):
            mm.close()
            os.close(fd)
            raise ControlBlockError(
                f"control block {name!r} has magic {magic:#x} version {version}, "
                f"expected {MAGIC:#x} version {VERSION}"
            )
        return cls(name, fd, mm, owner=False, writable=writable)

    def index(self, process: str) -> int:
        """Slot number of a process name."""
        for i in range(len(self.slots)):
            if self.slots[i]["name"].decode() == process:
                return i
        raise KeyError(process)

    def view(self, i: int) -> SlotView:
        """A copy of slot ``i``."""
        s = self.slots[i].copy()
        code = int(s["last_exit_code"])
        return SlotView(
            name=s["name"].decode(),
            pid=int(s["pid"]),
            state=ProcessState(int(s["state"])),
            last_exit_code=None if code == EXIT_NONE else code,
            started_mono_ns=int(s["started_mono_ns"]),
            started_wall_ns=int(s["started_wall_ns"]),
            heartbeat_ns=int(s["heartbeat_ns"]),
            ready_ns=int(s["ready_ns"]),
            restarts=int(s["restarts"]),
            stalls=int(s["stalls"]),
            rss_bytes=int(s["rss_bytes"]),
            cpu_pct=float(s["cpu_pct"]),
            backoff_until_ns=int(s["backoff_until_ns"]),
            failures=int(s["failures"]),
            spare_pid=int(s["spare_pid"]),
            spare_ready=bool(s["spare_ready"]),
        )

    def views(self) -> list[SlotView]:
        """Copies of every slot, in process-table order."""
        return [self.view(i) for i in range(len(self.slots))]

    @property
    def kernel_pid(self) -> int:
        return int(self.header["kernel_pid"])

    @property
    def kernel_state(self) -> KernelState:
        return KernelState(int(self.header["kernel_state"]))

    def heartbeat_writer(self, process: str) -> HeartbeatWriter:
        """The writer a child uses for its own heartbeat and readiness words."""
        if not self.writable:
            raise ControlBlockError("a heartbeat writer needs a writable attach")
        return HeartbeatWriter(self._mm, HEADER_SIZE + SLOT_SIZE * self.index(process))

    def close(self) -> None:
        """Unmap (the owner also unlinks, so /dev/shm never keeps a dead kernel's block)."""
        if self._mm is None:
            return
        self.header = None  # type: ignore[assignment]
        self.slots = None  # type: ignore[assignment]
        # A live view elsewhere keeps the mapping; the unlink below still frees the name.
        with contextlib.suppress(BufferError):
            self._mm.close()
        os.close(self._fd)
        self._mm = None  # type: ignore[assignment]
        if self.owner:
            unlink(self.name)


class HeartbeatWriter:
    """Writes one child's heartbeat with a single aligned 8-byte store (cheap in hot loops)."""

    def __init__(self, mm: mmap.mmap, slot_offset: int) -> None:
        self._hb = memoryview(mm)[slot_offset + _HEARTBEAT_OFFSET :][:8].cast("q")
        self._ready = memoryview(mm)[slot_offset + _READY_OFFSET :][:8].cast("q")

    def beat(self) -> None:
        """Record "alive now" (monotonic ns, comparable across processes)."""
        self._hb[0] = time.monotonic_ns()

    def mark_ready(self) -> None:
        """Record that start-up finished: the watchdog moves the child to RUNNING."""
        now = time.monotonic_ns()
        self._hb[0] = now
        self._ready[0] = now

    def release(self) -> None:
        """Drop the views so the mapping can be closed."""
        self._hb.release()
        self._ready.release()


def unlink(name: str) -> bool:
    """Remove a segment by name; True if it existed."""
    try:
        os.unlink(shm_path(name))
        return True
    except FileNotFoundError:
        return False

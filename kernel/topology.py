"""What the kernel runs: processes by entry-point name, the rings between them, and naming.

The kernel knows processes only by name: a ``ProcessTable`` lists the entry points
(``"aegis.processes.feed:main"``) and the rings that link them, so tests can run the very same
watchdog over a test workload. Each child's ``main(config: ProcessConfig) -> int`` receives
everything it needs in one picklable, frozen object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aegis.config import Settings
from aegis.records import BAR_DTYPE, INTENT_DTYPE, REPORT_DTYPE


class TopologyError(ValueError):
    """A process table is inconsistent (unknown process in a ring, duplicate names…)."""


PREPARE_RUNTIME = "aegis.processes.runtime:prepare"


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process: its name (title ``aegis: <name>``) and ``module:function``.

    ``prepare`` (``module:function``, no argument) runs in a warm spare before it is needed:
    the place for slow, config-free start-up work such as loading compiled Numba kernels.
    """

    name: str
    entry: str
    prepare: str | None = PREPARE_RUNTIME


@dataclass(frozen=True)
class RingSpec:
    """One ring: its record dtype, its single producer and its consumers (by process name).

    ``after`` pipelines consumers, as pairs ``(consumer, consumer it reads after)``: the first
    sees a record only once the second has committed it (``SequenceBarrier`` bounds that wait).
    """

    name: str
    dtype: np.dtype
    producer: str
    consumers: tuple[str, ...]
    after: tuple[tuple[str, str], ...] = ()

    def dependencies(self, consumer: str) -> tuple[int, ...]:
        """Consumer indices ``consumer`` reads after."""
        return tuple(self.consumers.index(b) for a, b in self.after if a == consumer)

    def followers(self, consumer: str) -> tuple[int, ...]:
        """Consumer indices that read after ``consumer`` (its commits wake them)."""
        return tuple(self.consumers.index(a) for a, b in self.after if b == consumer)


@dataclass(frozen=True)
class ProcessTable:
    """The processes (start order = graceful-stop order, upstream first) and their rings."""

    processes: tuple[ProcessSpec, ...]
    rings: tuple[RingSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.processes]
        if not names or len(set(names)) != len(names):
            raise TopologyError(f"process names must be unique and non-empty: {names}")
        for spec in self.processes:
            for target in filter(None, (spec.entry, spec.prepare)):
                module, sep, func = target.partition(":")
                if not (module and sep and func):
                    raise TopologyError(f"{spec.name}: {target!r} is not 'module:function'")
        ring_names = [r.name for r in self.rings]
        if len(set(ring_names)) != len(ring_names):
            raise TopologyError(f"ring names must be unique: {ring_names}")
        for ring in self.rings:
            unknown = {ring.producer, *ring.consumers} - set(names)
            if unknown:
                raise TopologyError(f"ring {ring.name} names unknown processes {sorted(unknown)}")
            if not ring.consumers or len(set(ring.consumers)) != len(ring.consumers):
                raise TopologyError(f"ring {ring.name} needs distinct consumers")
            for pair in ring.after:
                if len(set(pair)) != 2 or not set(pair) <= set(ring.consumers):
                    raise TopologyError(
                        f"ring {ring.name}: after {pair} needs two of its consumers"
                    )

    def names(self) -> tuple[str, ...]:
        """Process names in start order."""
        return tuple(p.name for p in self.processes)


DEFAULT_TABLE = ProcessTable(
    processes=(
        ProcessSpec("feed", "aegis.processes.feed:main"),
        ProcessSpec("brain", "aegis.processes.brain:main"),
        ProcessSpec("executor", "aegis.processes.executor:main"),
    ),
    rings=(
        # The executor reads a bar after the brain has decided on it, so the intents the bar
        # caused are already on the intents ring: entries are never applied a bar late.
        RingSpec(
            "market",
            BAR_DTYPE,
            producer="feed",
            consumers=("brain", "executor"),
            after=(("executor", "brain"),),
        ),
        RingSpec("intents", INTENT_DTYPE, producer="brain", consumers=("executor",)),
        RingSpec("reports", REPORT_DTYPE, producer="executor", consumers=("brain",)),
    ),
)


def home_tag(home: Path) -> str:
    """A short stable tag of a kernel home, unique per home path, for shared-memory names."""
    resolved = str(Path(home).expanduser().resolve())
    return hashlib.sha256(resolved.encode()).hexdigest()[:12]


def control_name(home: Path) -> str:
    """Shared-memory name of the control block of the kernel running on ``home``."""
    return f"aegis-{home_tag(home)}-control"


def ring_shm_name(home: Path, ring: str) -> str:
    """Shared-memory name of one ring of the kernel running on ``home``."""
    return f"aegis-{home_tag(home)}-ring-{ring}"


@dataclass(frozen=True)
class RingBinding:
    """How one process uses one ring: as its producer, or as consumer number ``consumer_index``."""

    ring: str
    shm_name: str
    dtype: np.dtype
    consumer_index: int | None  # None = this process is the producer
    after: tuple[int, ...] = ()  # consumer indices this consumer reads after
    wakes: tuple[int, ...] = ()  # consumer indices that read after this one


@dataclass(frozen=True)
class ProcessConfig:
    """Everything a child gets at start (pickled by the spawn context): load once, never reread."""

    settings: Settings
    name: str
    slot: int
    control_name: str
    kernel_pid: int
    rings: tuple[RingBinding, ...] = field(default=())

    def binding(self, ring: str, *, producer: bool) -> RingBinding:
        """The binding of ``ring`` in the requested role; raise ``TopologyError`` if absent."""
        for b in self.rings:
            if b.ring == ring and (b.consumer_index is None) == producer:
                return b
        role = "producer" if producer else "consumer"
        raise TopologyError(f"{self.name} is not a {role} of ring {ring!r}")


def bindings_for(table: ProcessTable, home: Path, process: str) -> tuple[RingBinding, ...]:
    """The rings ``process`` produces to or consumes from, with its consumer index."""
    out = []
    for ring in table.rings:
        shm = ring_shm_name(home, ring.name)
        if ring.producer == process:
            out.append(RingBinding(ring.name, shm, ring.dtype, None))
        if process in ring.consumers:
            out.append(RingBinding(ring.name, shm, ring.dtype, ring.consumers.index(process),
                                   ring.dependencies(process), ring.followers(process)))  # fmt: skip
    return tuple(out)

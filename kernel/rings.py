"""The kernel's rings: created (and finally unlinked) by the watchdog, inspected by name.

The watchdog owns every ring so that a ring outlives any one child: a restarted producer
resumes at the cursor and a restarted consumer at its committed sequence, both kept in the
ring's shared memory. A published topology file (``<home>/run/topology.json``) lets
``aegis-kernel status`` find the rings and name their consumers without the process table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from aegis.config import Settings
from aegis.kernel.topology import ProcessTable, ring_shm_name
from aegis.ringbuffer import Ring, RingError, RingStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerLag:
    """One consumer of one ring, named by its process."""

    ring: str
    consumer: str
    index: int
    sequence: int
    lag: int
    heartbeat_age_s: float | None


@dataclass(frozen=True)
class RingReport:
    """One ring as status and metrics show it."""

    ring: str
    capacity: int
    cursor: int
    stalls: int  # times the producer found the ring full
    consumers: tuple[ConsumerLag, ...]


def topology_path(home: Path) -> Path:
    return Path(home) / "run" / "topology.json"


def _report(ring: str, names: list[str], stats: RingStats) -> RingReport:
    consumers = tuple(
        ConsumerLag(
            ring,
            names[c.index] if c.index < len(names) else str(c.index),
            c.index,
            c.sequence,
            c.lag,
            c.heartbeat_age_s,
        )
        for c in stats.consumers
    )
    return RingReport(ring, stats.capacity, stats.cursor, stats.stalls, consumers)


class RingHost:
    """Create the table's rings in the watchdog, report on them, unlink them at the end."""

    def __init__(self) -> None:
        self._rings: dict[str, Ring] = {}
        self._consumers: dict[str, list[str]] = {}
        self._topology: Path | None = None

    def create(self, table: ProcessTable, settings: Settings) -> None:
        """Create one ring per ``RingSpec`` (reclaiming stale ones of a dead kernel)."""
        for spec in table.rings:
            name = ring_shm_name(settings.home, spec.name)
            self._rings[spec.name] = Ring.create(
                name, spec.dtype, settings.ring_capacity, len(spec.consumers)
            )
            self._consumers[spec.name] = list(spec.consumers)
        self._topology = topology_path(settings.home)
        self._topology.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "kernel_pid": os.getpid(),
            "rings": [
                {
                    "ring": s.name,
                    "shm": ring_shm_name(settings.home, s.name),
                    "producer": s.producer,
                    "consumers": list(s.consumers),
                }
                for s in table.rings
            ],
        }
        tmp = self._topology.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self._topology)

    def inspect(self) -> list[RingReport]:
        """Snapshots of every ring (from the watchdog's own mappings)."""
        return [_report(n, self._consumers[n], r.stats()) for n, r in self._rings.items()]

    def close(self) -> None:
        """Unlink every ring and the topology file."""
        for ring in self._rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        self._rings.clear()
        if self._topology is not None:
            self._topology.unlink(missing_ok=True)
            self._topology = None


def inspect_home(home: Path) -> list[RingReport]:
    """Read-only snapshots of the rings of the kernel on ``home`` (empty if none published)."""
    try:
        doc = json.loads(topology_path(home).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for entry in doc.get("rings", []):
        try:
            stats = Ring.inspect(entry["shm"])
        except (OSError, RingError) as exc:
            log.debug("ring %s not inspectable: %s", entry.get("ring"), exc)
            continue
        out.append(_report(entry["ring"], entry["consumers"], stats))
    return out

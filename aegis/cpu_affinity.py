"""Which CPUs the kernel's processes run on (``AEGIS_CPU_AFFINITY``).

At each minute's close the feed, the brain and the executor all work on the same burst, while
PostgreSQL, Redis and whatever else the machine runs want the same CPUs. A process the
scheduler moves between CPUs, or wakes on one whose caches another process just filled,
starts each burst cold. Pinning keeps each of them on CPUs of its own: ``auto`` gives the brain
(the heaviest per burst) one CPU and the feed and the executor (busy at different moments of a
burst: the feed while frames arrive, the executor once intents are published) another; with
three CPUs or more each gets its own. Nothing else is pinned, so PostgreSQL, Redis, a training
job and the warm spares still use every CPU. On the 2-CPU machine of the benchmarks the
WebSocket → executor p99 of ``benchmarks/bench_e2e.py``'s 120 s latency session was 5.8–7.1 ms
pinned in five of six runs (the sixth 12.0 ms; p50 3.6–3.8 ms) and 8.3 ms unpinned; pinning
only the brain, or the feed with the brain, or freeing the feed were all worse in single runs,
and the executor on the brain's CPU in four runs on two machines (7.4–13.6 ms).

``off`` leaves scheduling to the OS; an explicit map (``feed=0,brain=1,executor=0``) pins the
processes it names to those CPU numbers (``+`` joins several: ``brain=2+3``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PINNED = ("feed", "brain", "executor")


class AffinityError(ValueError):
    """A malformed ``AEGIS_CPU_AFFINITY`` value."""


def parse_affinity(spec: str) -> str | Mapping[str, frozenset[int]]:
    """``"auto"``, ``"off"`` or {process: CPUs}; ``AffinityError`` names what is wrong."""
    text = spec.strip().lower()
    if text in ("auto", "off"):
        return text
    plan: dict[str, frozenset[int]] = {}
    for part in text.split(","):
        name, sep, cpus = part.partition("=")
        name = name.strip()
        if not sep or name not in PINNED:
            raise AffinityError(
                f"{part.strip()!r}: expected auto, off or process=cpu pairs for "
                f"{', '.join(PINNED)} (e.g. feed=0,brain=1,executor=0)"
            )
        if name in plan:
            raise AffinityError(f"{name} is given twice")
        try:
            numbers = frozenset(int(c) for c in cpus.split("+"))
        except ValueError:
            raise AffinityError(f"{part.strip()!r}: CPUs must be numbers joined by +") from None
        if any(n < 0 for n in numbers):
            raise AffinityError(f"{part.strip()!r}: CPU numbers cannot be negative")
        plan[name] = numbers
    return plan


def cpus_for(process: str, spec: str, available: Iterable[int]) -> frozenset[int] | None:
    """The CPUs ``process`` should be pinned to, or None to leave it to the OS.

    ``available``: the CPUs this kernel may use (its affinity at start). An explicit CPU that
    is not available is an ``AffinityError``.
    """
    plan = parse_affinity(spec)
    cpus = sorted(available)
    if plan == "off" or process not in PINNED:
        return None
    if plan == "auto":
        if len(cpus) < 2:
            return None
        if len(cpus) == 2:
            return frozenset({cpus[1]} if process == "brain" else {cpus[0]})
        return frozenset({cpus[PINNED.index(process)]})
    wanted = plan.get(process)
    if wanted is None:
        return None
    missing = wanted - set(cpus)
    if missing:
        raise AffinityError(f"{process}: CPU {sorted(missing)} is not available (have {cpus})")
    return wanted

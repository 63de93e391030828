"""LMAX-Disruptor-style ring buffer in POSIX shared memory: one producer, 1..N multicast consumers.

Usage::

    ring = Ring.create("aegis-bars", BAR_DTYPE, capacity=4096, consumers=2)  # owner
    producer = ring.producer()
    rec = producer.slot[0]; rec["close"] = 1.5; producer.publish(timeout=1.0)

    ring = Ring.attach("aegis-bars", BAR_DTYPE)          # any other process, by name
    consumer = ring.consumer(0)
    batch = consumer.wait_for(timeout=1.0)                # zero-copy view, maybe empty
    handle(batch); consumer.commit()                      # one store per batch

    Ring.inspect("aegis-bars")                            # read-only RingStats, no dtype

Modules: ``layout`` (offsets, header), ``segment`` (shared memory without resource_tracker),
``kernels_nb`` (the Numba hot paths and the memory-ordering argument), ``aot`` (their
ahead-of-time build), ``kernels`` (which of the two a process runs), ``sequence``, ``barrier``,
``wait`` (BusySpin/Yielding/Sleeping/Blocking), ``wake`` (kernel wake-ups), ``producer``,
``consumer``, ``read_ahead`` (handle records before committing them), ``stats``, ``ring``.
This package imports nothing else of AEGIS.

Importing the package, creating, attaching, inspecting and unlinking a ring never load the
kernels: the watchdog and ``aegis-kernel status`` only do that. ``Producer``, ``Consumer``,
``Sequence`` and the wait strategies, which run the kernels, are imported on first use
(``ring.producer()``, ``ring.consumer()`` or naming them here). The kernels come from the
ahead-of-time module when it is built (``python -m aegis.ringbuffer.aot``; no Numba in the
process), else from Numba's JIT (~100 MB more RSS): see ``kernels``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import RingError, RingFull, RingInUseError, RingLayoutError
from .layout import LAYOUT_VERSION, MAX_CONSUMERS, dtype_fingerprint
from .read_ahead import ReadAhead
from .ring import Ring
from .stats import ConsumerStats, RingStats

if TYPE_CHECKING:
    from .consumer import Consumer
    from .producer import Producer
    from .sequence import Sequence
    from .wait import (
        DEFAULT_WAIT,
        BlockingWait,
        BusySpinWait,
        SleepingWait,
        WaitStrategy,
        YieldingWait,
    )

# Names whose modules load the kernels: resolved on first access (PEP 562).
_LAZY = {
    "Consumer": "consumer",
    "Producer": "producer",
    "Sequence": "sequence",
    "DEFAULT_WAIT": "wait",
    "BlockingWait": "wait",
    "BusySpinWait": "wait",
    "SleepingWait": "wait",
    "WaitStrategy": "wait",
    "YieldingWait": "wait",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_WAIT",
    "LAYOUT_VERSION",
    "MAX_CONSUMERS",
    "BlockingWait",
    "BusySpinWait",
    "Consumer",
    "ConsumerStats",
    "Producer",
    "ReadAhead",
    "Ring",
    "RingError",
    "RingFull",
    "RingInUseError",
    "RingLayoutError",
    "RingStats",
    "Sequence",
    "SleepingWait",
    "WaitStrategy",
    "YieldingWait",
    "dtype_fingerprint",
]

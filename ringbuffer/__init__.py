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
``kernels`` (Numba hot paths and the memory-ordering argument), ``sequence``, ``barrier``,
``wait`` (BusySpin/Yielding/Sleeping/Blocking), ``wake`` (kernel wake-ups), ``producer``,
``consumer``, ``stats``, ``ring``. This package imports nothing else of AEGIS.
"""

from .consumer import Consumer
from .errors import RingError, RingFull, RingInUseError, RingLayoutError
from .layout import LAYOUT_VERSION, MAX_CONSUMERS, dtype_fingerprint
from .producer import Producer
from .ring import Ring
from .sequence import Sequence
from .stats import ConsumerStats, RingStats
from .wait import DEFAULT_WAIT, BlockingWait, BusySpinWait, SleepingWait, WaitStrategy, YieldingWait

__all__ = [
    "DEFAULT_WAIT",
    "LAYOUT_VERSION",
    "MAX_CONSUMERS",
    "BlockingWait",
    "BusySpinWait",
    "Consumer",
    "ConsumerStats",
    "Producer",
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

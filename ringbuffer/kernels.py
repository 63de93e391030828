"""The ring's kernels as plain callables: compiled ahead of time when built, else by Numba's JIT.

Both backends run the code of ``kernels_nb`` (the one source, and the memory-ordering argument):

* ``aot``: the extension module ``_kernels_aot`` built by ``python -m aegis.ringbuffer.aot``
  (``make`` builds it). Nothing of Numba or llvmlite is loaded, which saves ~100 MB of private
  RSS per process. Used only while its embedded digest matches the installed sources.
* ``jit``: ``kernels_nb`` compiled by Numba (loaded from its on-disk cache), each kernel called
  through its compiled entry point, skipping the dispatcher's type resolution.

``AEGIS_RING_KERNELS`` picks one: ``auto`` (default) takes ``aot`` when it is built and current,
else logs why not and takes ``jit``; ``aot`` raises ``ImportError`` instead of falling back;
``jit`` never looks for the module. The choice is made once, when this module is first
imported (the first ``ring.producer()``/``ring.consumer()`` of a process).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from . import aot

log = logging.getLogger(__name__)

ENV_VAR = "AEGIS_RING_KERNELS"
MODES = aot.MODES


@dataclass(frozen=True)
class RingKernels:
    """One backend's kernels (signatures: ``kernels_nb``)."""

    backend: str  # "aot" or "jit"
    load_acquire: Callable[[int, int], int]
    store_release: Callable[[int, int, int], None]
    try_publish: Callable[[int, int], int]
    publish_batch: Callable[[int, int, int, int], tuple[int, int]]
    spin_until: Callable[[int, int, int, int], int]
    arm_wake: Callable[[int, int, int, int], int]
    commit_sequence: Callable[[int, int, int], int]


def load(mode: str = "auto", digest: int | None = None) -> RingKernels:
    """Return the kernels of ``mode`` (see the module docstring).

    ``digest`` is the source digest the ahead-of-time module must report (default: the digest
    of the installed sources, ``aot.source_digest()``).
    """
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}: expected one of {', '.join(MODES)}")
    module = aot.RING.choose(mode, digest, f"{ENV_VAR}=aot but the ring's ahead-of-time kernels",
                             log, "ring kernels", "aegis.ringbuffer.aot")  # fmt: skip
    if module is None:
        return _jit()
    return RingKernels("aot", **{name: getattr(module, name) for name in aot.KERNEL_NAMES})


def _jit() -> RingKernels:
    from . import kernels_nb

    return RingKernels(
        "jit",
        **{name: _entry_point(getattr(kernels_nb, f"{name}_nb")) for name in aot.KERNEL_NAMES},
    )


def _entry_point(dispatcher):
    """Return the compiled CPython entry of a one-signature kernel (no dispatcher overhead)."""
    try:
        return dispatcher.overloads[dispatcher.signatures[0]].entry_point
    except (AttributeError, IndexError, KeyError):  # a Numba without that internal: still right
        return dispatcher


KERNELS = load(os.environ.get(ENV_VAR, "auto"))
BACKEND = KERNELS.backend
load_acquire = KERNELS.load_acquire
store_release = KERNELS.store_release
try_publish = KERNELS.try_publish
publish_batch = KERNELS.publish_batch
spin_until = KERNELS.spin_until
arm_wake = KERNELS.arm_wake
commit_sequence = KERNELS.commit_sequence

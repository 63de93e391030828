"""First code a spawned child runs: arm the dead man's switch, get warm, run when told.

``PR_SET_PDEATHSIG`` makes Linux send SIGTERM to this process the moment the watchdog dies —
even by SIGKILL — and the runtime turns SIGTERM into a graceful stop. It is armed before anything
else; if the watchdog died before that (the race the man page warns about), the parent pid has
already changed and the child leaves at once. The runtime also polls the parent pid, for kernels
without prctl.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import setproctitle

from aegis.kernel import exitcodes
from aegis.kernel.topology import ProcessConfig, ProcessSpec

PR_SET_PDEATHSIG = 1
SPARE_READY = "ready"


def arm_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` when our parent dies; False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def load_entry(entry: str) -> Callable[[ProcessConfig], int]:
    """Import ``"package.module:function"``."""
    module_name, _, func = entry.partition(":")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in func.split("."):
        target = getattr(target, part)
    return target


def standby(spec: ProcessSpec, kernel_pid: int, orders: Connection) -> None:
    """Target of every spawned child: get ready, wait for a ``ProcessConfig``, then run.

    A child is spawned *before* it is needed (a warm spare): it imports its entry point and
    runs the spec's ``prepare`` hook (Numba kernels loaded from cache), then blocks on
    ``orders``. The watchdog activates it by sending the config, so a restart costs a pipe
    message instead of an interpreter start, imports and cache loads (~1-3 s on a busy box).
    The spare says ``SPARE_READY`` on ``orders`` once prepared. EOF on ``orders`` (the
    watchdog closed it or died) means: leave without running.
    """
    arm_parent_death_signal(signal.SIGTERM)
    if os.getppid() != kernel_pid:
        os._exit(exitcodes.CLEAN)  # the watchdog is already gone: never run unsupervised
    # Ctrl-C in a terminal reaches the whole process group; the watchdog orders the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setproctitle.setproctitle(f"aegis: {spec.name} (spare)")
    failure: BaseException | None = None
    try:
        main = load_entry(spec.entry)
    except Exception as exc:  # reported when activated: a spare never dies on its own
        failure = exc
    if failure is None and spec.prepare:
        try:
            load_entry(spec.prepare)()
        except Exception as exc:  # only an optimisation: the run itself will meet any real fault
            print(f"aegis: {spec.name}: prepare {spec.prepare!r} failed: {exc!r}", file=sys.stderr)
    with contextlib.suppress(OSError):  # a cold start: the watchdog sent the config and left
        orders.send(SPARE_READY)
    try:
        config = orders.recv()
    except (EOFError, OSError):
        os._exit(exitcodes.CLEAN)
    orders.close()
    if failure is not None:
        print(f"aegis: {spec.name}: cannot load {spec.entry!r}: {failure!r}", file=sys.stderr)
        os._exit(exitcodes.BOOT_ERROR)
    if os.getppid() != config.kernel_pid:
        os._exit(exitcodes.CLEAN)
    code = main(config)
    # The runtime has already closed rings, pools and files. Leave without the interpreter's
    # teardown, which in a process holding numba/LLVM takes ~0.5 s: time during which the
    # watchdog would see a finished child as still alive (and a restart would wait for it).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code) if code is not None else exitcodes.CLEAN)

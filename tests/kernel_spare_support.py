"""Entry points of warm spares in ``tests/test_kernel_memory.py`` (importable by spawned children)."""

from __future__ import annotations

import time


def main(config) -> int:
    return 0


def prepare() -> None:
    time.sleep(0.3)  # long enough for the watchdog to see the spare preparing


def prepare_forever() -> None:
    time.sleep(600)

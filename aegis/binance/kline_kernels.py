"""The kline batch parser as a plain callable: compiled ahead of time when built, else by
Numba's JIT. ``python -m aegis.binance.kline_kernels`` builds it (``make`` does).

The feed runs it on every socket read. Compiled ahead of time, the feed process never loads
Numba or LLVM (~100 MB of RSS, in the feed and in its warm spare); the module is used only while
its digest matches the installed sources (see ``aegis.ringbuffer.aot``), else the JIT compiles
the same source and a line says why.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from aegis.ringbuffer.aot import MODES, AotModule

log = logging.getLogger(__name__)

KLINE_AOT = AotModule(
    name="_kline_aot",
    package="aegis.binance",
    package_dir=Path(__file__).resolve().parent,
    sources=("_kline_nb.py", "kline_layout.py", "kline_kernels.py"),
    kernels="aegis.binance._kline_nb",
    exports=("parse_klines",),
)


def load(mode: str = "auto", digest: int | None = None) -> Callable[..., int]:
    """``parse_klines``: the ahead-of-time build (``aot``), the JIT (``jit``) or the first that
    works (``auto``, the default; it says why when it takes the JIT). ``digest``: the one the
    built module must report (default: the installed sources')."""
    if mode not in MODES:
        raise ValueError(f"kline kernels mode {mode!r}: expected one of {', '.join(MODES)}")
    module = KLINE_AOT.choose(mode, digest, "the kline parser's ahead-of-time kernels", log,
                              "kline parser", "aegis.binance.kline_kernels")  # fmt: skip
    if module is not None:
        return module.parse_klines
    from aegis.binance._kline_nb import parse_klines_nb

    return parse_klines_nb


if __name__ == "__main__":
    sys.exit(KLINE_AOT.main("kline_kernels", sys.argv[1:]))

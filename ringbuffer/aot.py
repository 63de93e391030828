"""Ahead-of-time build of the ring kernels: ``python -m aegis.ringbuffer.aot``.

``numba.pycc`` compiles the kernels of ``kernels_nb`` (their one source, with their explicit
int64 signatures) into the extension module ``_kernels_aot`` next to this file. A process that
imports it runs the kernels without loading Numba or llvmlite, which cost ~100 MB of private RSS
per process; the feed, the executor and their warm spares need nothing else of Numba.

The module also exports ``source_digest()``: a digest of the files the kernels are built from
(``SOURCES``) and of the Numba version that compiled them. ``kernels`` runs the module only
while that digest equals the one of the installed sources, so a binary left behind by an edit
of the kernels or of the layout offsets is never run: the JIT kernels are used instead.

Importing this module does not import Numba; building does (and needs a C compiler).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MODULE_NAME = "_kernels_aot"
PACKAGE_DIR = Path(__file__).resolve().parent
# Everything the compiled code depends on: the kernels, the word offsets they read at compile
# time, and this builder (which picks the exported names).
SOURCES = ("kernels_nb.py", "layout.py", "aot.py")
# Exported name -> ``kernels_nb.<name>_nb``, each with exactly one explicit signature.
KERNEL_NAMES = (
    "load_acquire",
    "store_release",
    "try_publish",
    "publish_batch",
    "spin_until",
    "arm_wake",
    "commit_sequence",
)


class AotBuildError(RuntimeError):
    """The ahead-of-time module could not be built (no compiler, no setuptools, bad kernel)."""


def numba_version() -> str:
    """The installed Numba's version, read from its metadata (Numba itself is not imported)."""
    try:
        return version("numba")
    except PackageNotFoundError:
        return "none"


def source_digest(source_dir: Path = PACKAGE_DIR, numba: str | None = None) -> int:
    """Return a signed 64-bit digest of ``SOURCES`` in ``source_dir`` and the Numba version."""
    h = hashlib.blake2b(digest_size=8)
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (source_dir / name).read_bytes() + b"\0")
    h.update(b"numba " + (numba_version() if numba is None else numba).encode())
    return int.from_bytes(h.digest(), "little", signed=True)


def build(output_dir: Path = PACKAGE_DIR) -> Path:
    """Compile the kernels into ``output_dir``; return the module's path.

    The module is linked in a temporary directory, loaded once to check its digest, then
    renamed into place: a process importing it meanwhile sees the old file or the new one.
    """
    try:
        with warnings.catch_warnings():
            # pycc is "pending deprecation" with no replacement yet; it is what works today.
            warnings.simplefilter("ignore")
            from numba.pycc import CC
    except ImportError as exc:
        raise AotBuildError(f"numba.pycc cannot be imported ({exc}); it needs setuptools") from exc
    from . import kernels_nb

    digest = source_digest()
    staging = Path(tempfile.mkdtemp(prefix=".aot-build-", dir=output_dir))
    try:
        cc = CC(MODULE_NAME)
        cc.output_dir = str(staging)
        for name in KERNEL_NAMES:
            dispatcher = getattr(kernels_nb, f"{name}_nb")
            signatures = dispatcher.nopython_signatures
            if len(signatures) != 1:
                raise AotBuildError(f"kernels_nb.{name}_nb needs one explicit signature")
            cc.export(name, signatures[0])(dispatcher.py_func)
        cc.export("source_digest", "int64()")(_constant(digest))
        try:
            cc.compile()
        except Exception as exc:  # distutils/compiler errors have no common base class
            raise AotBuildError(f"compiling {MODULE_NAME} failed: {exc}") from exc
        built = staging / cc.output_file
        if _load(built).source_digest() != digest:
            raise AotBuildError(f"{built} does not report the digest it was built with")
        target = output_dir / cc.output_file
        os.replace(built, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _constant(value: int):
    def source_digest():
        return value  # a free variable: Numba compiles it as a constant

    return source_digest


def _load(path: Path):
    """Import the extension module at ``path`` under a private name (a sanity check)."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aegis.ringbuffer.aot",
        description="Compile the ring kernels ahead of time (see the aegis.ringbuffer.aot docs).",
    )
    parser.add_argument("--output-dir", type=Path, default=PACKAGE_DIR,
                        help="where to write the module (default: the package, where it is loaded)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = build(args.output_dir)
    except (AotBuildError, OSError) as exc:
        print(f"ring kernels: ahead-of-time build failed: {exc}", file=sys.stderr)
        print("ring kernels: processes will compile them with Numba's JIT instead", file=sys.stderr)
        return 1
    print(f"ring kernels: built {path} (source digest {source_digest() & (2**64 - 1):016x})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

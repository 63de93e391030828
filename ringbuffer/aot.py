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
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

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


NOT_BUILT = "are not built"
MODES = ("auto", "aot", "jit")
"""``aot``: the built module or ImportError; ``jit``: Numba's JIT; ``auto``: the first that works."""


def numba_version() -> str:
    """The installed Numba's version, read from its metadata (Numba itself is not imported)."""
    try:
        return version("numba")
    except PackageNotFoundError:
        return "none"


@dataclass(frozen=True)
class AotModule:
    """Numba kernels compiled into one extension module, and how to tell it is current.

    Every ``<export>_nb`` kernel of ``kernels`` (with exactly one explicit signature) is
    exported as ``<export>``, with ``source_digest()``: the digest of ``sources`` (files in
    ``package_dir``), of this builder and of the Numba version. ``load`` returns the module only
    while that digest equals the installed sources' one.
    """

    name: str
    package: str
    package_dir: Path
    sources: tuple[str, ...]
    kernels: str
    exports: tuple[str, ...]

    def source_digest(self, source_dir: Path | None = None, numba: str | None = None) -> int:
        """A signed 64-bit digest of ``sources`` in ``source_dir``, this builder and Numba."""
        source_dir = self.package_dir if source_dir is None else source_dir
        h = hashlib.blake2b(digest_size=8)
        for name in self.sources:
            h.update(name.encode() + b"\0" + (source_dir / name).read_bytes() + b"\0")
        if Path(__file__).resolve().parent != self.package_dir:
            h.update(b"builder\0" + Path(__file__).read_bytes() + b"\0")
        h.update(b"numba " + (numba_version() if numba is None else numba).encode())
        return int.from_bytes(h.digest(), "little", signed=True)

    def build(self, output_dir: Path | None = None) -> Path:
        """Compile the kernels into ``output_dir`` (default: the package); return the path.

        The module is linked in a temporary directory, loaded once to check its digest, then
        renamed into place: a process importing it meanwhile sees the old file or the new one.
        """
        output_dir = self.package_dir if output_dir is None else output_dir
        try:
            with warnings.catch_warnings():
                # pycc is "pending deprecation" with no replacement yet; it is what works today.
                warnings.simplefilter("ignore")
                from numba.pycc import CC
        except ImportError as exc:
            raise AotBuildError(
                f"numba.pycc cannot be imported ({exc}); it needs setuptools"
            ) from exc
        kernels = importlib.import_module(self.kernels)
        digest = self.source_digest()
        staging = Path(tempfile.mkdtemp(prefix=".aot-build-", dir=output_dir))
        try:
            cc = CC(self.name)
            cc.output_dir = str(staging)
            for name in self.exports:
                dispatcher = getattr(kernels, f"{name}_nb")
                signatures = dispatcher.nopython_signatures
                if len(signatures) != 1:
                    raise AotBuildError(f"{self.kernels}.{name}_nb needs one explicit signature")
                cc.export(name, signatures[0])(dispatcher.py_func)
            cc.export("source_digest", "int64()")(_constant(digest))
            try:
                cc.compile()
            except Exception as exc:  # distutils/compiler errors have no common base class
                raise AotBuildError(f"compiling {self.name} failed: {exc}") from exc
            built = staging / cc.output_file
            if _load(self.name, built).source_digest() != digest:
                raise AotBuildError(f"{built} does not report the digest it was built with")
            target = output_dir / cc.output_file
            os.replace(built, target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load(self, digest: int | None = None) -> tuple[ModuleType | None, str]:
        """(The module, "") when it is built and reports ``digest`` (default: the installed
        sources'), else (None, why not)."""
        if digest is None:
            try:
                digest = self.source_digest()
            except OSError as exc:  # a source file missing from the installation
                return None, f"cannot be checked against their sources ({exc})"
        name = f"{self.package}.{self.name}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                return None, f"fail to import ({exc})"
            return None, NOT_BUILT
        except ImportError as exc:  # e.g. built for another platform, or truncated
            return None, f"fail to import ({exc})"
        built = module.source_digest()
        if built != digest:
            return None, (
                f"are stale (built from sources with digest {_hex(built)}, the installed sources "
                f"have {_hex(digest)})"
            )
        return module, ""

    def choose(self, mode: str, digest: int | None, refused: str, log: logging.Logger,
               what: str, command: str) -> ModuleType | None:  # fmt: skip
        """The built module for ``mode`` (see ``MODES``), or None when the JIT is to be used.

        ``aot`` raises ``ImportError`` (``refused`` + why) when the module cannot be used;
        ``auto`` logs why on ``log`` (a warning unless it is simply not built) and returns None.
        """
        if mode == "jit":
            return None
        module, why_not = self.load(digest)
        if module is not None:
            return module
        if mode == "aot":
            raise ImportError(f"{refused} {why_not}")
        log.log(
            logging.INFO if why_not == NOT_BUILT else logging.WARNING,
            "%s: the ahead-of-time kernels %s; using Numba's JIT (~100 MB more RSS in this "
            "process). Build them with `python -m %s`.",
            what, why_not, command,
        )  # fmt: skip
        return None

    def main(self, what: str, argv: list[str] | None = None) -> int:
        """The command line of a ``python -m`` module that builds this one."""
        parser = argparse.ArgumentParser(
            prog=f"python -m {self.package}.{what.split()[0]}",
            description=f"Compile the {what} ahead of time (see the module's docs).",
        )
        parser.add_argument("--output-dir", type=Path, default=self.package_dir,
                            help="where to write the module (default: the package, where it is loaded)")  # fmt: skip
        args = parser.parse_args(argv)
        try:
            path = self.build(args.output_dir)
        except (AotBuildError, OSError) as exc:
            print(f"{what}: ahead-of-time build failed: {exc}", file=sys.stderr)
            print(f"{what}: processes will compile them with Numba's JIT instead", file=sys.stderr)
            return 1
        print(f"{what}: built {path} (source digest {_hex(self.source_digest())})")
        return 0


RING = AotModule(MODULE_NAME, __package__ or "aegis.ringbuffer", PACKAGE_DIR, SOURCES,
                 f"{__package__ or 'aegis.ringbuffer'}.kernels_nb", KERNEL_NAMES)  # fmt: skip


def source_digest(source_dir: Path = PACKAGE_DIR, numba: str | None = None) -> int:
    """Return a signed 64-bit digest of ``SOURCES`` in ``source_dir`` and the Numba version."""
    return RING.source_digest(source_dir, numba)


def build(output_dir: Path = PACKAGE_DIR) -> Path:
    """Compile the ring kernels into ``output_dir``; return the module's path."""
    return RING.build(output_dir)


def _constant(value: int):
    def source_digest():
        return value  # a free variable: Numba compiles it as a constant

    return source_digest


def _load(name: str, path: Path):
    """Import the extension module at ``path`` under a private name (a sanity check)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hex(digest: int) -> str:
    return f"{digest & (2**64 - 1):016x}"


def main(argv: list[str] | None = None) -> int:
    return RING.main("ring kernels", argv)


if __name__ == "__main__":
    sys.exit(main())

"""Exit codes of the watchdog and of its children, each with one meaning.

A container orchestrator (or systemd) reads them: ``CRASH_LOOP`` asks for a restart of the whole
kernel, ``BOOT_ERROR`` says a restart cannot help until a human fixes the configuration.
"""

from __future__ import annotations

CLEAN = 0
"""Everything stopped gracefully within the deadline."""

FAILURE = 1
"""An unexpected error (a bug) in the watchdog or in a child."""

CRASH_LOOP = 70
"""A child restarted more than ``crash_loop_restarts`` times within ``crash_loop_window_s``."""

SHUTDOWN_FORCED = 71
"""Shutdown missed ``shutdown_deadline_s``; what was left got SIGKILL (records may be unflushed)."""

SHUTDOWN_UNCLEAN = 72
"""Every child stopped in time, but one of them failed while stopping (e.g. a flush error)."""

ALREADY_RUNNING = 75
"""Another kernel holds ``<home>/run/kernel.lock``."""

BOOT_ERROR = 78
"""A child could not start because of its configuration; it is never restarted in a loop."""

MEANING = {
    CLEAN: "clean shutdown",
    FAILURE: "unexpected error",
    CRASH_LOOP: "crash loop",
    SHUTDOWN_FORCED: "shutdown deadline missed, children killed",
    SHUTDOWN_UNCLEAN: "a child failed while stopping",
    ALREADY_RUNNING: "another kernel runs on this home",
    BOOT_ERROR: "boot error (bad configuration)",
}


def describe(code: int | None) -> str:
    """Name an exit code (negative = killed by that signal number)."""
    if code is None:
        return "running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return MEANING.get(code, f"exit code {code}")

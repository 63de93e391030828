"""Kernel life cycle with real processes: dead man's switch, one kernel per home, crash loop,
boot errors and the memory guard."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import asyncpg
import psutil
import pytest
from kernel_harness import KernelRun, alive_pids, wait_until

from aegis.kernel import exitcodes

pytestmark = pytest.mark.slow

FLOW = ("feed", "brain", "executor")


def events_of(dsn: str, kernel_pid: int, since_ms: int) -> list[dict]:
    """Rows written by one kernel: its own rows plus those of its children after it started."""

    async def go() -> list[dict]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT process, pid, event, reason, exit_code, detail FROM kernel_events "
                "WHERE ts_ms >= $1 ORDER BY ts_ms",
                since_ms,
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(go())


@pytest.fixture
def launch(tmp_path, pg_dsn, redis_url):
    runs: list[KernelRun] = []

    def start(table: str, home=None, log_name: str = "kernel.log", **settings) -> KernelRun:
        # No test here is about hangs: a generous deadline keeps a loaded machine's scheduling
        # delays from adding stall restarts to the exact event sequences checked below.
        settings.setdefault("heartbeat_deadline_s", 5.0)
        run = KernelRun.launch(
            home or tmp_path / "home",
            table,
            database_url=pg_dsn,
            redis_url=redis_url,
            redis_prefix=f"aegis_test:{uuid.uuid4().hex[:12]}:",
            log_name=log_name,
            **settings,
        )
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_everything()


def test_kernel_sigkill_of_watchdog_children_gone_within_2s_then_next_run_takes_over(launch):
    first = launch("flow")
    views = first.wait_running(FLOW, timeout=60)
    active = {v.pid for v in views.values()}
    spares = wait_until(lambda: len(first.children()) >= 6 and first.children(), 30) or []
    children = active | {p.pid for p in spares}  # the warm spares must die too

    second = launch("flow", log_name="second.log")
    assert second.wait(30) == exitcodes.ALREADY_RUNNING
    assert "already running" in second.tail() and str(first.pid) in second.tail()
    assert alive_pids(active) == active  # the refused run touched nothing

    t0 = time.monotonic()
    first.proc.send_signal(signal.SIGKILL)
    first.wait(5)
    gone = wait_until(lambda: not alive_pids(children), 2.0, 0.01)
    took = time.monotonic() - t0
    assert gone, f"children {alive_pids(children)} still alive 2 s after the watchdog died"
    assert took < 2.0
    # They stopped gracefully (SIGTERM via PR_SET_PDEATHSIG), not by a kill.
    log = first.log_path.read_text()
    assert log.count("exiting with code 0") == 3, first.tail()

    third = launch("flow", log_name="third.log")  # stale lock, control block and rings
    third.wait_running(FLOW, timeout=60)
    assert "taken over from dead kernel pid" in third.tail(200)
    third.signal(signal.SIGTERM)
    assert third.wait(30) == exitcodes.CLEAN
    assert third.shm_names() == []


def test_kernel_crash_loop_stops_everything_and_exits_non_zero(launch, pg_dsn):
    run = launch(
        "crashing", crash_loop_restarts=3, crash_loop_window_s=60.0, restart_backoff_max_s=0.2
    )
    code = run.wait(90)
    assert code == exitcodes.CRASH_LOOP, run.tail()
    assert not [p for p in run.children() if p.is_running()]
    assert run.shm_names() == []
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    crasher = [r for r in rows if r["process"] == "crasher"]
    assert [r["event"] for r in crasher if r["event"] in ("start", "crash_loop")] == (
        ["start"] * 4 + ["crash_loop"]
    )
    feed_exit = [r for r in rows if r["process"] == "feed" and r["event"] == "exit"]
    assert [(r["reason"], r["exit_code"]) for r in feed_exit] == [("shutdown", 0)]
    stop = [r for r in rows if r["process"] == "watchdog" and r["event"] == "stop"]
    assert [(r["reason"], r["exit_code"]) for r in stop] == [("crash_loop", exitcodes.CRASH_LOOP)]


def test_kernel_boot_error_child_is_fatal_and_never_restarted(launch, pg_dsn):
    run = launch("bad_config")
    code = run.wait(60)
    assert code == exitcodes.BOOT_ERROR, run.tail()
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    broken = [(r["event"], r["reason"], r["exit_code"]) for r in rows if r["process"] == "broken"]
    assert broken == [
        ("start", "boot", None),
        ("exit", "exit_code", exitcodes.BOOT_ERROR),
        ("fatal", "boot_error", exitcodes.BOOT_ERROR),
    ]
    assert "cannot start: AEGIS_SYMBOLS" in run.log_path.read_text()


def test_kernel_memory_guard_restarts_child_over_ceiling_with_reason_memory(launch, pg_dsn):
    run = launch("idle", memory_ceiling_mb=20)  # any Python process with numpy is above 20 MB
    try:
        restarted = wait_until(lambda: (v := run.slots().get("idle")) and v.restarts >= 2, 45)
        assert restarted, run.tail()
    finally:
        run.signal(signal.SIGTERM)
        assert run.wait(30) == exitcodes.CLEAN
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    memory = [r for r in rows if r["process"] == "idle" and r["event"] == "memory"]
    assert len(memory) >= 2
    assert all(json.loads(r["detail"])["rss_mb"] > 20 for r in memory)
    exits = [r for r in rows if r["process"] == "idle" and r["event"] == "exit"]
    assert {r["reason"] for r in exits[:2]} == {"memory"}
    assert all(psutil.pid_exists(r["pid"]) is False for r in exits)


def test_kernel_child_ignoring_sigterm_is_killed_at_deadline_and_exit_is_71(launch, pg_dsn):
    run = launch("stubborn", shutdown_deadline_s=1.5)
    run.wait_running(("stubborn",), timeout=60)
    t0 = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait(30) == exitcodes.SHUTDOWN_FORCED, run.tail()
    assert 1.5 <= time.monotonic() - t0 < 5.0
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    exits = [(r["reason"], r["exit_code"]) for r in rows if r["event"] == "exit"]
    assert exits == [("shutdown", -signal.SIGKILL)]


def test_kernel_child_failing_while_stopping_makes_exit_72(launch, pg_dsn):
    run = launch("failing_drain")
    run.wait_running(("failing",), timeout=60)
    run.signal(signal.SIGTERM)
    assert run.wait(30) == exitcodes.SHUTDOWN_UNCLEAN, run.tail()
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    exits = [(r["reason"], r["exit_code"]) for r in rows if r["event"] == "exit"]
    assert exits == [("shutdown", exitcodes.FAILURE)]
    assert "failing failed while stopping" in run.tail()


def test_kernel_sighup_with_invalid_config_keeps_running_configuration(launch, pg_dsn, tmp_path):
    config = tmp_path / "aegis.toml"
    config.write_text("log_level = 'INFO'\n")
    run = launch("idle", config_file=str(config))
    pid = run.wait_running(("idle",), timeout=60)["idle"].pid
    config.write_text("no_such_setting = 1\n")
    run.signal(signal.SIGHUP)
    refused = wait_until(lambda: "reload refused" in run.tail(), 10)
    assert refused, run.tail()
    time.sleep(0.3)
    assert run.slots()["idle"].pid == pid  # nothing was restarted
    run.signal(signal.SIGTERM)
    assert run.wait(30) == exitcodes.CLEAN
    rows = events_of(pg_dsn, run.pid, run.started_ms)
    reload = [(r["reason"]) for r in rows if r["event"] == "reload"]
    assert reload == ["config_error"]

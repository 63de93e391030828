"""Kernel building blocks on their own: control block, lock, restart backoff, topology, events, status,
metrics. Real shared memory, real files, real PostgreSQL, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from functools import partial
from pathlib import Path

import asyncpg
import psutil
import pytest
from kernel_harness import free_port, wait_until

from aegis.config import Settings
from aegis.kernel import exitcodes
from aegis.kernel.control import (
    ControlBlock,
    ControlBlockError,
    KernelState,
    ProcessState,
    shm_path,
)
from aegis.kernel.events import EventRecorder, KernelEvent, StoreEventSink
from aegis.kernel.lock import KernelAlreadyRunning, KernelLock
from aegis.kernel.metrics import MetricsServer
from aegis.kernel.status import (
    STATUS_DEAD,
    STATUS_NOT_RUNNING,
    format_table,
    health,
    snapshot,
    status_main,
)
from aegis.kernel.supervised import SupervisedChild
from aegis.kernel.topology import (
    DEFAULT_TABLE,
    ProcessSpec,
    ProcessTable,
    RingSpec,
    TopologyError,
    bindings_for,
    control_name,
    ring_shm_name,
)
from aegis.records import BAR_DTYPE


@pytest.fixture
def block():
    name = f"aegis-test-control-{uuid.uuid4().hex[:10]}"
    b = ControlBlock.create(name, ("feed", "brain", "executor"))
    yield b
    b.close()


# -- control block ------------------------------------------------------------------------------
def test_control_block_slots_are_128_bytes_and_names_set(block):
    assert block.slots.dtype.itemsize == 128
    assert [v.name for v in block.views()] == ["feed", "brain", "executor"]
    assert all(v.state == ProcessState.STOPPED and v.last_exit_code is None for v in block.views())
    assert block.kernel_pid == os.getpid()


def test_control_block_readonly_attach_sees_writes_and_cannot_write(block):
    block.slots[1]["pid"] = 4242
    block.slots[1]["state"] = ProcessState.RUNNING
    reader = ControlBlock.attach(block.name)
    try:
        assert reader.view(1).pid == 4242 and reader.view(1).state == ProcessState.RUNNING
        with pytest.raises(ValueError):
            reader.slots[1]["pid"] = 1
    finally:
        reader.close()
    assert os.path.exists(shm_path(block.name))  # a reader never unlinks


def test_control_block_heartbeat_writer_of_a_child_reaches_the_owner(block):
    child = ControlBlock.attach(block.name, writable=True)
    writer = child.heartbeat_writer("brain")
    before = time.monotonic_ns()
    writer.beat()
    writer.mark_ready()
    writer.release()
    child.close()
    view = block.view(1)
    assert view.heartbeat_ns >= before and view.ready_ns >= before
    assert block.view(0).heartbeat_ns == 0


def test_control_block_owner_close_unlinks_the_segment():
    name = f"aegis-test-control-{uuid.uuid4().hex[:10]}"
    b = ControlBlock.create(name, ("a",))
    assert os.path.exists(shm_path(name))
    b.close()
    assert not os.path.exists(shm_path(name))
    with pytest.raises(ControlBlockError, match="is the kernel running"):
        ControlBlock.attach(name)


def test_control_block_create_refuses_an_existing_name(block):
    with pytest.raises(FileExistsError):
        ControlBlock.create(block.name, ("x",))


def test_control_block_attach_rejects_a_segment_of_another_layout():
    name = f"aegis-test-control-{uuid.uuid4().hex[:10]}"
    with open(shm_path(name), "wb") as f:
        f.write(b"\x01" * 512)
    try:
        with pytest.raises(ControlBlockError, match="magic"):
            ControlBlock.attach(name)
    finally:
        os.unlink(shm_path(name))


def test_control_block_attach_from_another_process_leaves_no_resource_tracker_unlink(block):
    code = (
        "from aegis.kernel.control import ControlBlock;"
        f"b = ControlBlock.attach({block.name!r}); print(b.view(0).name); b.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "feed" and "leaked" not in out.stderr
    assert os.path.exists(shm_path(block.name))


# -- lock ---------------------------------------------------------------------------------------
def test_kernel_lock_second_holder_is_refused_with_owner_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from aegis.kernel.lock import KernelLock;"
            f"KernelLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(KernelAlreadyRunning, match=f"pid {holder.pid}") as err:
            KernelLock(tmp_path).acquire()
        assert "already running" in str(err.value)
        holder.kill()
        holder.wait()
        lock = KernelLock(tmp_path)
        lock.acquire()  # the dead holder's lock is taken over
        assert lock.previous_pid == holder.pid
        assert (tmp_path / "run" / "kernel.lock").read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        holder.kill()
        holder.wait()


# -- restart backoff ----------------------------------------------------------------------------
def _child(block) -> SupervisedChild:
    return SupervisedChild(ProcessSpec("brain", "m:f"), 1, block, lambda spec, slot: None)


def test_backoff_first_failure_restarts_immediately_then_grows_with_jitter_to_cap(block):
    child = _child(block)
    rng = random.Random(7)
    child.failures = 1
    assert child.next_delay(0.5, 4.0, rng) == 0.0
    delays = []
    for n in range(2, 12):
        child.failures = n
        delays.append(child.next_delay(0.5, 4.0, rng))
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(10)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lock step


def test_backoff_starts_over_after_the_child_stayed_up(block):
    child = _child(block)
    child.started_at = 0.0
    assert child.note_failure(1.0, stable_s=5.0, window_s=60.0) == 1
    assert child.note_failure(2.0, stable_s=5.0, window_s=60.0) == 2
    assert child.failures == 2
    child.started_at = 10.0
    child.note_failure(20.0, stable_s=5.0, window_s=60.0)  # up 10 s >= stable 5 s
    assert child.failures == 1 and child.next_delay(0.5, 4.0) == 0.0


def test_backoff_crash_loop_window_counts_only_recent_restarts(block):
    child = _child(block)
    child.started_at = 0.0
    for t in (1.0, 2.0, 3.0):
        child.note_failure(t, stable_s=100.0, window_s=10.0)
    assert child.note_failure(12.5, stable_s=100.0, window_s=10.0) == 2  # 1.0 and 2.0 expired


# -- topology -----------------------------------------------------------------------------------
def test_topology_default_table_binds_each_process_to_its_rings(tmp_path):
    brain = {b.ring: b.consumer_index for b in bindings_for(DEFAULT_TABLE, tmp_path, "brain")}
    assert brain == {"market": 0, "intents": None, "reports": 0}
    executor = {b.ring: b.consumer_index for b in bindings_for(DEFAULT_TABLE, tmp_path, "executor")}
    assert executor == {"market": 1, "intents": 0, "reports": None}


def test_topology_executor_reads_market_after_the_brain_whose_commits_wake_it(tmp_path):
    def market(process):
        (binding,) = [b for b in bindings_for(DEFAULT_TABLE, tmp_path, process)
                      if b.ring == "market"]  # fmt: skip
        return binding.after, binding.wakes

    assert market("brain") == ((), (1,))
    assert market("executor") == ((0,), ())


def test_topology_names_are_unique_per_home(tmp_path):
    assert control_name(tmp_path / "a") != control_name(tmp_path / "b")
    assert ring_shm_name(tmp_path, "market") != ring_shm_name(tmp_path / "x", "market")
    assert control_name(tmp_path / "a" / ".." / "a") == control_name(tmp_path / "a")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (lambda: ProcessTable(()), "unique and non-empty"),
        (lambda: ProcessTable((ProcessSpec("a", "m:f"), ProcessSpec("a", "m:g"))), "unique"),
        (lambda: ProcessTable((ProcessSpec("a", "no_colon"),)), "module:function"),
        (
            lambda: ProcessTable(
                (ProcessSpec("a", "m:f"),), (RingSpec("r", BAR_DTYPE, "a", ("ghost",)),)
            ),
            "unknown processes",
        ),
        (
            lambda: ProcessTable((ProcessSpec("a", "m:f"),), (RingSpec("r", BAR_DTYPE, "a", ()),)),
            "distinct consumers",
        ),
    ],
)
def test_topology_inconsistent_table_is_refused(table, message):
    with pytest.raises(TopologyError, match=message):
        table()


# -- events -------------------------------------------------------------------------------------
def _rows(dsn: str, process: str) -> list[dict]:
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return [
                dict(r)
                for r in await conn.fetch(
                    "SELECT event, reason, pid, exit_code, detail FROM kernel_events "
                    "WHERE process = $1 ORDER BY ts_ms",
                    process,
                )
            ]
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def migrated_dsn(pg_dsn):
    from aegis.store.setup import prepare_database

    asyncio.run(prepare_database(pg_dsn))
    return pg_dsn


def test_event_recorder_writes_one_row_per_event(migrated_dsn, tmp_path, caplog):
    process = f"unit-{uuid.uuid4().hex[:8]}"
    rec = EventRecorder(partial(StoreEventSink.open, migrated_dsn, tmp_path / "spill"))
    rec.record(20, "started", KernelEvent(process, "start", "boot", pid=11))
    rec.record(
        40,
        "died",
        KernelEvent(process, "exit", "signal", pid=11, exit_code=-9, detail={"uptime_s": 1.5}),
    )
    assert rec.close() == 0
    rows = _rows(migrated_dsn, process)
    assert [(r["event"], r["reason"], r["pid"], r["exit_code"]) for r in rows] == [
        ("start", "boot", 11, None),
        ("exit", "signal", 11, -9),
    ]
    assert json.loads(rows[1]["detail"]) == {"uptime_s": 1.5}
    assert "died" in caplog.text


def test_event_recorder_database_down_spills_rows_and_next_run_writes_them(migrated_dsn, tmp_path):
    process = f"unit-{uuid.uuid4().hex[:8]}"
    spill = tmp_path / "spill"
    down = EventRecorder(partial(StoreEventSink.open, "postgresql://postgres@127.0.0.1:1/x", spill))
    for i in range(3):
        down.record(20, f"event {i}", KernelEvent(process, "start", "boot", pid=i))
    assert down.close() == 0  # nothing dropped: the rows went to disk
    assert list(spill.glob("*.spill"))
    assert _rows(migrated_dsn, process) == []

    async def next_run() -> None:  # the next kernel's writer replays the spill files
        sink = await StoreEventSink.open(migrated_dsn, spill)
        assert await sink.writer.flush(10.0)
        await sink.close()

    asyncio.run(next_run())
    assert sorted(r["pid"] for r in _rows(migrated_dsn, process)) == [0, 1, 2]
    assert not list(spill.glob("*.spill"))


# -- status and health --------------------------------------------------------------------------
def test_status_without_kernel_says_not_running(tmp_path):
    out = io.StringIO()
    assert status_main(Settings().replace(home=tmp_path), out=out) == STATUS_NOT_RUNNING
    assert "no kernel running" in out.getvalue()
    out = io.StringIO()
    assert status_main(Settings().replace(home=tmp_path), as_json=True, out=out) == 3
    assert json.loads(out.getvalue())["running"] is False


def test_status_with_a_dead_kernels_block_says_dead(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    b = ControlBlock.create(control_name(tmp_path), ("feed",))
    b.header["kernel_pid"] = dead.pid
    try:
        out = io.StringIO()
        assert status_main(Settings().replace(home=tmp_path), out=out) == STATUS_DEAD
        assert f"dead kernel pid {dead.pid}" in out.getvalue()
    finally:
        b.close()


def _running(block, i, pid=100, hb_age_s=0.0):
    now = time.monotonic_ns()
    block.slots[i]["pid"] = pid
    block.slots[i]["state"] = ProcessState.RUNNING
    block.slots[i]["started_mono_ns"] = now - 10**10
    block.slots[i]["heartbeat_ns"] = now - int(hb_age_s * 1e9)


def test_health_flags_stale_heartbeat_fatal_child_and_crash_loop(block):
    block.header["heartbeat_deadline_ns"] = 10**9
    block.header["loop_ns"] = time.monotonic_ns()
    for i in range(3):
        _running(block, i)
    assert health(snapshot(block, [])) == []
    _running(block, 1, hb_age_s=3.0)
    assert health(snapshot(block, [])) == ["brain heartbeat is 3.0 s old"]
    _running(block, 1)
    block.slots[2]["state"] = ProcessState.FATAL
    block.header["kernel_state"] = KernelState.CRASH_LOOP
    assert health(snapshot(block, [])) == ["kernel is CRASH_LOOP", "executor is FATAL"]
    table = format_table(snapshot(block, []))
    assert "UNHEALTHY" in table and "brain" in table


def test_metrics_server_serves_metrics_and_healthz_503_when_unhealthy(block):
    block.header["heartbeat_deadline_ns"] = 10**9
    block.header["loop_ns"] = time.monotonic_ns()
    for i in range(3):
        _running(block, i)
    block.slots[0]["restarts"] = 4
    server = MetricsServer(lambda: snapshot(block, []), free_port())
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
            assert resp.status == 200
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'aegis_process_restarts_total{process="feed"} 4.0' in body
        assert "aegis_kernel_healthy 1.0" in body
        block.slots[2]["state"] = ProcessState.FATAL
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert err.value.code == 503
        assert json.loads(err.value.read())["problems"] == ["executor is FATAL"]
    finally:
        server.stop()


def test_exit_codes_have_distinct_documented_meanings():
    codes = [
        exitcodes.CLEAN,
        exitcodes.FAILURE,
        exitcodes.CRASH_LOOP,
        exitcodes.SHUTDOWN_FORCED,
        exitcodes.SHUTDOWN_UNCLEAN,
        exitcodes.ALREADY_RUNNING,
        exitcodes.BOOT_ERROR,
    ]
    assert len(set(codes)) == len(codes)
    assert all(c in exitcodes.MEANING for c in codes)
    assert exitcodes.describe(-9) == "killed by SIGKILL"


def test_runtime_warm_up_loads_ring_kernels_and_leaves_no_segment():
    from aegis.processes.runtime import warm_ring_kernels

    before = set(os.listdir("/dev/shm"))
    assert warm_ring_kernels() < 30
    assert set(os.listdir("/dev/shm")) - before == set()


# -- runtime ------------------------------------------------------------------------------------
RUN_IDLE = (
    "import sys; sys.path.insert(0, {tests!r});"
    "from aegis.config import Settings; from aegis.kernel.topology import ProcessConfig;"
    "from workload import Idle; from aegis.processes.runtime import run_process;"
    "cfg = ProcessConfig(Settings(), 'idle', 0, '', {kernel_pid});"
    "sys.exit(run_process(Idle(), cfg))"
)


def test_runtime_child_whose_launcher_dies_stops_by_parent_polling_within_2s(tmp_path):
    tests = str(Path(__file__).parent)
    child = RUN_IDLE.format(tests=tests, kernel_pid=0)  # no kernel, no PR_SET_PDEATHSIG
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time;"
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}]);"
            "print(p.pid, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(launcher.stdout.readline())
    try:
        time.sleep(3.0)  # let it start its loop
        assert psutil.pid_exists(pid)
        launcher.kill()
        launcher.wait()
        t0 = time.monotonic()
        gone = wait_until(
            lambda: (
                not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            ),
            2.0,
            0.02,
        )
        assert gone, "an orphaned process kept running"
        assert time.monotonic() - t0 < 2.0
    finally:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
        launcher.kill()


def test_runtime_started_for_a_kernel_that_is_not_its_parent_stops_at_once():
    code = RUN_IDLE.format(tests=str(Path(__file__).parent), kernel_pid=1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "parent (pid 1) is gone: stopping" in out.stderr


def test_signal_queue_handler_only_enqueues_and_wakes_the_sleep():
    from aegis.kernel.signals import SignalQueue

    q = SignalQueue((signal.SIGUSR1, signal.SIGHUP))
    q.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGHUP)
        t0 = time.monotonic()
        q.sleep([], timeout=5.0)
        assert time.monotonic() - t0 < 1.0
        assert list(q.drain()) == [signal.SIGUSR1, signal.SIGHUP]
        assert list(q.drain()) == []
    finally:
        q.restore()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL

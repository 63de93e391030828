"""The kernel supervising three real processes that move records through real rings.

One kernel runs the whole scenario once (module fixture): SIGKILL each child twice, SIGSTOP
one, SIGHUP for a rolling restart, then SIGTERM. The tests below each check one promise
against what was observed from outside: process table, control block, journals of the
consumers, /dev/shm, Redis and the ``kernel_events`` rows in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import asyncpg
import pytest
import redis
from kernel_harness import (
    FAST_SETTINGS,
    KernelRun,
    alive_pids,
    free_port,
    kill_and_time_replacement,
    wait_until,
)
from workload import coverage, published_count

from aegis.config import Settings
from aegis.kernel import exitcodes
from aegis.kernel.status import status_main

pytestmark = pytest.mark.slow

NAMES = ("feed", "brain", "executor")
KILL_ROUNDS = 2


def fetch_events(dsn: str, since_ms: int) -> list[dict]:
    async def go() -> list[dict]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT process, pid, event, reason, exit_code, ts_ms FROM kernel_events "
                "WHERE ts_ms >= $1 ORDER BY ts_ms",
                since_ms,
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(go())


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Observed:
    kills: list[tuple[str, int, int, float]] = field(default_factory=list)
    hang: tuple[int, int, float] | None = None
    reload_before: dict[str, int] = field(default_factory=dict)
    reload_after: dict[str, int] = field(default_factory=dict)
    healthz: tuple[int, str] = (0, "")
    metrics: str = ""
    status: dict = field(default_factory=dict)
    exit_code: int | None = None
    stop_s: float = 0.0
    pids: set[int] = field(default_factory=set)
    alive_after: set[int] = field(default_factory=set)
    shm_during: list[str] = field(default_factory=list)
    shm_after: list[str] = field(default_factory=list)
    persisted: str | None = None
    events: list[dict] = field(default_factory=list)
    usr1: bool = False
    spare: tuple[int, int, bool] = (0, 0, False)
    home: object = None
    log_tail: str = ""


@pytest.fixture(scope="module")
def observed(tmp_path_factory, pg_dsn, redis_url) -> Observed:
    home = tmp_path_factory.mktemp("kernel-flow")
    prefix = f"aegis_test:{uuid.uuid4().hex[:12]}:"
    port = free_port()
    run = KernelRun.launch(
        home,
        "flow",
        database_url=pg_dsn,
        redis_url=redis_url,
        redis_prefix=prefix,
        metrics_port=port,
    )
    obs = Observed(home=home)
    client = redis.Redis.from_url(redis_url)
    try:
        run.wait_running(NAMES, timeout=60)
        time.sleep(0.5)
        obs.healthz = http_get(f"http://127.0.0.1:{port}/healthz")
        obs.metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]

        def status() -> dict:
            out = io.StringIO()
            status_main(Settings().replace(home=home), as_json=True, out=out)
            return json.loads(out.getvalue())

        # RSS and CPU are sampled every 0.5 s by the watchdog: wait for the first sample.
        obs.status = (
            wait_until(
                lambda: (
                    (doc := status()) and all(p["rss_mb"] > 0 for p in doc["processes"]) and doc
                ),
                10,
            )
            or status()
        )
        obs.shm_during = run.shm_names()
        run.signal(signal.SIGUSR1)
        obs.usr1 = bool(wait_until(lambda: "status: kernel pid" in run.tail(200), 10))

        for _ in range(KILL_ROUNDS):
            for name in NAMES:
                run.wait_running(NAMES)
                time.sleep(FAST_SETTINGS["restart_stable_s"] + 0.2)  # each kill: a first failure
                assert wait_until(lambda n=name: run.slots()[n].spare_ready, 30), run.tail()
                old, new, took = kill_and_time_replacement(run, name)
                obs.kills.append((name, old, new, took))
        run.wait_running(NAMES)
        time.sleep(FAST_SETTINGS["restart_stable_s"] + 0.2)

        brain = run.slots()["brain"]
        assert wait_until(lambda: run.slots()["brain"].spare_ready, 30), run.tail()
        spare = run.slots()["brain"].spare_pid
        os.kill(spare, signal.SIGKILL)
        respawned = wait_until(
            lambda: (v := run.slots()["brain"]).spare_pid not in (0, spare) and v.spare_ready, 30
        )
        obs.spare = (brain.pid, run.slots()["brain"].pid, bool(respawned))

        hung = run.slots()["brain"].pid
        t0 = time.monotonic()
        os.kill(hung, signal.SIGSTOP)
        view = wait_until(lambda: (v := run.slots()["brain"]).pid not in (0, hung) and v, 15)
        assert view, run.tail()
        obs.hang = (hung, view.pid, time.monotonic() - t0)
        run.wait_running(NAMES)

        obs.reload_before = {n: v.pid for n, v in run.slots().items()}
        run.signal(signal.SIGHUP)
        wait_until(
            lambda: (
                (v := run.all_running(NAMES))
                and all(v[n].pid != obs.reload_before[n] for n in NAMES)
            ),
            40,
        )
        obs.reload_after = {n: v.pid for n, v in run.slots().items()}
        time.sleep(0.5)

        run.slots()
        obs.pids = set(run.seen_pids) | {p.pid for p in run.children()}
        t0 = time.monotonic()
        run.signal(signal.SIGTERM)
        obs.exit_code = run.wait(FAST_SETTINGS["shutdown_deadline_s"] + 10)
        obs.stop_s = time.monotonic() - t0
        obs.alive_after = alive_pids(obs.pids)
        obs.shm_after = run.shm_names()
        raw = client.get(f"{prefix}executor:persisted")
        obs.persisted = raw.decode() if raw else None
        obs.events = fetch_events(pg_dsn, run.started_ms)
        obs.log_tail = run.tail(80)
    finally:
        run.kill_everything()
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
    return obs


def rows(obs: Observed, **match) -> list[dict]:
    return [e for e in obs.events if all(e[k] == v for k, v in match.items())]


def test_kernel_sigkill_of_each_child_is_replaced_and_running_within_1s(observed):
    assert len(observed.kills) == KILL_ROUNDS * len(NAMES)
    slow = [(n, round(t, 3)) for n, _, _, t in observed.kills if t >= 1.0]
    assert not slow, f"replacements slower than 1 s: {slow}"


def test_kernel_killed_warm_spare_is_replaced_without_touching_its_process(observed):
    before, after, respawned = observed.spare
    assert respawned and before == after


def test_kernel_sigusr1_logs_a_status_snapshot(observed):
    assert observed.usr1


def test_kernel_consumers_sequences_stay_gap_free_through_kills_hang_and_reload(observed):
    home = observed.home
    # The feed journals *after* publishing, so a kill in between hides a published batch from
    # its journal: only the highest sequence it journaled says how much was published.
    published = published_count(home, "feed", "market")
    assert published > 1000
    for process, ring in (
        ("brain", "market"),
        ("executor", "market"),
        ("executor", "intents"),
        ("brain", "reports"),
    ):
        covered, gaps = coverage(home, process, ring)
        assert gaps == [], f"{process} lost {ring} records {gaps}"
        assert covered > 0
    # Ordered shutdown: the feed stopped first, so both consumers drained the whole market ring.
    assert coverage(home, "brain", "market")[0] == published
    assert coverage(home, "executor", "market")[0] == published


def test_kernel_sigterm_executor_drains_intents_and_persists(observed):
    assert observed.persisted is not None, observed.log_tail
    persisted_sequence = int(observed.persisted.split()[0])
    assert persisted_sequence == coverage(observed.home, "executor", "intents")[0]


def test_kernel_sigstop_child_is_detected_as_hung_and_replaced(observed):
    hung, new, took = observed.hang
    limit = FAST_SETTINGS["heartbeat_deadline_s"] + FAST_SETTINGS["kill_grace_s"] + 2.0
    assert took < limit
    assert len(rows(observed, process="brain", event="stall", pid=hung, reason="heartbeat")) == 1
    assert len(rows(observed, process="brain", event="start", pid=new)) == 1


def test_kernel_sighup_restarts_each_child_once_in_order(observed):
    before, after = observed.reload_before, observed.reload_after
    assert all(after[n] != before[n] for n in NAMES)
    for n in NAMES:
        exits = rows(observed, process=n, event="exit", pid=before[n])
        assert [(e["reason"], e["exit_code"]) for e in exits] == [("reload", 0)]
        assert len(rows(observed, process=n, event="start", pid=after[n], reason="reload")) == 1
    stop_times = [rows(observed, process=n, event="exit", pid=before[n])[0]["ts_ms"] for n in NAMES]
    assert stop_times == sorted(stop_times)


def test_kernel_sigterm_exits_0_within_deadline_without_orphans_or_shm_leak(observed):
    assert observed.exit_code == exitcodes.CLEAN, observed.log_tail
    assert observed.stop_s < FAST_SETTINGS["shutdown_deadline_s"]
    assert observed.alive_after == set()
    assert len(observed.shm_during) == 4  # control block + 3 rings
    assert observed.shm_after == []


def test_kernel_events_hold_one_row_per_start_exit_restart_and_stall(observed):
    killed = [(n, old) for n, old, _, _ in observed.kills]
    for name, pid in killed:
        exits = rows(observed, process=name, event="exit", pid=pid)
        assert [(e["reason"], e["exit_code"]) for e in exits] == [("signal", -signal.SIGKILL)]
        assert len(rows(observed, process=name, event="restart", pid=pid)) == 1
    child_pids = {e["pid"] for e in observed.events if e["process"] in NAMES}
    for pid in child_pids:
        assert len([e for e in observed.events if e["pid"] == pid and e["event"] == "start"]) == 1
        assert len([e for e in observed.events if e["pid"] == pid and e["event"] == "exit"]) == 1
    # 3 boot starts + 6 kills + 1 hang + 3 reloads = 13 children, each started and exited once.
    assert len(child_pids) == 3 + KILL_ROUNDS * 3 + 1 + 3
    assert [e["event"] for e in rows(observed, process="watchdog")] == ["start", "reload", "stop"]
    assert rows(observed, process="watchdog", event="stop")[0]["exit_code"] == 0


def test_kernel_metrics_and_healthz_report_every_process_and_ring(observed):
    code, body = observed.healthz
    assert code == 200 and json.loads(body)["healthy"] is True
    for metric in (
        'aegis_process_restarts_total{process="brain"}',
        'aegis_process_heartbeat_age_seconds{process="feed"}',
        'aegis_ring_lag{consumer="executor",ring="market"}',
        'aegis_ring_stalls_total{ring="intents"}',
        'aegis_process_rss_bytes{process="executor"}',
        'aegis_process_cpu_percent{process="feed"}',
    ):
        assert metric in observed.metrics


def test_kernel_status_json_lists_pid_state_heartbeat_and_lag(observed):
    status = observed.status
    assert status["running"] is True and status["problems"] == [], status
    procs = {p["name"]: p for p in status["processes"]}
    assert set(procs) == set(NAMES)
    for p in procs.values():
        assert (
            p["state"] == "RUNNING"
            and p["pid"] > 0
            and p["heartbeat_age_s"] < FAST_SETTINGS["heartbeat_deadline_s"]
        )
        assert p["rss_mb"] > 0
    assert set(procs["executor"]["ring_lag"]) == {"market", "intents"}

"""The brain as a real process: real rings in shared memory, real PostgreSQL, SIGTERM.

Market bars go in on the market ring; the intents that come out, the rows in ``signals`` and
``experience_buffer``, must be exactly what the brain core computes offline from the same bars
(warm-up from ``market_data`` included). A champion stored mid-run is hot-swapped without a
restart, and a closed-trade report becomes a ``virtual_trade`` experience row.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import time
import uuid

import asyncpg
import numpy as np
import pytest
from features_data import klines

from aegis.config import Settings
from aegis.features import FEATURE_NAMES
from aegis.kernel.topology import ProcessConfig, RingBinding
from aegis.ml.model import ModelParams, ReturnModel
from aegis.ml.repository import store_model
from aegis.ml.shadow import experience_rows
from aegis.records import BAR_CLOSED, BAR_DTYPE, INTENT_DTYPE, REPORT_DTYPE, REPORT_TRADE_CLOSED
from aegis.ringbuffer import Ring
from aegis.risk.brain_core import BrainConfig, BrainCore
from aegis.risk.decision import DECISION_NAMES
from aegis.schema.migrator import migrate_sync

pytestmark = pytest.mark.slow

SYMBOLS = ("BTCUSDT", "ETHUSDT")
IDS = {1: "BTCUSDT", 2: "ETHUSDT"}  # explicit list: ids 1..n in list order
WARM = 4 * 1440
LIVE = 480


def run_brain(config: ProcessConfig) -> int:
    from aegis.processes.brain import Brain
    from aegis.processes.runtime import run_process

    return run_process(Brain(model_poll_s=0.2), config)


def bars_of(sl: slice) -> np.ndarray:
    out = []
    for sid, name in IDS.items():
        k = klines(name)
        b = np.zeros(len(k["open_time"][sl]), BAR_DTYPE)
        b["open_time_ms"], b["symbol_id"], b["flags"] = k["open_time"][sl], sid, BAR_CLOSED
        b["recv_ns"] = 42
        for c in ("open", "high", "low", "close", "volume"):
            b[c] = k[c][sl]
        out.append(b)
    bars = np.concatenate(out)
    return bars[np.lexsort((bars["symbol_id"], bars["open_time_ms"]))]


async def _store_history(dsn: str, bars: np.ndarray) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = [(IDS[int(b["symbol_id"])], "1m", int(b["open_time_ms"]), float(b["open"]),
                 float(b["high"]), float(b["low"]), float(b["close"]), float(b["volume"]),
                 BAR_CLOSED) for b in bars]  # fmt: skip
        await conn.copy_records_to_table(
            "market_data", records=rows,
            columns=["symbol", "timeframe", "open_time_ms", "open", "high", "low", "close",
                     "volume", "flags"],
        )  # fmt: skip
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _promote(dsn: str, model: ReturnModel) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        version, status, _ = await store_model(
            conn, model=model.to_bytes(), feature_list_hash=model.feature_hash,
            feature_names=FEATURE_NAMES, train_start_ms=0, train_end_ms=1, train_rows=100,
            metrics={"holdout": {"hit_rate_taken": 0.5}}, promote=True, expected_champion=None,
            now_ms=int(time.time() * 1000),
        )  # fmt: skip
        assert status == "champion"
        return version
    finally:
        await conn.close()


def wait_for(pred, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    return None


@pytest.fixture
def rings():
    tag = uuid.uuid4().hex[:10]
    made = {
        "market": Ring.create(f"aegis-test-{tag}-market", BAR_DTYPE, 8192, 1),
        "intents": Ring.create(f"aegis-test-{tag}-intents", INTENT_DTYPE, 1024, 1),
        "reports": Ring.create(f"aegis-test-{tag}-reports", REPORT_DTYPE, 1024, 1),
    }
    yield made
    for ring in made.values():
        ring.close()
        ring.unlink()


def test_brain_process_publishes_the_offline_decisions_and_persists_signals_and_labels(
    pg_fresh_dsn, rings, tmp_path, capfd
):
    dsn = pg_fresh_dsn
    migrate_sync(dsn)
    history, live = bars_of(slice(0, WARM)), bars_of(slice(WARM, WARM + LIVE))
    # the feed stored the live bars too, but the brain has not consumed them yet (it was down):
    # they must be decided live from the ring, not absorbed by the warm-up
    asyncio.run(_store_history(dsn, np.concatenate([history, live])))

    settings = Settings().replace(home=tmp_path, database_url=dsn, symbols=SYMBOLS,
                                  log_level="INFO")  # fmt: skip
    bindings = (
        RingBinding("market", rings["market"].name, BAR_DTYPE, 0),
        RingBinding("intents", rings["intents"].name, INTENT_DTYPE, None),
        RingBinding("reports", rings["reports"].name, REPORT_DTYPE, 0),
    )
    config = ProcessConfig(settings, "brain", 0, "", 0, bindings)

    # what the brain must do, computed offline with the same core
    expected = BrainCore(BrainConfig.from_settings(settings, capacity=512), IDS)
    for sid in IDS:
        mine = history[history["symbol_id"] == sid]
        expected.warm_up(sid, mine["open_time_ms"], *(mine[c] for c in
                         ("open", "high", "low", "close", "volume")))  # fmt: skip
    replay = expected.finish_warm_up(None)
    steps = [expected.on_bars(live[live["open_time_ms"] == t], None)
             for t in np.unique(live["open_time_ms"])]  # fmt: skip
    want_intents = np.concatenate([s.intents for s in steps])
    want_signals = np.concatenate([replay.signals, *(s.signals for s in steps)])
    want_labels = [r for s in [replay, *steps] for r in experience_rows(
        s.labels, expected.name_of_index, "5m", 0)]  # fmt: skip
    assert len(want_intents) >= 3 and len(want_labels) >= 3

    producer = rings["market"].producer()
    intents = rings["intents"].consumer(0)
    reports = rings["reports"].producer()
    producer.publish_batch(live, timeout=5.0)
    proc = multiprocessing.get_context("spawn").Process(target=run_brain, args=(config,))
    proc.start()
    try:
        got = []

        def all_intents():
            batch = intents.poll()
            if len(batch):
                got.append(batch.copy())
                intents.commit()
            return sum(len(g) for g in got) >= len(want_intents)

        assert wait_for(all_intents, 60), "intents did not arrive"
        got_intents = np.concatenate(got)
        assert (got_intents["publish_ns"] > 0).all() and (got_intents["recv_ns"] == 42).all()
        for name in ("intent_id", "symbol_id", "decision_time_ms", "notional", "stop_pct",
                     "take_pct", "confidence", "model_version", "features"):  # fmt: skip
            assert np.array_equal(got_intents[name], want_intents[name], equal_nan=True), name

        # an executor report of a closed trade becomes a virtual_trade experience row
        report = np.zeros(1, REPORT_DTYPE)
        report["intent_id"] = got_intents["intent_id"][0]
        report["symbol_id"] = got_intents["symbol_id"][0]
        report["kind"] = REPORT_TRADE_CLOSED
        report["net_return_pct"] = -0.75
        reports.publish_batch(report, timeout=1.0)

        # hot-swap: a champion stored now is used for the next decisions, no restart
        x = np.random.default_rng(3).normal(size=(400, 12))
        champion = ReturnModel.fit(x, x[:, 7] * 0.0 + 1.0 + 0.01 * x[:, 0], FEATURE_NAMES,
                                   ModelParams(num_boost_round=5))  # fmt: skip
        version = asyncio.run(_promote(dsn, champion))
        time.sleep(1.0)  # > model poll
        more = bars_of(slice(WARM + LIVE, WARM + LIVE + 240))
        asyncio.run(_store_history(dsn, more))  # as the feed does
        producer.publish_batch(more, timeout=5.0)

        def swapped_signals():
            rows = asyncio.run(_fetch(dsn, "SELECT count(*) AS n FROM signals WHERE model_version = $1",
                                      version))  # fmt: skip
            return rows[0]["n"] > 0

        assert wait_for(swapped_signals, 60), "the new champion was not used"
        assert wait_for(lambda: asyncio.run(_fetch(
            dsn, "SELECT 1 FROM experience_buffer WHERE source = 'virtual_trade'")), 30)  # fmt: skip
    finally:
        os.kill(proc.pid, 15)
        proc.join(30)
    assert proc.exitcode == 0

    signals = asyncio.run(_fetch(dsn, "SELECT * FROM signals WHERE model_version = 0"
                                      " ORDER BY decision_time_ms, symbol"))  # fmt: skip
    by_id = {int(r["intent_id"]): r for r in signals}
    for s in want_signals:
        r = by_id[int(s["intent_id"])]
        assert r["symbol"] == IDS[int(s["symbol_id"])]
        assert r["decision"] == DECISION_NAMES[int(s["decision"])]
        assert r["decision_time_ms"] == s["decision_time_ms"] and r["confidence"] == s["confidence"]
        assert np.array_equal(np.array(r["features"], float), s["features"], equal_nan=True)
    swapped = asyncio.run(_fetch(dsn, "SELECT * FROM signals WHERE model_version = $1", version))
    assert all(np.isfinite(r["predicted_return_pct"]) for r in swapped)

    stored = asyncio.run(_fetch(dsn, "SELECT * FROM experience_buffer WHERE source = 'shadow'"))
    stored = {(r["symbol"], r["decision_time_ms"]): r for r in stored}
    for row in want_labels:
        r = stored[(row[1], row[3])]
        assert r["label"] == row[5] and r["model_version"] == row[7]
    (trade,) = asyncio.run(
        _fetch(dsn, "SELECT * FROM experience_buffer WHERE source = 'virtual_trade'")
    )
    assert trade["label"] == -0.75
    assert trade["decision_time_ms"] == int(got_intents["decision_time_ms"][0])

    # a restart (nothing left on the ring) re-derives state from market_data and trades nothing
    n_signals = len(asyncio.run(_fetch(dsn, "SELECT 1 FROM signals")))
    while len(intents.poll()):  # what the first life published after the checks above
        intents.commit()
    again = multiprocessing.get_context("spawn").Process(target=run_brain, args=(config,))
    again.start()
    try:
        capfd.readouterr()
        seen = []

        def warmed_up():
            seen.append(capfd.readouterr().err)
            return re.search(r"warm-up: \d+ bars from market_data, (\d+) signals replayed",
                             "".join(seen))  # fmt: skip

        found = wait_for(warmed_up, 30)
        assert found and int(found.group(1)) >= 1  # candidates were re-derived, not re-traded
        time.sleep(1.0)
        assert len(intents.poll()) == 0
        assert len(asyncio.run(_fetch(dsn, "SELECT 1 FROM signals"))) == n_signals
    finally:
        os.kill(again.pid, 15)
        again.join(30)
    assert again.exitcode == 0


async def _store_experience(dsn: str, n: int) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, 12))
    label = np.where(x[:, 0] > 0.5, 1.5, -0.8) + rng.normal(0, 0.2, n)  # planted edge
    t0 = 1_680_000_000_000
    rows = [("backfill", "BTCUSDT", "5m", t0 + i * 300_000, x[i].tolist(), float(label[i]), 1.0,
             0, 1_000 + i) for i in range(n)]  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "experience_buffer", records=rows,
            columns=["source", "symbol", "timeframe", "decision_time_ms", "features", "label",
                     "weight", "model_version", "created_at_ms"],
        )  # fmt: skip
    finally:
        await conn.close()


def test_brain_process_retrains_in_a_spawned_process_when_experience_is_due(
    pg_fresh_dsn, rings, tmp_path
):
    dsn = pg_fresh_dsn
    migrate_sync(dsn)
    asyncio.run(_store_experience(dsn, 1500))
    settings = Settings().replace(home=tmp_path, database_url=dsn, symbols=SYMBOLS)
    bindings = (
        RingBinding("market", rings["market"].name, BAR_DTYPE, 0),
        RingBinding("intents", rings["intents"].name, INTENT_DTYPE, None),
        RingBinding("reports", rings["reports"].name, REPORT_DTYPE, 0),
    )
    proc = multiprocessing.get_context("spawn").Process(
        target=run_brain, args=(ProcessConfig(settings, "brain", 0, "", 0, bindings),)
    )
    proc.start()
    try:
        models = wait_for(lambda: asyncio.run(_fetch(
            dsn, "SELECT model_version, status, train_rows FROM ml_models")), 90)  # fmt: skip
        assert models, "no model was trained"
        (model,) = models
        assert model["status"] == "champion"  # the planted edge is real: it earns promotion
        assert proc.is_alive()  # the decision loop never waited for LightGBM
    finally:
        os.kill(proc.pid, 15)
        proc.join(30)
    assert proc.exitcode == 0


def test_brain_history_parser_reads_the_fixed_layout_and_rejects_anything_else():
    from aegis.processes.brain_history import _ROW, HistoryFormatError, parse_minute_bars

    rows = np.zeros(3, _ROW)
    rows["n"] = 6
    for f in ("lt", "lo", "lh", "ll", "lc", "lv"):
        rows[f] = 8
    rows["t"] = [60_000, 120_000, 180_000]
    rows["c"] = [1.5, 2.5, 3.5]
    head = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    t, cols = parse_minute_bars(head + rows.tobytes() + b"\xff\xff")
    assert t.tolist() == [60_000, 120_000, 180_000] and cols[3].tolist() == [1.5, 2.5, 3.5]
    with pytest.raises(HistoryFormatError, match="complete"):
        parse_minute_bars(b"not a copy stream")
    with pytest.raises(HistoryFormatError, match="whole"):
        parse_minute_bars(head + rows.tobytes()[:-3] + b"\xff\xff")
    rows["lc"][1] = -1  # a NULL close
    with pytest.raises(HistoryFormatError, match="NULL"):
        parse_minute_bars(head + rows.tobytes() + b"\xff\xff")


class _RecordingWriter:
    """Stands in for the DurableWriter: this test is about when rows are queued, not stored."""

    def __init__(self, market) -> None:
        self.market = market
        self.queued: list[tuple[str, int, int]] = []  # (table, rows, market sequence then)

    def submit(self, table: str, rows) -> None:
        self.queued.append((table, len(rows), self.market.sequence))


def test_brain_commits_market_bars_only_after_queueing_their_rows(rings, tmp_path):
    # A crash between the commit and the queueing would lose the rows of those bars: the ring
    # redelivers only what is uncommitted.
    from aegis.ml.registry import ModelRegistry
    from aegis.processes.brain import Brain
    from aegis.ringbuffer import ReadAhead

    settings = Settings().replace(home=tmp_path, symbols=SYMBOLS)
    history, live = bars_of(slice(0, WARM)), bars_of(slice(WARM, WARM + LIVE))
    brain = Brain(symbols=IDS)
    brain.timeframe = settings.decision_timeframe
    brain.config = BrainConfig.from_settings(settings, capacity=512)
    brain.core = BrainCore(brain.config, IDS)
    for sid in IDS:
        mine = history[history["symbol_id"] == sid]
        brain.core.warm_up(sid, mine["open_time_ms"], *(mine[c] for c in
                           ("open", "high", "low", "close", "volume")))  # fmt: skip
    brain.core.finish_warm_up(None)
    brain.registry = ModelRegistry(FEATURE_NAMES)
    brain.market = rings["market"].consumer(0)
    brain.bars = ReadAhead(brain.market)
    brain.reports = rings["reports"].consumer(0)
    brain.intents = rings["intents"].producer()
    brain.writer = writer = _RecordingWriter(brain.market)
    intents = rings["intents"].consumer(0)
    producer = rings["market"].producer()
    live = live[np.argsort(live["open_time_ms"], kind="stable")]  # minute by minute, as the feed

    producer.publish_batch(live[:1])  # a close burst: its bars come one by one
    assert brain.step() == 1
    producer.publish_batch(live[1:2])
    assert brain.step() == 1
    assert brain.market.sequence == 0 and writer.queued == []  # decided, nothing stored yet
    assert brain.store_taken() == 2  # the burst is over (run: no bar for STORE_QUIET_S)
    assert brain.market.sequence == 2

    producer.publish_batch(live[2:4])
    assert brain.step() == 2 and brain.market.sequence == 2
    producer.publish_batch(live[4:])  # catching up: a later minute releases the ones before
    assert brain.step() > 0 and brain.market.sequence > 4
    for _ in range(len(live)):
        if not brain.market.lag:
            break
        brain.step() or brain.store_taken()
    assert brain.market.sequence == len(live)
    # store_taken queues rows, then commits: no row is queued after the bars are all released
    assert writer.queued and all(seq < len(live) for _, _, seq in writer.queued)
    assert {table for table, _, _ in writer.queued} == {"signals", "experience_buffer"}
    assert len(intents.poll()) > 0

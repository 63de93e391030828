"""The decision pipeline: ids, cold start, threshold, sizing caps, signal rows, account view."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.records import INTENT_DTYPE, REPORT_INTENT_REJECTED, REPORT_TRADE_CLOSED, SIDE_BUY
from aegis.risk.decision import (
    DECISION_BELOW_THRESHOLD,
    DECISION_ENTERED,
    DECISION_REPLAYED,
    DECISION_RISK_CAPPED,
    DecisionInputError,
    DecisionPolicy,
    DecisionRows,
    decide,
    intent_ids,
    signal_rows,
)
from aegis.risk.exposure import ExposureBook
from aegis.risk.sizing import SizingPolicy
from aegis.store.tables import table_spec

T0 = 1_680_000_000_000 - 1_680_000_000_000 % 300_000


class FixedModel:
    """A champion stand-in predicting given numbers (the pipeline only calls predict)."""

    def __init__(self, predictions, version=7, win_probability=0.55):
        self.version = version
        self.win_probability = win_probability
        self.model = self
        self._pred = np.asarray(predictions, dtype=np.float64)
        self.calls = 0

    def predict(self, features):
        self.calls += 1
        assert features.shape[1] == 12
        return self._pred[: len(features)]


def rows(k, confidence=0.8, candidate=True, t=T0):
    feats = np.arange(k * 12, dtype=np.float64).reshape(k, 12) / 100
    return DecisionRows(
        symbol_id=np.arange(1, k + 1, dtype=np.uint32),
        decision_time_ms=np.full(k, t, np.int64),
        recv_ns=np.arange(k, dtype=np.int64) + 111,
        features=feats,
        is_candidate=np.broadcast_to(np.asarray(candidate), (k,)).copy(),
        confidence=np.broadcast_to(np.asarray(confidence, dtype=np.float64), (k,)).copy(),
    )


POLICY = DecisionPolicy(threshold_pct=0.05, stop_pct=1.0, take_pct=2.0)


def test_intent_ids_same_candidate_same_id_and_distinct_otherwise():
    sym = np.array([1, 2, 1, 300], np.uint32)
    t = np.array([T0, T0, T0 + 300_000, T0], np.int64)
    a = intent_ids(sym, t, 300_000)
    b = intent_ids(sym.copy(), t.copy(), 300_000)
    assert a.dtype == np.uint64 and np.array_equal(a, b)
    assert len(set(a.tolist())) == 4 and (a != 0).all()
    assert not np.array_equal(a, intent_ids(sym, t, 60_000))  # another timeframe, another id


def test_intent_ids_are_stable_across_releases():
    # Pinned: changing the hash would let a restarted brain re-trade an old candidate.
    assert (
        intent_ids(np.array([1]), np.array([T0]), 300_000)[0]
        == intent_ids(np.array([1], np.uint32), np.array([T0], np.int64), 300_000)[0]
    )
    assert int(intent_ids(np.array([1]), np.array([0]), 300_000)[0]) == 652928327011381175


def test_intent_ids_of_a_small_batch_equal_those_of_a_large_one():
    # Small batches hash on Python ints, large ones on numpy arrays: the ids must not depend on it.
    rng = np.random.default_rng(7)
    sym = rng.integers(0, 2**32, 200).astype(np.uint32)
    t = rng.integers(-(2**62), 2**62, 200)
    whole = intent_ids(sym, t, 300_000)
    parts = np.concatenate([intent_ids(sym[i : i + 3], t[i : i + 3], 300_000)
                            for i in range(0, 200, 3)])  # fmt: skip
    assert whole.dtype == parts.dtype == np.uint64 and np.array_equal(whole, parts)


def test_decide_cold_start_trades_confident_candidates_at_minimum_size():
    r = rows(3, confidence=np.array([0.9, 0.4, 0.6]))
    d = decide(r, None, 10_000.0, 0, np.zeros(3), POLICY)
    assert d.signals["decision"].tolist() == [DECISION_ENTERED, DECISION_BELOW_THRESHOLD,
                                              DECISION_ENTERED]  # fmt: skip
    assert np.isnan(d.signals["predicted_return_pct"]).all()
    assert (d.signals["model_version"] == 0).all()
    assert d.intents.dtype == INTENT_DTYPE
    assert d.intents["notional"].tolist() == [POLICY.cold_start_notional] * 2
    assert d.intents["symbol_id"].tolist() == [1, 3]
    assert d.intents["recv_ns"].tolist() == [111, 113]  # stamp of the closing bar travels on
    assert (d.intents["side"] == SIDE_BUY).all() and (d.intents["publish_ns"] == 0).all()
    assert d.intents["stop_pct"].tolist() == [1.0, 1.0] and d.intents["take_pct"].tolist() == [
        2.0,
        2.0,
    ]


def test_decide_cold_start_never_above_caps_and_slots_go_to_the_most_confident():
    policy = DecisionPolicy(sizing=SizingPolicy(max_open_positions=3, max_position_pct=0.05),
                            cold_start_notional=50.0)  # fmt: skip
    r = rows(3, confidence=np.array([0.6, 0.9, 0.7]))
    d = decide(r, None, 10_000.0, 2, np.zeros(3), policy)  # one free slot
    assert d.intents["symbol_id"].tolist() == [2]
    assert d.intents["notional"][0] == pytest.approx(5.0)  # 0.05% of equity < 50
    assert d.signals["decision"].tolist() == [DECISION_RISK_CAPPED, DECISION_ENTERED,
                                              DECISION_RISK_CAPPED]  # fmt: skip


def test_decide_with_model_trades_only_above_threshold_and_records_version():
    model = FixedModel([0.30, 0.05, -0.2, 0.06])
    d = decide(rows(4), model, 10_000.0, 0, np.zeros(4), POLICY)
    assert model.calls == 1  # one batched prediction
    assert d.signals["decision"].tolist() == [DECISION_ENTERED, DECISION_BELOW_THRESHOLD,
                                              DECISION_BELOW_THRESHOLD, DECISION_ENTERED]  # fmt: skip
    assert d.intents["symbol_id"].tolist() == [1, 4]
    assert (d.intents["model_version"] == 7).all() and (d.signals["model_version"] == 7).all()
    assert d.intents["predicted_return_pct"].tolist() == [0.30, 0.06]
    # fixed fractional: 0.5% risk / 1% stop = 50% of equity, capped at 10% of equity
    assert d.intents["notional"].tolist() == [1000.0, 1000.0]
    assert np.array_equal(d.intents["features"], rows(4).features[[0, 3]])


def test_decide_only_candidates_become_signals():
    r = rows(3, candidate=np.array([True, False, True]))
    d = decide(r, FixedModel([0.5, 0.5]), 10_000.0, 0, np.zeros(3), POLICY)
    assert d.signals["symbol_id"].tolist() == [1, 3]


def test_decide_replay_marks_signals_and_publishes_nothing():
    d = decide(rows(2), None, 10_000.0, 0, np.zeros(2), POLICY, replay=True)
    assert len(d.intents) == 0
    assert (d.signals["decision"] == DECISION_REPLAYED).all()


@settings(max_examples=60, deadline=None)
@given(
    pred=st.lists(st.floats(-3, 3), min_size=1, max_size=12),
    equity=st.floats(0, 1e7),
    open_positions=st.integers(0, 12),
    method=st.sampled_from(["fixed_fractional", "kelly", "atr"]),
)
def test_decide_never_above_caps_and_zero_without_edge(pred, equity, open_positions, method):
    k = len(pred)
    sizing = SizingPolicy(method=method, max_position_pct=10.0, max_open_positions=10,
                          max_symbol_exposure_pct=10.0)  # fmt: skip
    policy = DecisionPolicy(threshold_pct=0.1, sizing=sizing)
    exposure = np.linspace(0, equity * 0.12, k)
    r = rows(k)
    feats = r.features.copy()
    feats[:, 8] = 0.4  # atr_pct for the atr method
    r = DecisionRows(
        r.symbol_id, r.decision_time_ms, r.recv_ns, feats, r.is_candidate, r.confidence
    )
    d = decide(r, FixedModel(pred), equity, open_positions, exposure, policy)
    notional = d.signals["notional"]
    assert (notional <= equity * 0.10 * (1 + 1e-12)).all()
    cap = equity * 0.10 * (1 + 1e-9) + 1e-9
    assert ((notional == 0) | (notional + exposure <= cap)).all()
    assert (notional[np.asarray(pred) <= 0.1] == 0).all()
    assert int(((notional > 0) & (exposure == 0)).sum()) <= max(10 - open_positions, 0)


def test_decide_bad_inputs_raise():
    r = rows(2)
    dup = DecisionRows(np.array([5, 5], np.uint32), r.decision_time_ms, r.recv_ns, r.features,
                       r.is_candidate, r.confidence)  # fmt: skip
    with pytest.raises(DecisionInputError, match="one row per symbol"):
        decide(dup, None, 1000.0, 0, np.zeros(2), POLICY)
    with pytest.raises(DecisionInputError, match="symbol_exposure"):
        decide(r, None, 1000.0, 0, np.zeros(3), POLICY)
    with pytest.raises(DecisionInputError, match="equal lengths"):
        DecisionRows(r.symbol_id, r.decision_time_ms, r.recv_ns, r.features[:1], r.is_candidate,
                     r.confidence)  # fmt: skip
    with pytest.raises(DecisionInputError):
        DecisionPolicy(decision_timeframe="7m")


def test_signal_rows_fit_the_signals_table_and_nan_features_are_null():
    r = rows(1)
    r.features[0, :] = np.nan
    d = decide(r, None, 10_000.0, 0, np.zeros(1), POLICY)
    (out,) = signal_rows(d.signals, lambda i: f"SYM{i}", "5m", 123)
    spec = table_spec("signals")
    assert len(out) == len(spec.columns)
    got = dict(zip(spec.columns, out, strict=True))
    assert got["intent_id"] == int(d.signals["intent_id"][0]) and got["symbol"] == "SYM1"
    assert got["decision"] == "entered" and got["direction"] == 1
    assert got["htf_trend"] is None and got["volume_zscore"] is None
    assert len(got["features"]) == 12 and got["created_at_ms"] == 123


def test_exposure_book_reports_close_positions_and_move_equity():
    book = ExposureBook(1000.0, horizon_ms=600_000)
    book.open(1, 10, 100.0, T0)
    book.open(2, 10, 50.0, T0)
    book.open(2, 10, 50.0, T0)  # same id again: counted once
    assert book.open_positions == 2 and book.exposure(np.array([10, 11])).tolist() == [150.0, 0.0]
    book.on_report(1, REPORT_TRADE_CLOSED, 2.0)
    assert book.equity == pytest.approx(1002.0) and book.exposure(np.array([10]))[0] == 50.0
    book.on_report(2, REPORT_INTENT_REJECTED, np.nan)
    assert book.open_positions == 0 and book.equity == pytest.approx(1002.0)
    assert book.on_report(99, REPORT_TRADE_CLOSED, 1.0) is None  # unknown id: no change
    book.open(3, 11, 10.0, T0)
    assert book.expire(T0 + 600_000) == 0 and book.expire(T0 + 600_001) == 1


def test_exposure_book_opens_a_batch_of_intents_as_one_by_one():
    intents = np.zeros(4, INTENT_DTYPE)
    intents["intent_id"] = [5, 6, 5, 7]  # 5 twice: counted once, as ``open`` does
    intents["symbol_id"] = [10, 11, 10, 10]
    intents["notional"] = [100.0, 20.0, 100.0, 3.0]
    intents["decision_time_ms"] = [T0 + 60_000, T0, T0 + 60_000, T0 + 120_000]
    batch, single = ExposureBook(1000.0, 600_000), ExposureBook(1000.0, 600_000)
    batch.open_intents(intents)
    for row in intents:
        single.open(int(row["intent_id"]), int(row["symbol_id"]), float(row["notional"]),
                    int(row["decision_time_ms"]))  # fmt: skip
    assert batch.positions() == single.positions()
    assert batch.exposure(np.array([10, 11])).tolist() == [103.0, 20.0]
    assert batch.expire(T0 + 600_000) == 0 and batch.expire(T0 + 600_001) == 1  # the oldest: 6
    assert batch.open_positions == 2


def test_exposure_book_looks_up_many_symbols_and_expires_in_decision_time_order():
    book = ExposureBook(1000.0, horizon_ms=600_000)
    for intent_id, symbol_id, t in ((1, 7, T0 + 60_000), (2, 300, T0), (3, 7, T0 + 120_000)):
        book.open(intent_id, symbol_id, 10.0 * intent_id, t)
    asked = np.array([300, 1, 7, 9_999, 7, 0])
    assert book.exposure(asked).tolist() == [20.0, 0.0, 40.0, 0.0, 40.0, 0.0]
    assert book.exposure(np.zeros(0, np.int64)).shape == (0,)
    assert book.expire(T0 + 600_000) == 0
    assert book.expire(T0 + 600_001) == 1  # only the oldest (intent 2, opened last but one)
    assert book.exposure(np.array([300])).tolist() == [0.0]
    book.on_report(1, REPORT_TRADE_CLOSED, 0.0)  # the next oldest left by a report
    assert book.expire(T0 + 660_001) == 0 and book.expire(T0 + 720_001) == 1
    assert book.open_positions == 0
    book.restore(1000.0, [(9, 5, 1.0, T0 - 600_000)])
    assert book.expire(T0) == 0 and book.expire(T0 + 1) == 1


def test_exposure_book_with_many_open_symbols_answers_like_with_few():
    book = ExposureBook(1e6, horizon_ms=600_000)
    held = {sid: float(sid) * 1.5 for sid in range(3, 300, 7)}  # 43 symbols: the sorted lookup
    for intent_id, (sid, notional) in enumerate(held.items(), start=1):
        book.open(intent_id, sid, notional, T0)
    asked = np.arange(0, 320)
    assert book.exposure(asked).tolist() == [held.get(int(s), 0.0) for s in asked]

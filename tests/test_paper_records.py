"""Intent records in, position records out and back: bad input is refused by name."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from paper_helpers import BTC, MIN, T0, exchange, intent

from aegis.paper.intents import InvalidIntent, PaperIntent
from aegis.paper.positions import PaperPosition, PaperRecordError
from aegis.records import INTENT_DTYPE, SIDE_BUY, SIDE_SELL


def intent_record(**fields) -> np.ndarray:
    rec = np.zeros((), dtype=INTENT_DTYPE)
    values = {"intent_id": 42, "decision_time_ms": T0, "symbol_id": BTC, "side": SIDE_BUY,
              "notional": 250.0, "stop_pct": 1.0, "take_pct": 2.0, "predicted_return_pct": 0.3,
              "confidence": 0.6, "model_version": 5, "recv_ns": 123}  # fmt: skip
    values.update(fields)
    for name, value in values.items():
        rec[name] = value
    rec["features"] = np.arange(12.0)
    return rec


def test_paper_intent_from_record_copies_every_field():
    got = PaperIntent.from_record(intent_record())
    assert got == PaperIntent(42, BTC, T0, 250.0, 1.0, 2.0, 0.3, 0.6, 5,
                              tuple(float(i) for i in range(12)), 123)  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"side": SIDE_SELL}, "side"),
        ({"side": 9}, "side"),
        ({"intent_id": 0}, "intent_id"),
        ({"notional": float("nan")}, "notional"),
        ({"notional": -5.0}, "notional"),
        ({"stop_pct": 0.0}, "stop_pct"),
        ({"stop_pct": 100.0}, "stop_pct"),
        ({"take_pct": float("inf")}, "take_pct"),
    ],
)
def test_paper_intent_bad_record_raises_invalid_intent_naming_field(fields, message):
    with pytest.raises(InvalidIntent, match=message):
        PaperIntent.from_record(intent_record(**fields))


def open_position() -> PaperPosition:
    ex = exchange()
    ex.submit(intent())
    ex.on_bar(BTC, T0 + 5 * MIN, 30_000, 30_100, 29_950, 30_050)
    [pos] = ex.open_positions()
    return pos


def test_paper_position_record_round_trip_is_identical():
    pos = open_position()
    row = pos.to_record()
    assert isinstance(row["quantity"], Decimal) and isinstance(row["features"], list)
    assert PaperPosition.from_record(row) == pos
    # Database drivers hand numerics back as Decimal and text: still the same position.
    row["quantity"] = str(row["quantity"])
    row["entry_price"] = Decimal(str(row["entry_price"]))
    assert PaperPosition.from_record(row) == pos


def test_paper_position_after_bar_replaces_only_the_bar_state():
    pos = open_position()
    moved = pos.after_bar(31_000.0, 7, T0 + 11 * MIN, 30_500.0)
    assert moved == replace(pos, peak_high=31_000.0, bars_held=7, last_bar_ms=T0 + 11 * MIN,
                            mark_price=30_500.0)  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", None, "missing field 'quantity'"),
        ("quantity", "-1", "quantity"),
        ("quantity", "abc", "quantity"),
        ("entry_price", 0.0, "entry_price"),
        ("mark_price", float("nan"), "mark_price"),
        ("features", [1.0, 2.0], "features"),
        ("bars_held", 1.5, "bars_held"),
        ("stop_pct", 0.0, "exit distances"),
    ],
)
def test_paper_position_bad_record_raises_record_error(field, value, message):
    row = open_position().to_record()
    if value is None:
        del row[field]
    else:
        row[field] = value
    with pytest.raises(PaperRecordError, match=message):
        PaperPosition.from_record(row)

"""Shared builders of the paper tests: real exchangeInfo filters and intents."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from aegis.binance.filters import SymbolFilters
from aegis.paper.exchange import PaperConfig, PaperExchange
from aegis.paper.intents import PaperIntent

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data"
MODERN = "binance_spot_exchangeInfo_20240908.json.gz"
LEGACY = "binance_spot_exchangeInfo_20211012.json.gz"
BTC, DOGE = 1, 2
T0 = 1_679_000_000_000 - 1_679_000_000_000 % 300_000  # a 5m boundary (2023-03-16)
MIN = 60_000


@cache
def symbol_info(symbol: str, file: str = MODERN) -> dict:
    with gzip.open(DATA / "exchange_info" / file) as fh:
        info = json.load(fh)
    return next(s for s in info["symbols"] if s["symbol"] == symbol)


def filters(symbol: str, file: str = MODERN) -> SymbolFilters:
    return SymbolFilters.from_symbol_info(symbol_info(symbol, file))


def exchange(cash: float = 10_000.0, file: str = MODERN, **config) -> PaperExchange:
    config.setdefault("decision_interval_ms", 5 * MIN)
    return PaperExchange(
        PaperConfig(**config),
        {BTC: filters("BTCUSDT", file), DOGE: filters("DOGEUSDT", file)},
        cash,
    )


def intent(
    intent_id: int = 1, symbol_id: int = BTC, notional: float = 1_000.0, **kw
) -> PaperIntent:
    kw.setdefault("decision_time_ms", T0)
    kw.setdefault("stop_pct", 1.0)
    kw.setdefault("take_pct", 2.0)
    return PaperIntent(intent_id=intent_id, symbol_id=symbol_id, notional=notional, **kw)

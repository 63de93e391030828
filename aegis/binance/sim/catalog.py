"""The exchangeInfo the simulator serves: the recorded real file, cut to the served symbols.

Derived symbols (see data.py) get a copy of their source symbol's real entry with the symbol
and base asset renamed; filters are unchanged, so they trade under real rules.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aegis.binance.filters import SymbolFilters
from aegis.binance.sim.bars import decimals_of
from aegis.binance.sim.data import KlineDataError, KlineSeries


def read_exchange_info(path: Path) -> dict[str, Any]:
    """Read a recorded exchangeInfo answer (``.json`` or ``.json.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)


@dataclass(frozen=True)
class SymbolSpec:
    """What the matching engine needs of one symbol."""

    symbol: str
    base_asset: str
    quote_asset: str
    price_decimals: int
    filters: SymbolFilters
    status: str


class ExchangeCatalog:
    """Served exchangeInfo entries, their filters and tick precision, by symbol."""

    def __init__(
        self,
        raw: dict[str, Any],
        series: dict[str, KlineSeries],
        serve_all_symbols: bool,
        rate_limits: list[dict[str, Any]],
    ) -> None:
        real = {s["symbol"]: s for s in raw["symbols"]}
        entries: dict[str, dict[str, Any]] = {}
        for name, ser in series.items():
            src = real.get(ser.source_symbol)
            if src is None:
                raise KlineDataError(f"{ser.source_symbol} has data but no exchangeInfo entry")
            if ser.derived:
                entry = copy.deepcopy(src)
                entry["symbol"] = name
                entry["baseAsset"] = name[: -len(src["quoteAsset"])]
                entries[name] = entry
            else:
                entries[name] = src
        if serve_all_symbols:
            for name, entry in real.items():
                entries.setdefault(name, entry)
        self._entries = entries
        self._order = sorted(entries)
        self._header = {
            "timezone": raw.get("timezone", "UTC"),
            "rateLimits": rate_limits,
            "exchangeFilters": raw.get("exchangeFilters", []),
        }
        self._specs: dict[str, SymbolSpec] = {}

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._entries

    @property
    def symbols(self) -> list[str]:
        return list(self._order)

    def entry(self, symbol: str) -> dict[str, Any]:
        return self._entries[symbol]

    def spec(self, symbol: str) -> SymbolSpec:
        """Filters and assets of a served symbol (KeyError if not served)."""
        spec = self._specs.get(symbol)
        if spec is None:
            entry = self._entries[symbol]
            tick = next(
                (f["tickSize"] for f in entry["filters"] if f["filterType"] == "PRICE_FILTER"),
                "0.00000001",
            )
            spec = SymbolSpec(
                symbol=symbol,
                base_asset=entry["baseAsset"],
                quote_asset=entry["quoteAsset"],
                price_decimals=decimals_of(tick),
                filters=SymbolFilters.from_symbol_info(entry),
                status=entry.get("status", "TRADING"),
            )
            self._specs[symbol] = spec
        return spec

    def answer(self, server_time_ms: int, symbols: list[str] | None = None) -> dict[str, Any]:
        """The exchangeInfo answer for all served symbols or the given ones."""
        chosen = self._order if symbols is None else symbols
        return {
            "timezone": self._header["timezone"],
            "serverTime": server_time_ms,
            "rateLimits": self._header["rateLimits"],
            "exchangeFilters": self._header["exchangeFilters"],
            "symbols": [self._entries[s] for s in chosen],
        }

"""The tradable universe: which symbols the kernel watches, each with a stable small id.

Pure: exchangeInfo and 24 h tickers in, a frozen ``Universe`` out. Eligible symbols are spot,
status TRADING and quoted in the configured asset; the universe is either an explicit list or the
top N by 24 h quote volume. Ids go into ring records, so they never change meaning: a refresh keeps
every id a symbol already had and gives new symbols ids above the high-water mark, never reusing
the id of a symbol that left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

FIRST_ID = 1  # 0 stays free to mean "no symbol" in a zeroed record
MAX_ID = 2**32 - 1  # BAR_DTYPE symbol_id is uint32


class UniverseError(ValueError):
    """The requested universe cannot be built (unknown or ineligible symbol, bad inputs)."""


@dataclass(frozen=True, slots=True)
class UniverseSymbol:
    symbol: str
    symbol_id: int
    base_asset: str
    quote_asset: str
    quote_volume: Decimal  # 24 h quote volume at selection time (0 when unknown)


@dataclass(frozen=True)
class Universe:
    """The selected symbols in rank order, the next free id, and every id ever assigned.

    ``assigned`` also remembers symbols that left, so one that comes back gets its old id.
    """

    symbols: tuple[UniverseSymbol, ...]
    next_id: int = FIRST_ID
    assigned: Mapping[str, int] = field(default_factory=dict)
    _by_name: Mapping[str, UniverseSymbol] = field(init=False, repr=False, compare=False)
    _by_id: Mapping[int, UniverseSymbol] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.symbol: s for s in self.symbols})
        object.__setattr__(self, "_by_id", {s.symbol_id: s for s in self.symbols})
        if len(self._by_name) != len(self.symbols) or len(self._by_id) != len(self.symbols):
            raise UniverseError("duplicate symbol or id in universe")

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_name

    def ids(self) -> dict[str, int]:
        """Symbol → id, e.g. for ``KlineParser``."""
        return {s.symbol: s.symbol_id for s in self.symbols}

    def id_of(self, symbol: str) -> int:
        """The id of ``symbol``; ``UniverseError`` if it is not in the universe."""
        try:
            return self._by_name[symbol.upper()].symbol_id
        except KeyError:
            raise UniverseError(f"{symbol} is not in the universe") from None

    def symbol_of(self, symbol_id: int) -> str:
        """The symbol of ``symbol_id``; ``UniverseError`` if unknown."""
        try:
            return self._by_id[int(symbol_id)].symbol
        except KeyError:
            raise UniverseError(f"no symbol has id {symbol_id}") from None


def _is_spot(info: Mapping[str, Any]) -> bool:
    if "isSpotTradingAllowed" in info:
        return bool(info["isSpotTradingAllowed"])
    permissions = set(info.get("permissions") or ())
    for group in info.get("permissionSets") or ():
        permissions.update(group)
    return "SPOT" in permissions


def _quote_volumes(tickers: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    volumes = {}
    for ticker in tickers:
        try:
            volumes[ticker["symbol"]] = Decimal(str(ticker["quoteVolume"]))
        except (KeyError, InvalidOperation):
            raise UniverseError(f"ticker without a numeric quoteVolume: {ticker!r:.120}") from None
    return volumes


def select_universe(
    exchange_info: Mapping[str, Any],
    tickers: Iterable[Mapping[str, Any]] = (),
    *,
    quote_asset: str = "USDT",
    top_n: int = 300,
    symbols: Iterable[str] = (),
    previous: Universe | None = None,
) -> Universe:
    """Select the universe.

    With ``symbols``, exactly those (upper-cased, in the given order; each must exist, be spot
    and TRADING, else ``UniverseError`` naming it). Otherwise the ``top_n`` eligible symbols
    quoted in ``quote_asset`` by 24 h quote volume (ties by name). ``previous`` keeps ids stable.
    """
    infos = {s["symbol"]: s for s in exchange_info.get("symbols", ())}
    volumes = _quote_volumes(tickers)
    explicit = [s.strip().upper() for s in symbols if s.strip()]
    if explicit:
        if len(set(explicit)) != len(explicit):
            raise UniverseError("explicit symbol list has duplicates")
        for name in explicit:
            info = infos.get(name)
            if info is None:
                raise UniverseError(f"unknown symbol {name}: not in exchangeInfo")
            if info.get("status") != "TRADING" or not _is_spot(info):
                raise UniverseError(
                    f"symbol {name} is not tradable on spot (status {info.get('status')})"
                )
        chosen = explicit
    else:
        if top_n < 1:
            raise UniverseError(f"top_n must be at least 1, got {top_n}")
        eligible = [
            name
            for name, info in infos.items()
            if info.get("status") == "TRADING"
            and info.get("quoteAsset") == quote_asset
            and _is_spot(info)
        ]
        eligible.sort(key=lambda name: (-volumes.get(name, Decimal(0)), name))
        chosen = eligible[:top_n]
    old_ids = dict(previous.assigned) if previous else {}
    if previous:
        old_ids.update((s.symbol, s.symbol_id) for s in previous.symbols)
    next_id = max(
        previous.next_id if previous else FIRST_ID, FIRST_ID, max(old_ids.values(), default=0) + 1
    )
    selected = []
    for name in chosen:
        symbol_id = old_ids.get(name)
        if symbol_id is None:
            symbol_id, next_id = next_id, next_id + 1
            if symbol_id > MAX_ID:
                raise UniverseError("symbol ids exhausted")
            old_ids[name] = symbol_id
        info = infos[name]
        selected.append(
            UniverseSymbol(
                name,
                symbol_id,
                info["baseAsset"],
                info["quoteAsset"],
                volumes.get(name, Decimal(0)),
            )
        )
    return Universe(tuple(selected), next_id, old_ids)

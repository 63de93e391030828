"""Which symbol a ring id means, and the Binance order rules the executor applies to it.

Ring records carry small integer symbol ids given by ``aegis.binance.universe``; the executor
needs the symbol's name (rows, notifications) and its ``SymbolFilters`` (every paper fill is
checked with the live rules). ``load_symbol_directory`` asks Binance (or the simulator) for
``exchangeInfo`` through the kernel's shared weight budget and selects the universe the same
way the feed does. With an explicit ``AEGIS_SYMBOLS`` list the ids are a pure function of that
list; with top-N selection they depend on the 24 h tickers at selection time, so the executor
and the feed agree only if they select at the same moment — see the report of this module's
author: the universe should be shared through the store once the feed persists it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aegis.binance.filters import SymbolFilters
from aegis.binance.universe import Universe, UniverseError, select_universe
from aegis.config import ConfigError, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SymbolDirectory:
    """Symbol id → name and order filters, for the symbols the executor may trade."""

    names: Mapping[int, str]
    filters: Mapping[int, SymbolFilters]
    quote_asset: str = "USDT"
    infos: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # exchangeInfo entries

    def name_of(self, symbol_id: int) -> str:
        """The symbol's name, or ``#<id>`` for an id outside the universe (rows stay writable)."""
        return self.names.get(int(symbol_id), f"#{int(symbol_id)}")

    def id_of(self, symbol: str) -> int | None:
        """The id of a symbol name, or None."""
        for symbol_id, name in self.names.items():
            if name == symbol:
                return symbol_id
        return None

    @classmethod
    def from_universe(
        cls, universe: Universe, exchange_info: Mapping[str, Any], quote_asset: str = "USDT"
    ) -> SymbolDirectory:
        """Join a universe's ids with the filters of its symbols in ``exchange_info``."""
        infos = {s["symbol"]: s for s in exchange_info["symbols"]}
        names = {s.symbol_id: s.symbol for s in universe.symbols}
        filters = {i: SymbolFilters.from_symbol_info(infos[n]) for i, n in names.items()}
        return cls(names, filters, quote_asset, {i: infos[n] for i, n in names.items()})


async def load_symbol_directory(
    settings: Settings, published: Universe | None = None
) -> SymbolDirectory:
    """The symbol directory from Binance's ``exchangeInfo``.

    ``published`` is the feed's universe (top-N mode): its ids are used as they are. Without it
    the universe is ``AEGIS_SYMBOLS`` (ids 1..n in list order, as the feed assigns them) or, for
    a stand-alone executor, the top N selected here.
    """
    from aegis.binance.rest import BinanceRestClient
    from aegis.binance.weight import WeightBudget

    budget = WeightBudget.for_home(settings.home, share=settings.weight_share)
    try:
        async with BinanceRestClient(settings.rest_url, budget) as rest:
            info = await rest.exchange_info()
            tickers = [] if settings.symbols or published else await rest.ticker_24hr()
    finally:
        budget.close()
    if published is not None:
        return SymbolDirectory.from_universe(published, info, settings.quote_asset)
    try:
        universe = select_universe(
            info, tickers, quote_asset=settings.quote_asset, top_n=settings.top_n,
            symbols=settings.symbols,
        )  # fmt: skip
    except UniverseError as exc:
        # A symbol list the exchange refuses is a configuration error: no restart can fix it.
        raise ConfigError(f"AEGIS_SYMBOLS: {exc}") from exc
    log.info("executor universe: %d symbols", len(universe))
    return SymbolDirectory.from_universe(universe, info, settings.quote_asset)


async def kernel_symbol_directory(settings: Settings, database) -> SymbolDirectory:
    """The directory a kernel process uses: the explicit list, or the feed's published universe."""
    from aegis.processes.feed_universe import published_universe

    published = None if settings.symbols else await published_universe(database)
    return await load_symbol_directory(settings, published)

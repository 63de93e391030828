"""Crash guard: a resting exchange-side stop SELL far below a live position's rule stop.

Live exits are executor-managed on closed 1m bars (see ``live.py``): while the executor, or the
whole machine, is down nothing stops a losing position. The crash guard is the exchange's own
last line of defence, placed right after an entry fills:

* one SELL stop order for the position's quantity, ``STOP_LOSS`` where the symbol's
  ``orderTypes`` allow it (a stop-market cannot be jumped and left resting), else
  ``STOP_LOSS_LIMIT`` (every symbol of the bundled 2024 exchangeInfo: none lists STOP_LOSS);
* its stop at ``entry × (1 − distance_multiple × stop_pct / 100)``: far below the rule's stop, so
  while the executor runs, its own exit always comes first and the guard never fires;
* a STOP_LOSS_LIMIT's limit a further ``limit_gap_pct`` below its stop: a SELL limit under the
  market executes at the best bids, so the gap only bounds how far a crash may run through the
  book before the remainder is left resting;
* client order id ``aegis-<intent id>-g<attempt>`` (``guard_client_id``), distinct from the entry
  (``aegis-<id>``) and exit (``-x<n>``) ids and never reused: a guard re-placed after a restart
  takes the next attempt number.

While it rests the guard locks the position's base asset, so a MARKET SELL of the position is
refused (-2010 insufficient balance) until the guard is released: ``CrashGuard.release`` cancels
it and reports how much it had sold (a guard that filled or partly filled while the executor
looked away is an exit with reason ``crash_guard``, code ``EXIT_CRASH_GUARD``).

This module plans and sends; it journals nothing. ``PositionGuards`` (``position_guards``)
writes each guard to ``LiveExchange``'s order journal before ``place``, and the exchange settles
the answers, exactly as for entries and exits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal

from aegis.binance.errors import NoSuchOrder, UnknownOrderState
from aegis.binance.filters import FilterRejected, InvalidOrder, SymbolFilters, to_decimal
from aegis.binance.live_book import (
    CLIENT_ID_PREFIX,
    EXIT_CRASH_GUARD,
    EXIT_CRASH_GUARD_NAME,
    LiveMarket,
    entry_client_id,
)
from aegis.binance.models import ExchangeOrder
from aegis.binance.rest import BinanceRestClient

log = logging.getLogger(__name__)

ROLE_GUARD = "guard"  # journal role of a guard order (beside journal.ROLE_ENTRY / ROLE_EXIT)
GUARD_TIME_IN_FORCE = "GTC"
STATUS_ABSENT = "ABSENT"  # release(): the exchange never had the guard
_GUARD_ID = re.compile(rf"^{re.escape(CLIENT_ID_PREFIX)}(\d+)-g(\d+)$")
_HUNDRED = Decimal(100)


def guard_client_id(intent_id: int, attempt: int) -> str:
    """``newClientOrderId`` of the ``attempt``-th guard of an intent (ids are never reused)."""
    if attempt < 1:
        raise ValueError(f"guard attempt must be >= 1, got {attempt}")
    return f"{entry_client_id(intent_id)}-g{attempt}"


def parse_guard_client_id(client_order_id: str) -> tuple[int, int] | None:
    """(intent id, attempt) of a guard's client order id; None for any other id."""
    match = _GUARD_ID.match(client_order_id)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Where the guard sits.

    ``distance_multiple`` (default 2.0): the guard's distance below the entry in units of the
    rule's stop distance; at least 1, so the guard never pre-empts the rule's own stop.
    ``limit_gap_pct`` (default 5.0): STOP_LOSS_LIMIT only, the limit's distance below the stop in
    percent. A SELL limit under the market sells at the best bids, not at its limit, so a deep
    limit costs nothing in an orderly fall; it only bounds how far a crash may run through the
    book before the rest is left resting unsold. A last line of defence should sell: 0 puts the
    limit at the stop, which the first fast fall jumps over.
    """

    distance_multiple: float = 2.0
    limit_gap_pct: float = 5.0

    def __post_init__(self) -> None:
        if not self.distance_multiple >= 1.0:
            raise ValueError(f"distance_multiple must be >= 1, got {self.distance_multiple}")
        if not 0.0 <= self.limit_gap_pct < 100.0:
            raise ValueError(f"limit_gap_pct must be in [0, 100), got {self.limit_gap_pct}")


class GuardUnavailable(Exception):
    """No guard can be placed for this position; ``reason`` is short and groupable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GuardOrder:
    """One guard order, on the symbol's grid, ready to send."""

    client_order_id: str
    symbol: str
    order_type: str  # STOP_LOSS or STOP_LOSS_LIMIT
    quantity: Decimal
    stop_price: Decimal
    limit_price: Decimal | None  # None for STOP_LOSS

    @property
    def time_in_force(self) -> str | None:
        return GUARD_TIME_IN_FORCE if self.limit_price is not None else None

    def journal_detail(self) -> dict[str, object]:
        """The journal ``detail`` of this guard: a fill of it is an exit with reason
        ``crash_guard`` whose decision price is the stop (the level the guard chose)."""
        return {
            "exit_code": EXIT_CRASH_GUARD,
            "decision_price": float(self.stop_price),
            "stop_price": str(self.stop_price),
            "limit_price": None if self.limit_price is None else str(self.limit_price),
        }


def guard_order_type(filters: SymbolFilters) -> str:
    """STOP_LOSS when the symbol allows it, else STOP_LOSS_LIMIT; ``GuardUnavailable`` if
    neither (an entry without ``orderTypes`` is taken to allow STOP_LOSS_LIMIT)."""
    allowed = filters.order_types
    if "STOP_LOSS" in allowed:
        return "STOP_LOSS"
    if "STOP_LOSS_LIMIT" in allowed or not allowed:
        return "STOP_LOSS_LIMIT"
    raise GuardUnavailable("no_stop_order_type", f"{filters.symbol} allows {sorted(allowed)}")


def plan_guard(
    market: LiveMarket,
    intent_id: int,
    attempt: int,
    quantity: Decimal,
    entry_price: float | Decimal,
    stop_pct: float,
    config: GuardConfig,
    *,
    reference_price: float | Decimal | None = None,
    open_algo_orders: int = 0,
) -> GuardOrder:
    """The guard of a position of ``quantity`` bought at ``entry_price`` with a rule stop of
    ``stop_pct`` percent, fitted to the symbol's filters, or ``GuardUnavailable``.

    ``reference_price`` is the PERCENT_PRICE reference (``avgPrice``; default: the entry price);
    ``open_algo_orders`` counts the account's open stop orders on the symbol (other guards), which
    MAX_NUM_ALGO_ORDERS caps (5 on most symbols). Pure: nothing is sent.
    """
    filters = market.filters
    order_type = guard_order_type(filters)
    try:
        entry = to_decimal(entry_price, "entry_price")
        reference = entry if reference_price is None else to_decimal(reference_price, "reference")
        distance = to_decimal(stop_pct, "stop_pct") * to_decimal(
            config.distance_multiple, "distance_multiple"
        )
        if not distance > 0:
            raise GuardUnavailable("no_rule_stop", f"stop_pct {stop_pct}")
        if entry <= 0 or distance >= _HUNDRED:
            raise GuardUnavailable("no_price_left", f"entry {entry}, distance {distance}%")
        stop = filters.fit_stop_price("SELL", entry * (1 - distance / _HUNDRED))
        if order_type == "STOP_LOSS":
            # Exchange filters see a stop-market as the MARKET order it becomes; judging its
            # notional at the stop (not at today's price) keeps it valid when it triggers.
            qty, _ = filters.fit("SELL", "MARKET", quantity, avg_price=stop)
            cap = filters.max_num_algo_orders
            if cap and open_algo_orders + 1 > cap:
                raise FilterRejected("MAX_NUM_ALGO_ORDERS", f"{open_algo_orders} open")
            limit = None
        else:
            gap = to_decimal(config.limit_gap_pct, "limit_gap_pct") / _HUNDRED
            qty, limit = filters.fit(
                "SELL", order_type, quantity, stop * (1 - gap), reference,
                open_algo_orders=open_algo_orders,
            )  # fmt: skip
    except FilterRejected as exc:
        raise GuardUnavailable("filter:" + exc.filter_type, exc.detail) from None
    except InvalidOrder as exc:
        raise GuardUnavailable("invalid_order", str(exc)) from None
    return GuardOrder(
        guard_client_id(intent_id, attempt), market.symbol, order_type, qty, stop, limit
    )


@dataclass(frozen=True, slots=True)
class GuardRelease:
    """What releasing a guard found: its final status and how much of the position it sold."""

    client_order_id: str
    status: str  # CANCELED, FILLED, EXPIRED, ... or STATUS_ABSENT (the exchange never had it)
    sold: Decimal  # base quantity the guard executed before it stopped (0: untouched)
    order: ExchangeOrder | None  # the exchange's last answer about it (None when absent)

    @property
    def sold_everything(self) -> bool:
        """True when the guard itself closed the position: send no exit."""
        return self.status == "FILLED"


class CrashGuard:
    """Places, inspects and releases guard orders through the REST client."""

    def __init__(self, rest: BinanceRestClient) -> None:
        self.rest = rest

    async def place(self, order: GuardOrder, *, lookups: int = 3) -> ExchangeOrder:
        """Send the guard once (journal it first). Errors are the REST client's typed ones:
        ``OrderRejected`` (e.g. -2010 ``Order would trigger immediately.`` when the price is
        already below the guard, ``FilterFailure``) means it does not exist; an unknown outcome
        that the client could not resolve by ``lookups`` queries raises ``UnknownOrderState``."""
        answer = await self.rest.new_order(
            order.symbol, "SELL", order.order_type, order.quantity, order.limit_price,
            client_order_id=order.client_order_id, time_in_force=order.time_in_force,
            stop_price=order.stop_price, lookups=lookups,
        )  # fmt: skip
        log.info(
            "crash guard %s placed: %s %s %s stop %s limit %s, status %s",
            order.client_order_id, order.order_type, order.quantity, order.symbol,
            order.stop_price, order.limit_price, answer.status,
        )  # fmt: skip
        return answer

    async def status(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        """The guard as the exchange knows it now (None: never placed)."""
        try:
            return await self.rest.query_order(symbol, orig_client_order_id=client_order_id)
        except NoSuchOrder:
            return None

    async def release(self, symbol: str, client_order_id: str) -> GuardRelease:
        """Cancel the guard so that its base asset is free for the executor's own exit.

        A guard that is no longer open (it filled or expired while we looked away) is looked up
        instead: ``sold`` says how much of the position it sold, ``sold_everything`` that the
        position is closed and no exit may be sent. If the cancel's outcome is unknown and the
        guard is still open, ``UnknownOrderState`` propagates: its base is still locked, so
        send no exit now and try again later.
        """
        try:
            order = await self.rest.cancel_order(symbol, orig_client_order_id=client_order_id)
        except NoSuchOrder:  # -2011: not open any more, or never placed
            order = await self.status(symbol, client_order_id)
        except UnknownOrderState:
            order = await self.status(symbol, client_order_id)
            if order is not None and not order.is_final:
                raise
        if order is None:
            log.info("crash guard %s released: the exchange never had it", client_order_id)
            return GuardRelease(client_order_id, STATUS_ABSENT, Decimal(0), None)
        if not order.is_final:
            # -2011 for an order a query still shows open: the exchange contradicts itself.
            raise UnknownOrderState(
                f"guard {client_order_id} refused to cancel but is {order.status}"
            )
        log.info(
            "crash guard %s released: %s, sold %s", client_order_id, order.status,
            order.executed_quantity,
        )  # fmt: skip
        return GuardRelease(client_order_id, order.status, order.executed_quantity, order)


__all__ = [
    "EXIT_CRASH_GUARD",
    "EXIT_CRASH_GUARD_NAME",
    "ROLE_GUARD",
    "STATUS_ABSENT",
    "CrashGuard",
    "GuardConfig",
    "GuardOrder",
    "GuardRelease",
    "GuardUnavailable",
    "guard_client_id",
    "guard_order_type",
    "parse_guard_client_id",
]

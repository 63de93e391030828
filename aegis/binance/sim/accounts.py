"""Simulated accounts and orders, and their Binance wire views (REST answers, user events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from aegis.binance.sim.config import AccountSpec

ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


def d8(x: Decimal) -> str:
    """Binance's 8-decimal string of a Decimal."""
    return f"{x:.8f}"


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


class InsufficientBalance(Exception):
    """The account cannot cover an order (answered -2010 by the engine)."""


class Account:
    """Balances of one API key; every change is recorded for ``outboundAccountPosition``."""

    def __init__(self, spec: AccountSpec) -> None:
        self.api_key = spec.api_key
        self.api_secret = spec.api_secret
        self.balances: dict[str, Balance] = {a: Balance(Decimal(v)) for a, v in spec.balances}
        self.update_time = 0
        self._changed: set[str] = set()

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def lock(self, asset: str, amount: Decimal) -> None:
        b = self.balance(asset)
        if b.free < amount:
            raise InsufficientBalance(asset)
        b.free -= amount
        b.locked += amount
        self._changed.add(asset)

    def unlock(self, asset: str, amount: Decimal) -> None:
        b = self.balance(asset)
        b.locked -= amount
        b.free += amount
        self._changed.add(asset)

    def spend(self, asset: str, amount: Decimal, from_locked: bool = False) -> None:
        b = self.balance(asset)
        if from_locked:
            b.locked -= amount
        else:
            if b.free < amount:
                raise InsufficientBalance(asset)
            b.free -= amount
        self._changed.add(asset)

    def credit(self, asset: str, amount: Decimal) -> None:
        self.balance(asset).free += amount
        self._changed.add(asset)

    def take_changes(self, now_ms: int) -> list[str]:
        """Assets changed since the last call (sorted), stamping the update time."""
        changed = sorted(self._changed)
        self._changed.clear()
        if changed:
            self.update_time = now_ms
        return changed

    def position_event(self, assets: list[str], now_ms: int) -> dict:
        """``outboundAccountPosition`` for the given assets."""
        return {
            "e": "outboundAccountPosition",
            "E": now_ms,
            "u": self.update_time,
            "B": [
                {"a": a, "f": d8(self.balance(a).free), "l": d8(self.balance(a).locked)}
                for a in assets
            ],
        }


@dataclass(frozen=True)
class Fill:
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int
    maker: bool
    time_ms: int


@dataclass
class SimOrder:
    """One order as the exchange keeps it."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    api_key: str
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cumm_quote: Decimal = ZERO
    update_time_ms: int = 0
    locked_asset: str = ""
    locked_amount: Decimal = ZERO
    fills: list[Fill] = field(default_factory=list)
    cancel_client_order_id: str = ""
    stop_price: Decimal | None = None
    """Trigger price of a stop or take-profit order (None for LIMIT, MARKET, LIMIT_MAKER)."""
    triggered_ms: int = 0
    """When a stop or take-profit order triggered (0: still waiting for its price)."""
    executions: int = 0
    """executionReports sent so far (numbers each report's execution id ``I``)."""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_stop(self) -> bool:
        """A STOP_LOSS(_LIMIT) or TAKE_PROFIT(_LIMIT) order ("algo" order in Binance's words)."""
        return self.stop_price is not None

    @property
    def is_waiting(self) -> bool:
        """An open stop or take-profit order whose trigger price has not been reached."""
        return self.is_stop and self.triggered_ms == 0 and self.is_open

    @property
    def working_time(self) -> int:
        """When the order started working on the book; -1 while a stop waits for its price."""
        if not self.is_stop:
            return self.time_ms
        return self.triggered_ms or -1

    def _stop_field(self) -> dict:
        # A conditional field: Binance shows stopPrice only on stop and take-profit orders.
        return {"stopPrice": d8(self.stop_price)} if self.stop_price is not None else {}

    def _core(self) -> dict:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
        }

    def _state(self) -> dict:
        return {
            "price": d8(self.price),
            "origQty": d8(self.orig_qty),
            "executedQty": d8(self.executed_qty),
            "origQuoteOrderQty": d8(ZERO),
            "cummulativeQuoteQty": d8(self.cumm_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
        }

    def new_order_answer(self, resp_type: str) -> dict:
        """POST /api/v3/order answer in the ACK, RESULT or FULL shape."""
        out = self._core() | {"transactTime": self.time_ms}
        if resp_type == "ACK":
            return out
        out |= self._state() | self._stop_field()
        out |= {"workingTime": self.working_time, "selfTradePreventionMode": "NONE"}
        if resp_type == "FULL":
            out["fills"] = [
                {
                    "price": d8(f.price),
                    "qty": d8(f.qty),
                    "commission": d8(f.commission),
                    "commissionAsset": f.commission_asset,
                    "tradeId": f.trade_id,
                }
                for f in self.fills
            ]
        return out

    def query_answer(self) -> dict:
        """GET /api/v3/order (and openOrders element) shape."""
        return (
            self._core()
            | self._state()
            | {
                "stopPrice": d8(self.stop_price or ZERO),
                "icebergQty": d8(ZERO),
                "time": self.time_ms,
                "updateTime": self.update_time_ms or self.time_ms,
                "isWorking": self.triggered_ms > 0 if self.is_stop else self.type != "MARKET",
                "workingTime": self.working_time,
                "selfTradePreventionMode": "NONE",
            }
        )

    def cancel_answer(self, now_ms: int) -> dict:
        """DELETE /api/v3/order shape."""
        return (
            {"symbol": self.symbol, "origClientOrderId": self.client_order_id}
            | {"orderId": self.order_id, "orderListId": -1}
            | {"clientOrderId": self.cancel_client_order_id, "transactTime": now_ms}
            | self._state()
            | self._stop_field()
            | {"selfTradePreventionMode": "NONE"}
        )

    def trade_answers(self) -> list[dict]:
        """``GET /api/v3/myTrades`` entries of this order's fills."""
        return [
            {
                "symbol": self.symbol,
                "id": f.trade_id,
                "orderId": self.order_id,
                "orderListId": -1,
                "price": d8(f.price),
                "qty": d8(f.qty),
                "quoteQty": d8(f.price * f.qty),
                "commission": d8(f.commission),
                "commissionAsset": f.commission_asset,
                "time": f.time_ms,
                "isBuyer": self.side == "BUY",
                "isMaker": f.maker,
                "isBestMatch": True,
            }
            for f in self.fills
        ]

    def execution_report(self, exec_type: str, now_ms: int, fill: Fill | None = None) -> dict:
        """``executionReport`` user-data event after ``exec_type`` (NEW, TRADE, CANCELED, ...)."""
        canceled = exec_type == "CANCELED"
        report = {
            "e": "executionReport",
            "E": now_ms,
            "s": self.symbol,
            "c": self.cancel_client_order_id if canceled else self.client_order_id,
            "S": self.side,
            "o": self.type,
            "f": self.time_in_force,
            "q": d8(self.orig_qty),
            "p": d8(self.price),
            "P": d8(self.stop_price or ZERO),
            "F": d8(ZERO),
            "g": -1,
            "C": self.client_order_id if canceled else "",
            "x": exec_type,
            "X": self.status,
            "r": "NONE",
            "i": self.order_id,
            "l": d8(fill.qty if fill else ZERO),
            "z": d8(self.executed_qty),
            "L": d8(fill.price if fill else ZERO),
            "n": d8(fill.commission) if fill else "0",
            "N": fill.commission_asset if fill else None,
            "T": now_ms,
            "t": fill.trade_id if fill else -1,
            "I": self.order_id * 1000 + self.executions,
            "w": self.is_open and not self.is_waiting,
            "m": bool(fill and fill.maker),
            "M": False,
            "O": self.time_ms,
            "Z": d8(self.cumm_quote),
            "Y": d8(fill.price * fill.qty if fill else ZERO),
            "Q": d8(ZERO),
            "W": self.working_time,
            "V": "NONE",
        }
        if self.is_stop and self.triggered_ms == 0:
            del report["W"]  # Working Time appears only once the order works on the book
        return report

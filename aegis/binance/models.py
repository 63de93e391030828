"""Domain views of Binance REST answers, so Binance's field names stay inside aegis/binance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


def _d(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order (``fills`` of a FULL new-order answer)."""

    price: Decimal
    quantity: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int = -1  # Binance's tradeId; -1 when the answer does not carry it


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """An order as the exchange reports it (new order, query, cancel, open orders)."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    order_type: str
    status: str  # NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED, EXPIRED_IN_MATCH
    price: Decimal
    quantity: Decimal
    executed_quantity: Decimal
    cumulative_quote: Decimal
    time_ms: int
    fills: tuple[Fill, ...] = ()

    @property
    def is_final(self) -> bool:
        """True when the order can no longer change."""
        return self.status in ("FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH")

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> ExchangeOrder:
        """Build from an order object of ``/api/v3/order`` or ``/api/v3/openOrders``."""
        # A cancel answer names the cancelled id origClientOrderId; its clientOrderId is new.
        client_id = raw.get("origClientOrderId") or raw.get("clientOrderId", "")
        fills = tuple(
            Fill(
                _d(f["price"]),
                _d(f["qty"]),
                _d(f["commission"]),
                f["commissionAsset"],
                int(f.get("tradeId", -1)),
            )
            for f in raw.get("fills", ())
        )
        return cls(
            symbol=raw["symbol"],
            order_id=int(raw["orderId"]),
            client_order_id=client_id,
            side=raw.get("side", ""),
            order_type=raw.get("type", ""),
            status=raw.get("status", ""),
            price=_d(raw.get("price")),
            quantity=_d(raw.get("origQty")),
            executed_quantity=_d(raw.get("executedQty")),
            cumulative_quote=_d(raw.get("cummulativeQuoteQty")),
            time_ms=int(raw.get("transactTime") or raw.get("updateTime") or raw.get("time") or 0),
            fills=fills,
        )


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """``GET /api/v3/account``: balances by asset and whether the account may trade."""

    can_trade: bool
    balances: Mapping[str, Balance]
    update_time_ms: int

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> AccountSnapshot:
        balances = {
            b["asset"]: Balance(b["asset"], _d(b["free"]), _d(b["locked"]))
            for b in raw.get("balances", ())
        }
        return cls(bool(raw.get("canTrade", False)), balances, int(raw.get("updateTime", 0)))


@dataclass(frozen=True, slots=True)
class CommissionRates:
    """``GET /api/v3/account/commission``: standard maker/taker rates as fractions (0.001 = 0.1%)."""

    symbol: str
    maker: Decimal
    taker: Decimal

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> CommissionRates:
        standard = raw["standardCommission"]
        return cls(raw["symbol"], _d(standard["maker"]), _d(standard["taker"]))

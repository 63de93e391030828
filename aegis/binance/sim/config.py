"""Configuration of one simulator run (frozen; faults are toggled separately at run time)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
KLINES_DIR = DATA_DIR / "klines"
EXCHANGE_INFO_FILE = DATA_DIR / "exchange_info" / "binance_spot_exchangeInfo_20240908.json.gz"

DEFAULT_API_KEY = "aegisSimKey0000000000000000000000000000000000000000000000000000001"
DEFAULT_API_SECRET = "aegisSimSecret000000000000000000000000000000000000000000000000001"

MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class AccountSpec:
    """One simulated account: its API key pair and starting balances (asset -> free amount)."""

    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    balances: tuple[tuple[str, Decimal], ...] = (("USDT", Decimal("10000")),)


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulator run.

    Time: the simulated clock starts at ``start_ms`` (default: the first recorded bar) and runs
    ``speed`` times faster than wall time; ``speed=0`` replays as fast as the consumers read.
    The 24 h connection cut is in simulated time, so it shrinks with the speed factor; ping
    timing is in wall time (see ``ping_interval_s``), scaled by the speed factor by default.
    """

    data_paths: tuple[Path, ...] = (KLINES_DIR,)
    """Kline files (``binance_spot_<SYMBOL>_1m_*.csv.gz``) or directories holding them."""
    symbols: tuple[str, ...] | None = None
    """Real symbols to serve (None: every 1m file found)."""
    symbol_count: int | None = None
    """Serve this many symbols, deriving extra ones from the real series (see data.py)."""
    from_ms: int | None = None
    """Drop recorded bars opening before this time."""
    to_ms: int | None = None
    """Drop recorded bars opening at or after this time."""
    start_ms: int | None = None
    """Simulated time at start (default: open time of the first bar)."""
    speed: float = 1.0
    """Replay speed factor; 0 = as fast as possible (clock stepped by the replay)."""
    start_paused: bool = False
    """Keep the clock still until ``sim.clock.resume()`` (lets clients connect first)."""
    hold_without_listeners: bool = True
    """At speed 0, stand still while no stream connection listens (else race to the end)."""

    def ping_timing(self) -> tuple[float, float]:
        """(ping interval, pong timeout) in wall seconds for this run."""
        if self.speed == 0:
            interval = self.ping_interval_s or 20.0
            timeout = self.pong_timeout_s or max(60.0, 3 * interval)
        else:
            interval = self.ping_interval_s or max(20.0 / self.speed, 1.0)
            timeout = self.pong_timeout_s or max(60.0 / self.speed, 3 * interval)
        return interval, timeout

    updates_per_bar: int = 30
    """Kline events per 1m bar (Binance: every 2 s → 30); the last one is the x=true close."""
    exchange_info_path: Path = EXCHANGE_INFO_FILE
    serve_all_symbols: bool = False
    """Serve every exchangeInfo symbol, not only the ones with data."""
    host: str = "127.0.0.1"
    port: int = 0
    accounts: tuple[AccountSpec, ...] = (AccountSpec(),)
    commission_rate: Decimal = Decimal("0.001")
    """Maker and taker commission, charged in the asset received."""
    weight_limit_1m: int = 6000
    rate_window_s: float = 60.0
    """Length of the REQUEST_WEIGHT window in wall seconds (Binance: 1 minute)."""
    ban_after_429s: int = 3
    """Requests answered 429 in one window after which the IP is banned (418)."""
    ban_seconds: float = 120.0
    """First ban length (doubles for each further ban, capped at 3 days)."""
    orders_limit_10s: int = 50
    orders_limit_1d: int = 160_000
    ping_interval_s: float | None = None
    """Wall seconds between server pings. None: Binance's 20 s of simulated time, at least
    1 s of wall time (a pong counts against 5 msg/s); 20 s of wall time at speed 0."""
    pong_timeout_s: float | None = None
    """Wall seconds a ping may stay unanswered. None: Binance's 1 min of simulated time, at
    least 3 ping intervals; 60 s of wall time at speed 0 (a flooded reader lags behind)."""
    max_incoming_per_s: int = 5
    max_streams_per_connection: int = 1024
    max_connects_per_5min: int = 300
    """Stream connection attempts per IP in 5 minutes of wall time (HTTP 429 beyond)."""
    connection_lifetime_ms: int = 86_400_000
    queue_size: int = 4096
    """Frames buffered per stream connection (at speed 0 the replay waits for the reader)."""

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0, got {self.speed}")
        if not 1 <= self.updates_per_bar <= 60:
            raise ValueError(f"updates_per_bar must be in 1..60, got {self.updates_per_bar}")
        if self.symbol_count is not None and self.symbol_count < 1:
            raise ValueError(f"symbol_count must be >= 1, got {self.symbol_count}")
        for name in ("ping_interval_s", "pong_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not self.accounts:
            raise ValueError("at least one account is required")

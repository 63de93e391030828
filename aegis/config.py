"""One typed, frozen settings object read from ``AEGIS_*`` environment variables.

Every field maps to the variable ``AEGIS_<FIELD NAME IN UPPER CASE>``; an optional TOML file
(``AEGIS_CONFIG_FILE``) supplies the same keys in lower case, and the environment wins over the
file. Unknown keys and bad values are errors at start naming the variable, so a typo never runs
silently with a default. Secrets may come from ``AEGIS_<NAME>_FILE`` and are never printed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from aegis.cpu_affinity import AffinityError, parse_affinity

ENV_PREFIX = "AEGIS_"
CONFIG_FILE_VAR = "AEGIS_CONFIG_FILE"
# Not a setting: aegis.ringbuffer (which imports nothing of ours) reads it from the environment
# to choose its kernels' backend (auto, aot, jit).
RING_KERNELS_VAR = "AEGIS_RING_KERNELS"


class ConfigError(ValueError):
    """A setting is unknown or its value cannot be used; the message names the variable."""


def _doc(text: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"doc": text, "secret": secret, "choices": choices}


def setting(default: Any, text: str, **kw: Any) -> Any:
    return field(default=default, metadata=_doc(text, **kw))


@dataclass(frozen=True)
class Settings:
    """Everything a kernel process needs to know, loaded once at start."""

    # -- where things live
    home: Path = setting(
        Path("var"), "Data directory: embedded databases, spill files, reports, lock."
    )
    database_url: str = setting(
        "", "PostgreSQL DSN; empty starts an embedded PostgreSQL under home.", secret=True
    )
    redis_url: str = setting(
        "", "Redis URL; empty starts an embedded Redis under home.", secret=True
    )
    redis_prefix: str = setting("aegis:", "Prefix of every Redis key this kernel writes.")
    log_level: str = setting("INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    # -- kernel
    heartbeat_deadline_s: float = setting(
        5.0, "A child whose heartbeat is older than this is restarted."
    )
    kill_grace_s: float = setting(3.0, "SIGTERM to SIGKILL grace for a hung child.")
    shutdown_deadline_s: float = setting(20.0, "Graceful shutdown deadline before SIGKILL.")
    restart_backoff_max_s: float = setting(30.0, "Ceiling of the exponential restart backoff.")
    restart_stable_s: float = setting(60.0, "Uptime after which a child's backoff resets.")
    crash_loop_restarts: int = setting(
        5, "More restarts than this within the window is a crash loop."
    )
    crash_loop_window_s: float = setting(300.0, "Window of the crash-loop count.")
    start_timeout_s: float = setting(30.0, "A child not ready this long after start is restarted.")
    warm_spares: bool = setting(
        True, "Keep a pre-started spare per process: ~0.05 s restarts, 60-115 MB RSS each."
    )
    cpu_affinity: str = setting(
        "auto",
        "Pin feed, brain and executor to CPUs: auto (2 CPUs: brain on one, feed and "
        "executor on the other; 3+: one each), off, or a map like feed=0,brain=1,executor=0.",
    )
    memory_ceiling_mb: int = setting(
        1024, "A child whose RSS exceeds this is restarted (reason memory)."
    )
    metrics_port: int = setting(
        9464, "Prometheus /metrics and /healthz port on 127.0.0.1; 0 disables."
    )
    ring_capacity: int = setting(65536, "Records per ring (a power of two).")

    # -- market data
    rest_url: str = setting(
        "https://api.binance.com", "Binance REST base URL (or the simulator's)."
    )
    ws_url: str = setting("wss://stream.binance.com:9443", "Binance market-stream base URL.")
    ws_api_url: str = setting(
        "wss://ws-api.binance.com:443/ws-api/v3", "Binance WebSocket API URL."
    )
    symbols: tuple[str, ...] = setting((), "Explicit symbol list (comma separated); empty = top N.")
    top_n: int = setting(
        300, "Universe size when no symbols are listed: top N by 24 h quote volume."
    )
    quote_asset: str = setting("USDT", "Quote asset of the universe.")
    weight_share: float = setting(0.5, "Share of Binance's REST weight limit the kernel may use.")

    # -- brain
    decision_timeframe: str = setting(
        "5m", "Timeframe of decisions.", choices=("1m", "5m", "15m", "1h")
    )
    entry_threshold_pct: float = setting(0.05, "Minimum predicted net % return to trade.")
    sizing: str = setting(
        "fixed_fractional", "Position sizing.", choices=("fixed_fractional", "kelly", "atr")
    )
    risk_per_trade_pct: float = setting(0.5, "Equity % risked per trade (fixed fractional).")
    kelly_fraction: float = setting(0.25, "Fraction of full Kelly.")
    max_position_pct: float = setting(10.0, "Cap of one position, % of equity.")
    max_open_positions: int = setting(10, "Cap of concurrent positions.")
    max_symbol_exposure_pct: float = setting(10.0, "Cap of exposure per symbol, % of equity.")
    candidate_rule: str = setting(
        "smc_long", "Candidate entry rule.", choices=("smc_long", "ema_crossover")
    )
    cold_start_notional: float = setting(10.0, "Entry size (quote) while no model is champion.")
    cold_start_min_confidence: float = setting(
        0.5, "Minimum rule confidence to trade at cold start."
    )
    atr_stop_multiple: float = setting(2.0, "ATR sizing: stop distance = k x ATR%.")
    brain_warm_up_days: float = setting(
        30.0, "History loaded from market_data when the brain starts."
    )
    retrain_min_rows: int = setting(500, "New labelled rows that trigger a retrain.")
    retrain_interval_s: float = setting(3600.0, "Elapsed time that triggers a retrain.")
    train_folds: int = setting(4, "Walk-forward folds of a training run.")
    promotion_min_trades: int = setting(30, "Held-out trades a challenger needs before promotion.")
    promotion_min_t_stat: float = setting(
        2.0, "Minimum t-statistic of the held-out mean net return."
    )

    # -- executor
    mode: str = setting("paper", "Trading mode.", choices=("paper", "live"))
    commission_pct: float = setting(0.1, "Commission per side, %.")
    slippage_pct: float = setting(0.02, "Paper slippage per fill, %.")
    stop_loss_pct: float = setting(1.0, "Stop-loss distance from entry, %.")
    take_profit_pct: float = setting(2.0, "Take-profit distance from entry, %.")
    trailing_stop_pct: float = setting(0.0, "Trailing stop distance, %; 0 disables.")
    max_hold_minutes: int = setting(240, "Time exit.")
    starting_equity: float = setting(10_000.0, "Paper account equity in the quote asset.")
    max_daily_loss_pct: float = setting(5.0, "Kill switch: loss of the UTC day, % of equity.")
    max_drawdown_pct: float = setting(15.0, "Kill switch: drawdown from the equity peak, %.")
    min_entry_interval_s: float = setting(300.0, "Minimum time between entries on one symbol.")
    recv_window_ms: int = setting(5000, "recvWindow of signed requests.")
    rest_timeout_s: float = setting(10.0, "REST request timeout.")
    paper_fill_deadline_s: float = setting(
        0.0, "Reject a paper intent whose entry bar opens later than this; 0 = never."
    )
    brain_patience_s: float = setting(
        1.0,
        "The executor handles a bar before the brain has decided on it only after the "
        "brain has stalled this long (its exits must not wait for a stopped brain).",
    )
    live_reconcile_interval_s: float = setting(
        300.0, "Periodic reconciliation with the exchange (live)."
    )
    live_unknown_grace_s: float = setting(
        10.0, "Age after which an order the exchange doesn't know counts as never sent."
    )
    live_crash_guard: bool = setting(
        True,
        "Rest an exchange-side stop SELL (crash guard) at twice each live position's stop "
        "distance, so a crash is sold even while the executor is down; false places none.",
    )
    user_stream_max_connection_s: float = setting(
        84600.0, "User-data stream rollover, before Binance's 24 h cut."
    )
    api_key: str = setting("", "Binance API key (live mode).", secret=True)
    api_secret: str = setting("", "Binance API secret (live mode).", secret=True)

    # -- notifications
    discord_webhook_url: str = setting("", "Discord webhook; empty disables.", secret=True)
    telegram_bot_token: str = setting("", "Telegram bot token; empty disables.", secret=True)
    telegram_chat_id: str = setting("", "Telegram chat id.")
    telegram_api_url: str = setting("https://api.telegram.org", "Telegram Bot API base URL.")
    notify_queue_size: int = setting(
        100, "Pending notifications per channel before new ones are dropped."
    )
    notify_timeout_s: float = setting(10.0, "Timeout of one notification request.")

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = "***" if f.metadata.get("secret") and value else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed, validated like a fresh load."""
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        merged.update(changes)
        return _build(merged, source={k: f"replace({k})" for k in changes})

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the optional config file, then ``AEGIS_*`` variables; raise ``ConfigError``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        path = env.get(CONFIG_FILE_VAR)
        if path:
            values.update(_read_file(Path(path), source))
        known = {f.name for f in dataclasses.fields(cls)}
        for var, raw in env.items():
            if not var.startswith(ENV_PREFIX) or var in (CONFIG_FILE_VAR, RING_KERNELS_VAR):
                continue
            name = var[len(ENV_PREFIX) :].lower()
            if name.endswith("_file") and name[: -len("_file")] in known:
                name = name[: -len("_file")]
                raw = _read_secret_file(var, raw)
            if name not in known:
                raise ConfigError(f"{var}: unknown setting (known: see `aegis-kernel run --help`)")
            values[name] = raw
            source[name] = var
        return _build(values, source)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for --help and the README."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append((ENV_PREFIX + f.name.upper(), str(default), f.metadata["doc"]))
    return rows


def _read_secret_file(var: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None


def _read_file(path: Path, source: dict[str, str]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR}: {path} is not valid TOML: {exc}") from None
    known = {f.name for f in dataclasses.fields(Settings)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        source[key] = f"{path}:{key}"
    return data


def _build(values: dict[str, Any], source: dict[str, str]) -> Settings:
    hints = get_type_hints(Settings)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name not in values:
            continue
        where = source.get(f.name, ENV_PREFIX + f.name.upper())
        kwargs[f.name] = _coerce(values[f.name], hints[f.name], where)
        choices = f.metadata.get("choices")
        if choices and kwargs[f.name] not in choices:
            raise ConfigError(f"{where}: {kwargs[f.name]!r} is not one of {', '.join(choices)}")
    settings = Settings(**kwargs)
    _check(settings)
    return settings


def _coerce(raw: Any, kind: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
            return value
        if kind is Path:
            return Path(raw)
        if kind == tuple[str, ...]:
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(s.strip().upper() for s in items if str(s).strip())
        return str(raw)
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"{where}: {raw!r} is not a valid {name}") from None


def _check(s: Settings) -> None:
    def need(ok: bool, name: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {why}")

    need(
        s.ring_capacity > 0 and s.ring_capacity & (s.ring_capacity - 1) == 0,
        "ring_capacity",
        "must be a power of two",
    )
    need(0 < s.weight_share <= 1, "weight_share", "must be in (0, 1]")
    need(s.top_n > 0, "top_n", "must be positive")
    need(0 <= s.commission_pct < 5, "commission_pct", "must be in [0, 5)")
    need(0 <= s.slippage_pct < 5, "slippage_pct", "must be in [0, 5)")
    need(0 < s.stop_loss_pct < 100, "stop_loss_pct", "must be in (0, 100)")
    need(s.take_profit_pct > 0, "take_profit_pct", "must be positive")
    need(0 < s.kelly_fraction <= 1, "kelly_fraction", "must be in (0, 1]")
    need(0 < s.max_position_pct <= 100, "max_position_pct", "must be in (0, 100]")
    need(s.starting_equity > 0, "starting_equity", "must be positive")
    need(s.heartbeat_deadline_s > 0, "heartbeat_deadline_s", "must be positive")
    need(s.cold_start_notional >= 0, "cold_start_notional", "must not be negative")
    need(s.train_folds >= 2, "train_folds", "must be at least 2")
    need(s.promotion_min_trades >= 1, "promotion_min_trades", "must be positive")
    need(s.notify_queue_size >= 1, "notify_queue_size", "must be positive")
    need(s.rest_timeout_s > 0, "rest_timeout_s", "must be positive")
    need(s.brain_patience_s > 0, "brain_patience_s", "must be positive")
    need(1000 <= s.recv_window_ms <= 60000, "recv_window_ms", "must be within 1000..60000")
    need(0 <= s.metrics_port < 65536, "metrics_port", "must be a TCP port")
    try:
        parse_affinity(s.cpu_affinity)
    except AffinityError as exc:
        need(False, "cpu_affinity", str(exc))
    need(
        s.mode != "live" or (s.api_key and s.api_secret),
        "api_key",
        "live mode needs AEGIS_API_KEY and AEGIS_API_SECRET (or their *_FILE forms)",
    )

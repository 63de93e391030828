"""Binance kline wire format <-> BAR_DTYPE records, with strict validation at the edge.

Binance's field names (``k.t``, ``k.o``, ``x``…) never leave this module: a combined-stream
frame or a REST klines answer becomes BAR_DTYPE records, or a ``MalformedFrame`` naming the
reason. A frame is accepted only when the stream name, symbol and interval are known and agree,
prices are finite and positive, ``low ≤ min(open, close) ≤ max(open, close) ≤ high``, volumes are
finite and non-negative (taker volume within volume), the open time is aligned to the interval
and the close time is ``open + interval − 1``.

``KlineParser.parse_into`` is the hot path (a frame in, one record written in place, no
allocation beyond orjson's dict): one ``orjson.loads`` and a few comparisons per frame.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterable, Mapping

import numpy as np
import orjson

from aegis.binance import kline_kernels
from aegis.binance import kline_layout as layout
from aegis.binance.kline_layout import N_KEYS, N_WORDS, POW10
from aegis.records import BAR_BACKFILLED, BAR_CLOSED, BAR_DTYPE

# Fixed-length intervals only: "1M" (calendar month) has no constant length to align to.
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
_INF = math.inf
REST_KLINE_FIELDS = 12
MAX_KLINES_PER_REQUEST = 1000


class MalformedFrame(ValueError):
    """A wire message that must not reach a ring; ``reason`` is short and groupable."""

    def __init__(self, reason: str, sample: bytes | str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sample = sample


def _num(text: object, name: str, positive: bool) -> float:
    if type(text) is not str:
        raise MalformedFrame(f"{name} is not a decimal string")
    try:
        value = float(text)
    except ValueError:
        raise MalformedFrame(f"{name} is not a number") from None
    # NaN fails every comparison, so it is refused by both branches.
    if positive:
        if not 0.0 < value < _INF:
            raise MalformedFrame(f"{name} is not finite and positive")
    elif not 0.0 <= value < _INF:
        raise MalformedFrame(f"{name} is not finite and non-negative")
    return value


def _int(value: object, name: str) -> int:
    if type(value) is not int:
        raise MalformedFrame(f"{name} is not an integer")
    return value


def _check_bar(o: float, h: float, lo: float, c: float, v: float, tv: float) -> None:
    if h < o or h < c:
        raise MalformedFrame("high below open or close")
    if lo > o or lo > c:
        raise MalformedFrame("low above open or close")
    if tv > v:
        raise MalformedFrame("taker volume above volume")


def _check_times(open_ms: int, close_ms: int, interval_ms: int) -> None:
    if open_ms < 0 or open_ms % interval_ms:
        raise MalformedFrame("open time not aligned to interval")
    if close_ms != open_ms + interval_ms - 1:
        raise MalformedFrame("close time inconsistent with interval")


def _check_layout() -> None:
    """The compiled parser writes BAR_DTYPE records as 8-byte words: the layout must hold."""
    words = {"open_time_ms": layout.W_OPEN, "recv_ns": layout.W_RECV,
             "symbol_id": layout.W_ID_FLAGS, "trades": layout.W_TRADES}  # fmt: skip
    prices = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
              "taker_buy_quote_volume")  # fmt: skip
    words.update({name: layout.W_PRICES + j for j, name in enumerate(prices)})
    fields = BAR_DTYPE.fields
    wrong = [n for n, w in words.items() if fields[n][1] != 8 * w]
    if (wrong or fields["flags"][1] != 8 * layout.W_ID_FLAGS + 4
            or BAR_DTYPE.itemsize != 8 * N_WORDS or layout.BAR_CLOSED_FLAG != BAR_CLOSED
            or sys.byteorder != "little"):  # fmt: skip
        raise RuntimeError(f"BAR_DTYPE no longer matches kline_layout (fields {wrong})")


_check_layout()


def _kline_tables(ids: Mapping[str, int], interval_ms: Mapping[str, int]) -> tuple:
    """The universe and intervals as ``parse_klines`` reads them: names, an open-addressing
    table of their FNV-1a hashes, ids; interval names and lengths. A symbol that is not plain
    ASCII is left out (its frames take the Python path)."""
    symbols = [s for s in ids if s.isascii() and s.isprintable()]
    width = max((len(s) for s in symbols), default=1)
    names = np.zeros((max(len(symbols), 1), width), np.uint8)
    name_len = np.zeros(len(names), np.int64)
    symbol_ids = np.zeros(len(names), np.int64)
    table = np.full(1 << max(4, (2 * len(symbols)).bit_length()), -1, np.int64)
    for idx, symbol in enumerate(symbols):
        raw = symbol.encode()
        names[idx, : len(raw)] = np.frombuffer(raw, np.uint8)
        name_len[idx] = len(raw)
        symbol_ids[idx] = ids[symbol]
        h = 1469598103934665603
        for b in raw:
            h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        slot = h & (len(table) - 1)
        while table[slot] >= 0:
            slot = (slot + 1) & (len(table) - 1)
        table[slot] = idx
    iv_width = max(len(i) for i in interval_ms)
    iv_names = np.zeros((len(interval_ms), iv_width), np.uint8)
    iv_len = np.zeros(len(interval_ms), np.int64)
    iv_ms = np.zeros(len(interval_ms), np.int64)
    for j, (name, ms) in enumerate(interval_ms.items()):
        iv_names[j, : len(name)] = np.frombuffer(name.encode(), np.uint8)
        iv_len[j], iv_ms[j] = len(name), ms
    return names, name_len, symbol_ids, table, iv_names, iv_len, iv_ms, POW10


@functools.cache
def _parse_klines():
    """The compiled kline kernel, loaded once per process, on first use."""
    return kline_kernels.load()


class KlineParser:
    """Parse Binance kline messages for a known universe into BAR_DTYPE records."""

    def __init__(self, symbol_ids: Mapping[str, int], intervals: Iterable[str] = ("1m",)) -> None:
        """``symbol_ids`` maps upper-case symbols to ring ids; ``intervals`` are accepted ones."""
        self._ids = {s.upper(): int(i) for s, i in symbol_ids.items()}
        self._interval_ms = {}
        for name in intervals:
            if name not in INTERVAL_MS:
                raise ValueError(f"unsupported kline interval {name!r}")
            self._interval_ms[name] = INTERVAL_MS[name]
        # "btcusdt@kline_1m" -> (symbol, interval), so the stream name is checked by one lookup.
        self._streams = {
            f"{s.lower()}@kline_{i}": (s, i) for s in self._ids for i in self._interval_ms
        }
        self._tables = _kline_tables(self._ids, self._interval_ms)
        self._scratch = np.zeros((2, N_KEYS), np.int64)

    def parse_into(self, frame: bytes, out: np.ndarray, index: int, recv_ns: int = 0) -> int | None:
        """Write the kline of one combined-stream frame into ``out[index]``.

        Return the interval in ms, or None for a control reply (``{"result": …, "id": …}``)
        that carries no market data. Raise ``MalformedFrame`` for anything else that is wrong;
        ``out[index]`` may then hold partial garbage and must not be published.
        """
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise MalformedFrame("not JSON", frame[:200]) from None
        if type(msg) is not dict:
            raise MalformedFrame("not a JSON object", frame[:200])
        try:
            stream = msg["stream"]
            data = msg["data"]
            k = data["k"]
            if data["e"] != "kline":
                raise MalformedFrame("not a kline event", frame[:200])
            known = self._streams.get(stream) if type(stream) is str else None
            if known is None:
                raise MalformedFrame("unknown stream", frame[:200])
            symbol, interval = known
            if data["s"] != symbol or k["s"] != symbol:
                raise MalformedFrame("symbol does not match stream", frame[:200])
            if k["i"] != interval:
                raise MalformedFrame("interval does not match stream", frame[:200])
            closed = k["x"]
            if type(closed) is not bool:
                raise MalformedFrame("closed flag is not a boolean", frame[:200])
            record = self._record(k, interval, closed, recv_ns)
        except MalformedFrame as exc:
            if exc.sample is None:
                exc.sample = frame[:200]
            raise
        except KeyError as exc:
            if "result" in msg and "id" in msg and "stream" not in msg:
                return None
            raise MalformedFrame(f"missing field {exc.args[0]}", frame[:200]) from None
        except TypeError:
            raise MalformedFrame("mistyped structure", frame[:200]) from None
        out[index] = record
        return self._interval_ms[interval]

    def parse_many(
        self, buf: bytes, starts: np.ndarray, ends: np.ndarray, recv_ns: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parse the frames ``buf[starts[r]:ends[r]]`` in one compiled pass.

        Return ``(records, status, interval_ms)``: per frame, ``CLOSED`` or ``UPDATE`` with its
        BAR_DTYPE record (the one ``parse_into`` writes) and its interval, or ``FALLBACK`` for a
        frame to give to ``parse_into`` (record and interval zeros): another message, or one
        that fails a check.
        """
        n = len(starts)
        out = np.zeros(n, BAR_DTYPE)
        intervals = np.zeros(n, np.int64)
        status = np.empty(n, np.int8)
        if n:  # only the frames' span of the read, copied: the kernel takes a writable array
            lo, hi = max(0, int(starts.min())), min(len(buf), int(ends.max()))
            data = np.frombuffer(buf, np.uint8, max(0, hi - lo), lo).copy()
            starts, ends = starts - lo, ends - lo
        else:
            data = np.zeros(0, np.uint8)
        _parse_klines()(data, starts, ends, *self._tables, self._scratch,
                        out.view(np.int64).reshape(n, N_WORDS),
                        out.view(np.float64).reshape(n, N_WORDS), intervals, recv_ns, status)  # fmt: skip
        return out, status, intervals

    def warm(self) -> None:
        """Load the compiled batch parser now, not on the first close burst (ahead-of-time:
        milliseconds; the JIT fallback: Numba and its cache, about a second)."""
        self.parse_many(b"{}", np.zeros(1, np.int64), np.full(1, 2, np.int64))

    def parse(self, frame: bytes, recv_ns: int = 0) -> np.ndarray | None:
        """Return one BAR_DTYPE record (a 1-element array) for a frame, None for a control reply."""
        out = np.zeros(1, dtype=BAR_DTYPE)
        return out if self.parse_into(frame, out, 0, recv_ns) is not None else None

    def _record(self, k: dict, interval: str, closed: bool, recv_ns: int) -> tuple:
        # The common case in one pass: a frame that passes these checks passes every check of
        # _checked_record (NaN fails every comparison); any other frame goes there for the
        # same verdict and the same error, whatever it is that is wrong.
        interval_ms = self._interval_ms[interval]
        try:
            open_ms, close_ms, trades = k["t"], k["T"], k["n"]
            so, sh, sl, sc = k["o"], k["h"], k["l"], k["c"]
            sv, sq, stv, stq = k["v"], k["q"], k["V"], k["Q"]
            if (type(so) is str and type(sh) is str and type(sl) is str and type(sc) is str
                    and type(sv) is str and type(sq) is str and type(stv) is str
                    and type(stq) is str and type(open_ms) is int and type(close_ms) is int
                    and type(trades) is int):  # fmt: skip
                o, h, lo, c = float(so), float(sh), float(sl), float(sc)
                v, q, tv, tq = float(sv), float(sq), float(stv), float(stq)
                if (0.0 < lo <= o <= h < _INF and lo <= c <= h and 0.0 <= tv <= v < _INF
                        and 0.0 <= tq <= q < _INF and trades >= 0 and open_ms >= 0
                        and open_ms % interval_ms == 0
                        and close_ms == open_ms + interval_ms - 1):  # fmt: skip
                    flags = BAR_CLOSED if closed else 0
                    return (open_ms, recv_ns, self._ids[k["s"]], flags, o, h, lo, c, v, q, tv,
                            tq, trades)  # fmt: skip
        except (KeyError, ValueError):
            pass
        return self._checked_record(k, interval, closed, recv_ns)

    def _checked_record(self, k: dict, interval: str, closed: bool, recv_ns: int) -> tuple:
        interval_ms = self._interval_ms[interval]
        open_ms, close_ms = _int(k["t"], "open time"), _int(k["T"], "close time")
        _check_times(open_ms, close_ms, interval_ms)
        o, h = _num(k["o"], "open", True), _num(k["h"], "high", True)
        lo, c = _num(k["l"], "low", True), _num(k["c"], "close", True)
        v, q = _num(k["v"], "volume", False), _num(k["q"], "quote volume", False)
        tv, tq = _num(k["V"], "taker volume", False), _num(k["Q"], "taker quote volume", False)
        trades = _int(k["n"], "trade count")
        if trades < 0:
            raise MalformedFrame("trade count is negative")
        _check_bar(o, h, lo, c, v, tv)
        if tq > q:
            raise MalformedFrame("taker quote volume above quote volume")
        flags = BAR_CLOSED if closed else 0
        return (open_ms, recv_ns, self._ids[k["s"]], flags, o, h, lo, c, v, q, tv, tq, trades)

    def parse_rest_klines(
        self,
        body: bytes,
        symbol: str,
        interval: str,
        *,
        now_ms: int | None = None,
        recv_ns: int = 0,
    ) -> np.ndarray:
        """Parse a ``GET /api/v3/klines`` answer (12-field arrays) into BAR_DTYPE records.

        Every record is flagged BAR_BACKFILLED; BAR_CLOSED only when its close time is before
        ``now_ms`` (the last row of an answer is usually the bar still in progress); all are
        closed when ``now_ms`` is None. Open times must strictly increase.
        """
        symbol = symbol.upper()
        if symbol not in self._ids:
            raise MalformedFrame(f"unknown symbol {symbol}")
        if interval not in self._interval_ms:
            raise MalformedFrame(f"unknown interval {interval}")
        interval_ms, symbol_id = self._interval_ms[interval], self._ids[symbol]
        try:
            rows = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedFrame("not JSON", body[:200]) from None
        if type(rows) is not list:
            raise MalformedFrame("klines answer is not a list", body[:200])
        out = np.zeros(len(rows), dtype=BAR_DTYPE)
        previous = -1
        for i, row in enumerate(rows):
            if type(row) is not list or len(row) < REST_KLINE_FIELDS:
                raise MalformedFrame(f"row {i} is not a {REST_KLINE_FIELDS}-field array")
            open_ms, close_ms = _int(row[0], "open time"), _int(row[6], "close time")
            _check_times(open_ms, close_ms, interval_ms)
            if open_ms <= previous:
                raise MalformedFrame(f"row {i} open time not increasing")
            previous = open_ms
            o, h = _num(row[1], "open", True), _num(row[2], "high", True)
            lo, c = _num(row[3], "low", True), _num(row[4], "close", True)
            v, q = _num(row[5], "volume", False), _num(row[7], "quote volume", False)
            tv, tq = _num(row[9], "taker volume", False), _num(row[10], "taker quote volume", False)
            trades = _int(row[8], "trade count")
            _check_bar(o, h, lo, c, v, tv)
            closed = now_ms is None or close_ms < now_ms
            flags = BAR_BACKFILLED | (BAR_CLOSED if closed else 0)
            out[i] = (open_ms, recv_ns, symbol_id, flags, o, h, lo, c, v, q, tv, tq, trades)
        return out


def _fmt(value: float) -> str:
    return f"{value:.8f}"


def build_kline_frame(
    record: np.void,
    symbol: str,
    interval: str,
    event_time_ms: int,
    *,
    first_trade_id: int = 0,
    last_trade_id: int = 0,
) -> bytes:
    """Encode one BAR_DTYPE record as a combined-stream kline frame (``x`` from BAR_CLOSED)."""
    interval_ms = INTERVAL_MS[interval]
    symbol = symbol.upper()
    open_ms = int(record["open_time_ms"])
    data = {
        "e": "kline",
        "E": int(event_time_ms),
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + interval_ms - 1,
            "s": symbol,
            "i": interval,
            "f": first_trade_id,
            "L": last_trade_id,
            "o": _fmt(record["open"]),
            "c": _fmt(record["close"]),
            "h": _fmt(record["high"]),
            "l": _fmt(record["low"]),
            "v": _fmt(record["volume"]),
            "n": int(record["trades"]),
            "x": bool(int(record["flags"]) & BAR_CLOSED),
            "q": _fmt(record["quote_volume"]),
            "V": _fmt(record["taker_buy_volume"]),
            "Q": _fmt(record["taker_buy_quote_volume"]),
            "B": "0",
        },
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@kline_{interval}", "data": data})


def build_rest_kline_row(record: np.void, interval: str) -> list:
    """Encode one BAR_DTYPE record as a REST klines row (12 fields, strings for decimals)."""
    open_ms = int(record["open_time_ms"])
    return [
        open_ms,
        _fmt(record["open"]),
        _fmt(record["high"]),
        _fmt(record["low"]),
        _fmt(record["close"]),
        _fmt(record["volume"]),
        open_ms + INTERVAL_MS[interval] - 1,
        _fmt(record["quote_volume"]),
        int(record["trades"]),
        _fmt(record["taker_buy_volume"]),
        _fmt(record["taker_buy_quote_volume"]),
        "0",
    ]

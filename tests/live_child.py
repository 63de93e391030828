"""A live-exchange process for the restart tests: it can SIGKILL itself at a named point.

    python tests/live_child.py REST_URL DSN HOME ACTION INTENT_ID [CRASH_AT]

ACTION: ``enter`` (submit the intent), ``flatten`` (sell every position) or ``status``; each
first runs ``LiveExchange.start()`` (rebuild from the journal + reconcile). CRASH_AT:
``before_send`` (intent journaled, order not sent), ``after_send`` (the exchange answered, the
answer is never read), ``after_fill`` (answer read, nothing of it journaled), ``after_ack``
(order state and fills journaled, the position not yet closed). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import orjson
from live_support import BTC, btc_market, intent
from sim_support import KEY, SECRET

from aegis.binance.journal_pg import PgOrderJournal
from aegis.binance.live import LiveConfig, LiveExchange
from aegis.binance.live_guard import parse_guard_client_id
from aegis.binance.rest import BinanceRestClient
from aegis.binance.weight import WeightBudget


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingRest(BinanceRestClient):
    crash_after_order_post = False

    async def _send(self, method, path, query, headers):
        answer = await super()._send(method, path, query, headers)
        if self.crash_after_order_post and method == "POST" and path == "/api/v3/order":
            die()  # the exchange has the order; this process never reads the answer
        return answer


class CrashingJournal(PgOrderJournal):
    crash_after_ack = False

    async def order_acked(self, client_order_id, state, fills, time_ms):
        await super().order_acked(client_order_id, state, fills, time_ms)
        # A crash guard's acks (placed after an entry, cancelled before an exit) are not the
        # entry's or exit's ack this crash point is about.
        if self.crash_after_ack and parse_guard_client_id(client_order_id) is None:
            die()


async def main(rest_url, dsn, home, action, intent_id, crash_at) -> dict:
    checkpoints = {"before_send": "intent_written", "after_fill": "order_answered"}

    def checkpoint(name: str) -> None:
        if checkpoints.get(crash_at) == name:
            die()

    journal = await CrashingJournal.connect(dsn)
    with WeightBudget.for_home(home) as budget:
        rest = CrashingRest(rest_url, budget, api_key=KEY, api_secret=SECRET, time_samples=1,
                            backoff_base_s=0.01)  # fmt: skip
        async with rest:
            market = await btc_market(rest)
            ex = LiveExchange(rest, journal, {BTC: market}, LiveConfig(unknown_grace_s=0.3),
                              checkpoint=checkpoint)  # fmt: skip
            report = await ex.start()
            rest.crash_after_order_post = crash_at == "after_send"
            journal.crash_after_ack = crash_at == "after_ack"
            outcome = None
            if action == "enter":
                outcome = (await ex.submit(intent(intent_id))).status
            elif action == "flatten":
                await ex.flatten(0)
            events = ex.drain_events()
    await journal.close()
    return {
        "report": {"resolved": report.resolved, "not_sent": report.not_sent,
                   "unknown": report.still_unknown, "drift": list(report.drift)},
        "outcome": outcome,
        "positions": [[p.intent_id, str(p.quantity)] for p in ex.open_positions()],
        "events": [[type(e).__name__, getattr(e, "trade", e).intent_id,
                    getattr(e, "reason", "") or getattr(getattr(e, "trade", None), "exit_reason", "")]
                   for e in events if not hasattr(e, "position")]
        + [["PositionOpened", e.position.intent_id, ""] for e in events if hasattr(e, "position")],
    }  # fmt: skip


if __name__ == "__main__":
    rest_url, dsn, home, action, intent_id, *rest = sys.argv[1:]
    result = asyncio.run(main(rest_url, dsn, home, action, int(intent_id), rest[0] if rest else ""))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")

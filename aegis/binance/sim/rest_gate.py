"""The front door of every REST request: parameters, bans, weight, signature, logging.

Order of checks, as Binance does it: an IP ban answers 418 before anything else; the request's
weight is then counted (429 over the limit, 418 for those who keep going); only admitted
requests are authenticated and handled. Every request, admitted or not, is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from aegis.binance.sim import errors
from aegis.binance.sim.accounts import Account
from aegis.binance.sim.auth import verify_rest
from aegis.binance.sim.errors import BinanceError
from aegis.binance.sim.faults import FaultPlan
from aegis.binance.sim.limits import WeightLimiter
from aegis.binance.sim.request_log import RequestLog, RequestLogEntry
from aegis.binance.sim.rest import Answer, RestApi, RestRequest, Route

LOG = logging.getLogger(__name__)


def _parse_params(query: str, body: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for raw in (query, body):
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key in params:
                raise BinanceError(-1101, "Duplicate values for a parameter detected.")
            params[key] = value
    return params


def _json_response(answer: Answer, used_weight: int) -> web.Response:
    headers = {"X-MBX-USED-WEIGHT-1M": str(used_weight)} | answer.headers
    return web.Response(
        body=orjson.dumps(answer.body),
        status=answer.status,
        headers=headers,
        content_type="application/json",
    )


class RestGate:
    """aiohttp handler for ``/api/v3/*``."""

    def __init__(
        self,
        api: RestApi,
        limiter: WeightLimiter,
        faults: FaultPlan,
        accounts: Mapping[str, Account],
        request_log: RequestLog,
        server_time: Callable[[], int],
        market_time: Callable[[], int],
    ) -> None:
        self.routes: dict[tuple[str, str], Route] = api.routes()
        self.limiter = limiter
        self.faults = faults
        self.accounts = accounts
        self.log = request_log
        self.server_time = server_time
        self.market_time = market_time

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ip = request.remote or "unknown"
        raw_query = request.query_string
        raw_body = (await request.text()) if request.can_read_body else ""
        params: dict[str, str] = {}
        used = self.limiter.used(ip)
        try:
            params = _parse_params(raw_query, raw_body)
            route = self.routes.get((request.method, request.path))
            if route is None:
                answer = Answer({"code": -1000, "msg": "Not found."}, status=404)
            else:
                answer, used = await self._admit_and_run(
                    request, route, params, ip, raw_query, raw_body
                )
        except BinanceError as exc:
            answer = self._error_answer(exc)
        except Exception:  # an unexpected bug must still answer like a server, and be seen
            LOG.exception("simulator REST handler failed for %s %s", request.method, request.path)
            answer = Answer({"code": -1000, "msg": errors.MSG_UNKNOWN}, status=500)
        body = answer.body if isinstance(answer.body, dict) else {}
        self.log.append(
            RequestLogEntry(
                wall_time=time.time(),
                sim_time_ms=self.market_time(),
                ip=ip,
                method=request.method,
                path=request.path,
                params=RequestLog.scrub(params),
                status=answer.status,
                code=body.get("code") if answer.status >= 400 else None,
                used_weight=used,
            )
        )
        return _json_response(answer, used)

    @staticmethod
    def _error_answer(exc: BinanceError) -> Answer:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return Answer(exc.payload(), exc.status, headers)

    async def _admit_and_run(
        self,
        request: web.Request,
        route: Route,
        params: dict[str, str],
        ip: str,
        raw_query: str,
        raw_body: str,
    ) -> tuple[Answer, int]:
        forced_ban = self.faults.banned_for()
        if forced_ban > 0:
            self.limiter.ban(ip, forced_ban)
        admission = self.limiter.admit(ip, route.weight(params))
        used = admission.used_weight
        if admission.status == 418:
            msg = errors.MSG_BANNED.format(until=admission.banned_until_ms)
            raise BinanceError(-1003, msg, status=418, retry_after=admission.retry_after_s)
        if admission.status == 429 or self.faults.take_rest_429():
            retry = admission.retry_after_s or self.faults.rest_429_retry_after_s
            msg = errors.MSG_TOO_MUCH_WEIGHT.format(limit=self.limiter.limit, interval="1 MINUTE")
            raise BinanceError(-1003, msg, status=429, retry_after=retry)
        now = self.server_time()
        account = None
        if route.signed:
            account = verify_rest(
                request.headers.get("X-MBX-APIKEY"), params, raw_query, raw_body,
                self.accounts, now,
            )  # fmt: skip
        answer = await route.handler(RestRequest(params, now, ip, account))
        return answer, used

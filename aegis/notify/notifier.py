"""Fire-and-forget delivery: the executor enqueues text and never waits on a chat service.

Each channel has its own bounded queue, token bucket and background task, so a slow or broken
Discord never delays Telegram and neither ever delays the caller: ``notify`` is synchronous and
O(1), and when a queue is full the message is dropped and counted rather than blocking trading.

Delivery policy per message, decided by the answer:
- 2xx (and Telegram ``ok``) → sent;
- 429 → wait the service's own ``retry_after`` (capped), then retry; the bucket is emptied so
  the following messages wait as well;
- 5xx, timeout, connection error → exponential backoff with jitter, up to ``max_attempts``;
- any other 4xx (bad token, unknown chat) or a malformed endpoint → failed at once: retrying
  cannot fix it.
Every failure is counted and logged with the channel name and status only — endpoints contain
tokens and are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from aegis.notify.channels import Channel, channels_from_settings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``rate_per_s`` tokens per second up to ``capacity``; a reservation returns its wait."""

    def __init__(
        self, rate_per_s: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ):
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("rate_per_s must be > 0 and capacity >= 1")
        self.rate = rate_per_s
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token; return how long to wait before using it (0 if available now)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate

    def drain(self) -> None:
        """Empty the bucket (the service said 429: the next messages must wait too)."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now


@dataclass
class ChannelStats:
    """Counters of one channel since start."""

    enqueued: int = 0
    sent: int = 0
    dropped: int = 0  # queue full: never attempted
    failed: int = 0  # gave up after the policy above
    rate_limited: int = 0  # 429 answers
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "http_500", "ClientConnectorError", …


@dataclass(frozen=True)
class DeliveryPolicy:
    """Timeouts and retry limits shared by every channel."""

    queue_size: int = 100
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0


class _Worker:
    def __init__(self, channel: Channel, policy: DeliveryPolicy, sleep: Sleep, clock) -> None:
        self.channel = channel
        self.policy = policy
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=policy.queue_size)
        self.bucket = TokenBucket(channel.rate_per_s, channel.burst, clock)
        self.stats = ChannelStats()
        self.task: asyncio.Task | None = None
        self._sleep = sleep
        self._last_error = ""

    def offer(self, text: str) -> bool:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return False
        self.stats.enqueued += 1
        return True

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            text = await self.queue.get()
            try:
                await self._deliver(session, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # isolation: a bug in one delivery must not end the worker
                self._error(type(exc).__name__)
                self.stats.failed += 1
            finally:
                self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, text: str) -> None:
        ch, policy = self.channel, self.policy
        for attempt in range(1, policy.max_attempts + 1):
            wait = self.bucket.reserve()
            if wait > 0:
                await self._sleep(wait)
            status, body, headers = await self._post(session, text)
            if status is not None and ch.accepted(status, body):
                self.stats.sent += 1
                return
            if status == 429:
                self.stats.rate_limited += 1
                self.bucket.drain()
                after = ch.retry_after_s(headers, body)
                wait = min(policy.max_retry_after_s, after if after else 1.0)
            elif status is None or status >= 500:
                wait = self._backoff(attempt)
            else:
                break  # 4xx other than 429 (or a 2xx refusal): the request itself is wrong
            if attempt == policy.max_attempts:
                break
            self.stats.retries += 1
            await self._sleep(wait)
        self.stats.failed += 1
        log.warning("notification to %s failed (%s); %d failed so far",
                    ch.name, self._last_error, self.stats.failed)  # fmt: skip

    async def _post(self, session, text):
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        try:
            async with session.post(self.channel.endpoint(), json=self.channel.payload(text),
                                    timeout=timeout) as resp:  # fmt: skip
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if resp.status >= 300:
                    self._error(f"http_{resp.status}")
                return resp.status, body, resp.headers
        except aiohttp.InvalidURL:
            # A malformed endpoint is a configuration error: status 0 means "never retry".
            self._error("InvalidURL")
            return 0, None, {}
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._error(type(exc).__name__)
            return None, None, {}

    def _backoff(self, attempt: int) -> float:
        cap = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)  # jitter: spread the retries of many processes

    def _error(self, kind: str) -> None:
        self._last_error = kind
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1


class Notifier:
    """Bounded, rate-limited, never-blocking delivery of text messages to every channel."""

    def __init__(
        self,
        channels: Sequence[Channel],
        policy: DeliveryPolicy | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or DeliveryPolicy()
        self._workers = [_Worker(c, self.policy, sleep, clock) for c in channels]
        self._session: aiohttp.ClientSession | None = None
        self._own_session = False

    @classmethod
    def from_settings(cls, settings: object, policy: DeliveryPolicy | None = None) -> Notifier:
        """A notifier over the channels configured in ``Settings`` (possibly none)."""
        return cls(channels_from_settings(settings), policy)

    @property
    def stats(self) -> dict[str, ChannelStats]:
        """Counters per channel name."""
        return {w.channel.name: w.stats for w in self._workers}

    def notify(self, text: str) -> bool:
        """Enqueue ``text`` for every channel without waiting; False if any queue dropped it.

        Call from the event loop's thread. Safe before ``start`` (messages wait in the queues).
        """
        ok = True
        for worker in self._workers:
            ok = worker.offer(text) and ok
        return ok

    async def start(self, session: aiohttp.ClientSession | None = None) -> None:
        """Start one background sender per channel (owning a session unless one is given)."""
        if self._session is not None:
            return
        if session is None:
            session = aiohttp.ClientSession()
            self._own_session = True
        self._session = session
        for worker in self._workers:
            worker.task = asyncio.create_task(
                worker.run(session), name=f"notify-{worker.channel.name}"
            )

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Give queued messages up to ``drain_timeout_s`` to go out, then stop the senders."""
        if self._session is None:
            return
        pending = [asyncio.create_task(w.queue.join()) for w in self._workers]
        if pending:
            _, late = await asyncio.wait(pending, timeout=drain_timeout_s)
            for task in late:
                task.cancel()
        for worker in self._workers:
            if worker.task is not None:
                worker.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.task
                worker.task = None
        if self._own_session:
            await self._session.close()
        self._session = None

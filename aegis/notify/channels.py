"""Where a notification goes: the request each service expects and how it says "slow down".

A channel only describes HTTP (endpoint, JSON body, success, 429 wait); the sending, queueing
and rate limiting live in ``aegis.notify.notifier``. Endpoints embed secrets (the Discord
webhook token, the Telegram bot token), so a channel's ``repr`` hides them and nothing here
logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Channel(Protocol):
    """One destination of notifications."""

    name: str
    max_chars: int
    rate_per_s: float
    burst: int

    def endpoint(self) -> str:
        """URL to POST to (contains a secret: never log it)."""

    def payload(self, text: str) -> dict[str, Any]:
        """JSON body carrying ``text``, clipped to the service's limit."""

    def accepted(self, status: int, body: Any) -> bool:
        """Whether the service took the message."""

    def retry_after_s(self, headers: Mapping[str, str], body: Any) -> float | None:
        """Seconds a 429 answer asks to wait, if it says."""


def _header_seconds(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, TypeError, ValueError):
        return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class DiscordWebhook:
    """Discord execute-webhook: ``POST <webhook url>`` with ``{"content": ...}``.

    Discord allows about 5 requests per 2 s per webhook and answers 429 with a JSON body whose
    ``retry_after`` is in seconds (also sent as the ``Retry-After`` header).
    """

    url: str = field(repr=False)
    name: str = "discord"
    max_chars: int = 2000
    rate_per_s: float = 0.5
    burst: int = 5

    def endpoint(self) -> str:
        return self.url

    def payload(self, text: str) -> dict[str, Any]:
        # No mentions: a message quoting a symbol must never ping @everyone.
        return {"content": _clip(text, self.max_chars), "allowed_mentions": {"parse": []}}

    def accepted(self, status: int, body: Any) -> bool:
        return 200 <= status < 300

    def retry_after_s(self, headers: Mapping[str, str], body: Any) -> float | None:
        if isinstance(body, dict):
            try:
                return float(body["retry_after"])
            except (KeyError, TypeError, ValueError):
                pass
        return _header_seconds(headers)


@dataclass(frozen=True)
class TelegramBot:
    """Telegram Bot API ``sendMessage``: ``POST <api>/bot<token>/sendMessage``.

    Telegram allows about 1 message per second per chat (20 per minute in a group) and answers
    429 with ``{"ok": false, "parameters": {"retry_after": N}}``.
    """

    token: str = field(repr=False)
    chat_id: str
    api_url: str = "https://api.telegram.org"
    name: str = "telegram"
    max_chars: int = 4096
    rate_per_s: float = 1 / 3
    burst: int = 3

    def endpoint(self) -> str:
        return f"{self.api_url.rstrip('/')}/bot{self.token}/sendMessage"

    def payload(self, text: str) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "text": _clip(text, self.max_chars),
            "disable_web_page_preview": True,
        }

    def accepted(self, status: int, body: Any) -> bool:
        return status == 200 and isinstance(body, dict) and body.get("ok") is True

    def retry_after_s(self, headers: Mapping[str, str], body: Any) -> float | None:
        if isinstance(body, dict):
            params = body.get("parameters")
            if isinstance(params, dict):
                try:
                    return float(params["retry_after"])
                except (KeyError, TypeError, ValueError):
                    pass
        return _header_seconds(headers)


def channels_from_settings(settings: object) -> list[Channel]:
    """The channels configured in ``aegis.config.Settings`` (none when both are empty)."""
    found: list[Channel] = []
    if settings.discord_webhook_url:
        found.append(DiscordWebhook(settings.discord_webhook_url))
    if settings.telegram_bot_token and settings.telegram_chat_id:
        found.append(TelegramBot(settings.telegram_bot_token, settings.telegram_chat_id,
                                 settings.telegram_api_url))  # fmt: skip
    return found

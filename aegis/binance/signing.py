"""HMAC-SHA256 request signing shared by the REST client and the simulator's verifier.

Binance signs ``totalParams``: the URL query string concatenated with the request body, no
separator, and takes the lower-case hex digest as the ``signature`` parameter, which must come
last. Keeping both sides of the handshake in one module means a client and a verifier can never
disagree on the encoding.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

SIGNATURE_PARAM = "signature"
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000

Params = Mapping[str, object] | Iterable[tuple[str, object]]


def hmac_signature(secret: str, payload: str) -> str:
    """Return the lower-case hex HMAC-SHA256 of ``payload`` keyed by ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def encode_params(params: Params) -> str:
    """Encode parameters in the given order, booleans as Binance expects (``true``/``false``)."""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((key, str(value)))
    return urlencode(pairs)


def signed_query(
    params: Params,
    secret: str,
    timestamp_ms: int,
    recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
) -> str:
    """Return ``params&recvWindow=..&timestamp=..&signature=..`` ready for a URL or a body.

    ``None`` values are dropped; ``recv_window_ms`` must be within Binance's 1..60000 ms.
    """
    if not 0 < recv_window_ms <= MAX_RECV_WINDOW_MS:
        raise ValueError(f"recvWindow must be in 1..{MAX_RECV_WINDOW_MS} ms, got {recv_window_ms}")
    items = list(params.items() if isinstance(params, Mapping) else params)
    items.append(("recvWindow", recv_window_ms))
    items.append(("timestamp", int(timestamp_ms)))
    payload = encode_params(items)
    return f"{payload}&{SIGNATURE_PARAM}={hmac_signature(secret, payload)}"


def split_signature(query: str) -> tuple[str, str | None]:
    """Split a raw query string into (signed payload, signature); signature None if absent.

    Binance requires ``signature`` to be the last parameter; anything after it is not part of
    the signed payload, so a misplaced signature yields a payload that will not verify.
    """
    marker = f"{SIGNATURE_PARAM}="
    if query.startswith(marker):
        return "", query[len(marker) :]
    idx = query.rfind(f"&{marker}")
    if idx < 0:
        return query, None
    return query[:idx], query[idx + len(marker) + 1 :]


def verify_signature(secret: str, query: str, body: str = "") -> bool:
    """Return True when ``query`` (raw, as received) plus ``body`` carries a valid signature.

    The signature may sit at the end of the query string or of the body; the signed payload is
    the query string followed by the body with the signature parameter removed.
    """
    payload_q, sig_q = split_signature(query)
    payload_b, sig_b = split_signature(body) if body else ("", None)
    signature = sig_b if sig_b is not None else sig_q
    if signature is None or (sig_b is not None and sig_q is not None):
        return False
    payload = payload_q + payload_b if sig_b is not None else payload_q + body
    expected = hmac_signature(secret, payload)
    return hmac.compare_digest(expected, signature.lower())

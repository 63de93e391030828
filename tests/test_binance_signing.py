"""Specification of request signing (aegis.binance.signing)."""

from __future__ import annotations

import pytest

from aegis.binance.signing import (
    encode_params,
    hmac_signature,
    signed_query,
    split_signature,
    verify_signature,
)

DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
DOC_PARAMS = {
    "symbol": "LTCBTC",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "1",
    "price": "0.1",
}


def test_hmac_signature_documentation_vector_matches():
    assert hmac_signature(DOC_SECRET, DOC_PAYLOAD) == DOC_SIGNATURE


def test_signed_query_documentation_params_reproduce_vector():
    query = signed_query(DOC_PARAMS, DOC_SECRET, 1499827319559, 5000)
    assert query == f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}"


def test_signed_query_recv_window_out_of_range_raises():
    with pytest.raises(ValueError, match="recvWindow"):
        signed_query(DOC_PARAMS, DOC_SECRET, 1, 60001)
    with pytest.raises(ValueError, match="recvWindow"):
        signed_query(DOC_PARAMS, DOC_SECRET, 1, 0)


def test_encode_params_booleans_and_none_follow_binance_convention():
    assert encode_params({"a": True, "b": False, "c": None, "d": 1}) == "a=true&b=false&d=1"


def test_encode_params_special_characters_are_percent_encoded():
    assert encode_params([("newClientOrderId", "a b/c")]) == "newClientOrderId=a+b%2Fc"


def test_verify_signature_signed_query_is_accepted():
    query = signed_query(DOC_PARAMS, DOC_SECRET, 1499827319559)
    assert verify_signature(DOC_SECRET, query)


def test_verify_signature_tampered_or_wrong_secret_is_refused():
    query = signed_query(DOC_PARAMS, DOC_SECRET, 1499827319559)
    assert not verify_signature(DOC_SECRET, query.replace("quantity=1", "quantity=2"))
    assert not verify_signature("other", query)
    assert not verify_signature(DOC_SECRET, DOC_PAYLOAD)  # no signature at all


def test_verify_signature_mixed_query_and_body_documentation_example_is_accepted():
    # Binance's example 3: part in the query string, the rest plus the signature in the body.
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    signature = hmac_signature(DOC_SECRET, query + body)
    assert signature == "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
    assert verify_signature(DOC_SECRET, query, f"{body}&signature={signature}")


def test_split_signature_without_signature_returns_none():
    assert split_signature("a=1&b=2") == ("a=1&b=2", None)
    assert split_signature("a=1&signature=ff") == ("a=1", "ff")

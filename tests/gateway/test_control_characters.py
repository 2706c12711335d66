"""Ids holding a control character (NUL, CR, LF, tab, ...) are refused naming the field.

An anonymous, canonical or message id is opaque text, but none is made with a line break:
the gateway passed ``anon``, a line feed, ``X-Injected: 1`` on to Deliver as the visitor's
cookieid. It refuses one as Deliver does (``tests/contract/test_anonymous_id_limit.py``),
in the body's spelling, and a visitor's id from ``?anonymous_id=``, ``anonymousId`` or
``_dfid`` as ``INVALID_ANONYMOUS_ID``, naming where it came from.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from amperity_signal.limits import control_character_problem

from .fakes import KNOWN_KEY, RunningService

KEY = {"X-Pipeline-Key": KNOWN_KEY}
ENRICH = "/v1/enrich?provider=amperity"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("anonymousId", "anon\nX-Injected: 1"),
        ("anonymous_id", "anon\r\n"),
        ("messageId", "m\x00-1"),
        ("canonicalId", "c\x7f"),
    ],
)
async def test_an_event_id_holding_a_control_character_is_an_invalid_event(
    gateway: httpx.AsyncClient, service: RunningService, field: str, value: str
) -> None:
    """400 INVALID_EVENT naming the field as the body spelled it; nothing is delivered."""
    body = {"event": "x", field: value}
    body.setdefault("anonymousId" if field != "anonymous_id" else "userId", "anon-1")
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_EVENT",
        "message": f"{field}: {control_character_problem(value)}",
        "field": field,
    }
    assert service.fake.delivered == []


async def test_a_batch_refuses_only_the_event_holding_one(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """In a batch, that event's result names ``batch[1].messageId``; the others go."""
    batch = [{"type": "page", "anonymousId": "a", "messageId": f"m{n}"} for n in range(3)]
    batch[1]["messageId"] = "m\n1"
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, True]
    assert (results[1]["code"], results[1]["field"]) == ("INVALID_EVENT", "batch[1].messageId")
    assert len(service.fake.delivered) == 2


async def test_an_event_s_id_from_a_dfid_cookie_holding_one_names_the_cookie(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """An event without anonymousId takes the _dfid cookie: a tab in it names ``_dfid``."""
    headers = {**KEY, "Cookie": "_dfid=anon\t1"}
    response = await gateway.post("/v1/t", json={"event": "x"}, headers=headers)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (
        "INVALID_EVENT",
        "_dfid",
    )
    assert service.fake.delivered == []


@pytest.mark.parametrize(
    ("query", "cookie", "field"),
    [("&anonymous_id=" + quote("anon\n1"), "", "anonymous_id"), ("", "anon\t1", "_dfid")],
)
async def test_a_visitor_id_holding_one_is_refused_by_enrich(
    gateway: httpx.AsyncClient, service: RunningService, query: str, cookie: str, field: str
) -> None:
    """``/v1/enrich``: 400 INVALID_ANONYMOUS_ID naming the parameter or the cookie."""
    headers = {**KEY, **({"Cookie": f"_dfid={cookie}"} if cookie else {})}
    response = await gateway.get(f"{ENRICH}{query}", headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ANONYMOUS_ID", field)
    assert error["message"].startswith(f"{field}: holds the control character ")
    assert service.fake.profile_requests == []


async def test_a_visitor_id_holding_one_is_refused_by_consent(gateway: httpx.AsyncClient) -> None:
    """``/v1/consent``: the same 400, naming ``anonymousId``."""
    body = {"anonymousId": "anon\r1", "consent": {"categories": {"ads": True}}}
    response = await gateway.post("/v1/consent", json=body, headers=KEY)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ANONYMOUS_ID", "anonymousId")

"""GET /v1/enrich: the page's view of the visitor's allowlisted attributes."""

from __future__ import annotations

import logging

import httpx
import pytest

from .conftest import SHOP_ORIGIN, FakeClock, GatewayFactory
from .fakes import CANNED_ATTRIBUTES, KNOWN_KEY, KNOWN_VISITOR, RunningService

ENRICH = "/v1/enrich?provider=amperity"


async def test_known_visitor_gets_the_canned_attributes(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A known key and visitor answer {provider, attributes} with whole numbers kept whole."""
    response = await gateway.get(
        f"{ENRICH}&anonymous_id={KNOWN_VISITOR}", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.status_code == 200
    assert response.json() == {"provider": "amperity", "attributes": CANNED_ATTRIBUTES}
    assert response.headers["cache-control"] == "no-store"
    request = service.fake.profile_requests[-1]
    assert (request.pipeline_key, request.anonymous_id) == (KNOWN_KEY, KNOWN_VISITOR)


async def test_the_dfid_cookie_identifies_the_visitor(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Without anonymous_id the first-party _dfid cookie is the visitor; the key may be a param."""
    response = await gateway.get(
        f"{ENRICH}&pipeline_key={KNOWN_KEY}", headers={"Cookie": f"_dfid={KNOWN_VISITOR}"}
    )
    assert response.json()["attributes"] == CANNED_ATTRIBUTES
    assert service.fake.profile_requests[-1].anonymous_id == KNOWN_VISITOR


async def test_the_dfid_cookie_is_read_from_any_cookie_header(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Several Cookie headers are read in their order; a quoted value is unquoted."""
    headers = [
        ("X-Pipeline-Key", KNOWN_KEY),
        ("Cookie", "theme=dark"),
        ("Cookie", f'other=1; _dfid="{KNOWN_VISITOR}"'),
        ("Cookie", "_dfid=later"),
    ]
    response = await gateway.get(ENRICH, headers=headers)
    assert response.json()["attributes"] == CANNED_ATTRIBUTES
    assert service.fake.profile_requests[-1].anonymous_id == KNOWN_VISITOR


@pytest.mark.parametrize(
    "cookie",
    [
        f"_dfid={KNOWN_VISITOR}; theme=dark; _dfid=from-the-parent-domain",
        f" _dfid = {KNOWN_VISITOR} ;_dfid=older",
    ],
)
async def test_of_two_dfid_cookies_the_first_names_the_visitor(
    gateway: httpx.AsyncClient, service: RunningService, cookie: str
) -> None:
    """The browser lists the most specific cookie first (RFC 6265 5.4); datafly.js reads it.

    Until session 20 the gateway took the last, as Starlette's ``request.cookies`` does, and
    looked up another visitor than the page's.
    """
    response = await gateway.get(ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY, "Cookie": cookie})
    assert response.json()["attributes"] == CANNED_ATTRIBUTES
    assert service.fake.profile_requests[-1].anonymous_id == KNOWN_VISITOR


async def test_head_answers_the_headers_get_answers(gateway: httpx.AsyncClient) -> None:
    """HEAD is served as GET is (as by every Starlette GET route); other methods are 405."""
    url = f"{ENRICH}&anonymous_id={KNOWN_VISITOR}"
    key = {"X-Pipeline-Key": KNOWN_KEY}
    got, head = await gateway.get(url, headers=key), await gateway.head(url, headers=key)
    assert (head.status_code, head.headers) == (got.status_code, got.headers)
    refused = await gateway.post(url, headers=key)
    assert refused.status_code == 405
    assert refused.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_first_touch_visitor_gets_empty_attributes(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """No anonymous id at all is a first touch: 200 with {} and no RPC."""
    response = await gateway.get(ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 200
    assert response.json() == {"provider": "amperity", "attributes": {}}
    assert service.fake.profile_requests == []


async def test_unresolved_visitor_gets_empty_attributes(gateway: httpx.AsyncClient) -> None:
    """A visitor the service does not know answers 200 with empty attributes."""
    response = await gateway.get(
        f"{ENRICH}&anonymous_id=someone-new", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.json() == {"provider": "amperity", "attributes": {}}


@pytest.mark.parametrize(
    "parameter",
    [
        "email=alice%40example.com",
        "phone=%2B447700900123",
        "user_id=secret-u1",
        "userId=secret-u2",
        "traits=secret-t",
        "_=98765",
    ],
)
async def test_identifier_parameters_are_refused(
    gateway: httpx.AsyncClient, service: RunningService, parameter: str
) -> None:
    """Any parameter beyond provider/pipeline_key/anonymous_id is refused 400, values unechoed."""
    response = await gateway.get(f"{ENRICH}&{parameter}", headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "PARAMETER_NOT_ALLOWED"
    assert parameter.split("=")[1] not in response.text
    assert service.fake.profile_requests == []


@pytest.mark.parametrize(
    ("parameter", "meant"),
    [
        ("anonymousId=a1", "anonymous_id"),
        ("pipelineKey=pk", "pipeline_key"),
        ("Provider=x", "provider"),
        ("visitor=v", None),
    ],
)
async def test_a_parameter_one_slip_from_an_accepted_one_is_told_that_one(
    gateway: httpx.AsyncClient, parameter: str, meant: str | None
) -> None:
    """``anonymousId`` (datafly.js's spelling) is refused naming ``anonymous_id``."""
    response = await gateway.get(f"{ENRICH}&{parameter}", headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    name = parameter.split("=", maxsplit=1)[0]
    hint = f" (did you mean {meant}?)" if meant else ""
    assert response.json()["error"]["message"].startswith(
        f"Unexpected query parameter(s): {name}{hint}. Only anonymous_id, pipeline_key, provider"
    )


@pytest.mark.parametrize(
    ("parameters", "shown", "field"),
    [
        ("&=", "a parameter without a name", None),
        ("&=alice%40example.com", "a parameter without a name", None),
        ("&=&email=x", "email, a parameter without a name", "email"),
    ],
)
async def test_a_parameter_without_a_name_is_refused_in_words(
    gateway: httpx.AsyncClient, parameters: str, shown: str, field: str | None
) -> None:
    """``&=`` is refused as "a parameter without a name", never as an empty name and field."""
    response = await gateway.get(f"{ENRICH}{parameters}", headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "PARAMETER_NOT_ALLOWED"
    assert error["message"].startswith(f"Unexpected query parameter(s): {shown}. Only ")
    assert error.get("field") == field


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"{ENRICH}&provider=amperity", "provider"),
        (f"{ENRICH}&anonymous_id=a&anonymous_id=b", "anonymous_id"),
        (f"{ENRICH}&pipeline_key={KNOWN_KEY}&pipeline_key=pk_x", "pipeline_key"),
        (f"/v1/t?pipeline_key={KNOWN_KEY}&pipeline_key={KNOWN_KEY}", "pipeline_key"),
    ],
)
async def test_repeated_parameters_are_refused(
    gateway: httpx.AsyncClient, service: RunningService, path: str, field: str
) -> None:
    """An accepted parameter given twice answers 400 DUPLICATE_PARAMETER naming it."""
    method = "POST" if path.startswith("/v1/t") else "GET"
    response = await gateway.request(method, path, headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "DUPLICATE_PARAMETER",
        "message": f"Send {field} once.",
        "field": field,
    }
    assert service.fake.profile_requests == []


async def test_parameters_are_decoded_and_blank_ones_count_as_absent(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Percent escapes and + decode; a blank anonymous_id falls back to the _dfid cookie."""
    await gateway.get(f"{ENRICH}&anonymous_id=a%2Fb+c%20d", headers={"X-Pipeline-Key": KNOWN_KEY})
    assert service.fake.profile_requests[-1].anonymous_id == "a/b c d"
    response = await gateway.get(
        f"{ENRICH}&anonymous_id=&pipeline_key={KNOWN_KEY}",
        headers={"Cookie": f"_dfid={KNOWN_VISITOR}"},
    )
    assert response.json()["attributes"] == CANNED_ATTRIBUTES
    assert service.fake.profile_requests[-1].anonymous_id == KNOWN_VISITOR


@pytest.mark.parametrize("escaped", ["caf%E9", "%FF%FE", "a%C3"])
async def test_anonymous_id_that_is_not_utf8_is_a_400_naming_it(
    gateway: httpx.AsyncClient, service: RunningService, escaped: str
) -> None:
    """Percent-escapes that are not UTF-8 are refused, not looked up as U+FFFD."""
    response = await gateway.get(
        f"{ENRICH}&anonymous_id={escaped}", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_QUERY_ENCODING", "anonymous_id")
    assert "UTF-8" in error["message"]
    assert service.fake.profile_requests == []


@pytest.mark.parametrize(
    ("query", "cookie", "field"),
    [("&anonymous_id=" + "a" * 201, "", "anonymous_id"), ("", "a" * 201, "_dfid")],
)
async def test_too_long_anonymous_id_is_refused_naming_where_it_came_from(
    gateway: httpx.AsyncClient, service: RunningService, query: str, cookie: str, field: str
) -> None:
    """An id over 200 characters answers 400 naming the parameter or the _dfid cookie."""
    headers = {"X-Pipeline-Key": KNOWN_KEY}
    if cookie:
        headers["Cookie"] = f"_dfid={cookie}"
    response = await gateway.get(f"{ENRICH}{query}", headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ANONYMOUS_ID", field)
    assert field in error["message"]
    assert service.fake.profile_requests == []


async def test_unknown_provider_is_refused(gateway: httpx.AsyncClient) -> None:
    """A provider other than amperity (or none) answers 400 UNKNOWN_PROVIDER."""
    for url in ("/v1/enrich?provider=zeotap", "/v1/enrich"):
        response = await gateway.get(url, headers={"X-Pipeline-Key": KNOWN_KEY})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "UNKNOWN_PROVIDER"


async def test_missing_pipeline_key_is_refused(gateway: httpx.AsyncClient) -> None:
    """No X-Pipeline-Key header and no pipeline_key parameter answers 400."""
    response = await gateway.get(f"{ENRICH}&anonymous_id=v1")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "MISSING_PIPELINE_KEY",
        "message": "Send the pipeline key in the X-Pipeline-Key header or the pipeline_key "
        "parameter.",
        "field": "pipeline_key",
    }


async def test_non_ascii_pipeline_key_is_refused(gateway: httpx.AsyncClient) -> None:
    """A key that could not travel as gRPC metadata answers 400, not 500."""
    response = await gateway.get(f"{ENRICH}&anonymous_id=v1&pipeline_key=cl%C3%A9")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_PIPELINE_KEY"


@pytest.mark.parametrize("key", ["pk_web%0A", "pk%20web", "pk_" + "a" * 198])
async def test_a_pipeline_key_outside_the_rule_is_refused_whole(
    gateway: httpx.AsyncClient, key: str
) -> None:
    """The rule holds to the key's end: a trailing newline slipped past ``$`` to a 404."""
    response = await gateway.get(f"{ENRICH}&anonymous_id=v1&pipeline_key={key}")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_PIPELINE_KEY",
        "message": "A pipeline key is 1-200 printable ASCII characters, with no spaces; copy "
        "it from the integration.",
        "field": "pipeline_key",
    }


async def test_unknown_pipeline_key_is_404(gateway: httpx.AsyncClient) -> None:
    """The service's NOT_FOUND for an unknown key becomes 404 UNKNOWN_PIPELINE_KEY."""
    response = await gateway.get(f"{ENRICH}&anonymous_id=v1", headers={"X-Pipeline-Key": "pk_x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UNKNOWN_PIPELINE_KEY"


async def test_deadline_exceeded_is_504(gateway: httpx.AsyncClient) -> None:
    """A DEADLINE_EXCEEDED from the service becomes 504 with a generic message."""
    response = await gateway.get(
        f"{ENRICH}&anonymous_id=visitor-slow", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "DEADLINE_EXCEEDED"


async def test_an_invalid_argument_without_a_reason_is_not_blamed_on_an_event(
    gateway: httpx.AsyncClient,
) -> None:
    """INVALID_ARGUMENT with no ErrorInfo is 400 INVALID_REQUEST: enrich sends no event."""
    response = await gateway.get(
        f"{ENRICH}&anonymous_id=visitor-refused-bare", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_REQUEST",
        "message": "anonymous_id is refused",
    }


async def test_a_failed_rpc_is_logged_with_the_method_and_path(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5xx from the service is logged as on every route, without the visitor or the key."""
    with caplog.at_level(logging.WARNING, logger="amperity_signal.gateway.app"):
        await gateway.get(
            f"{ENRICH}&anonymous_id=visitor-slow", headers={"X-Pipeline-Key": KNOWN_KEY}
        )
    assert caplog.messages == ["RPC failed on GET /v1/enrich: StatusCode.DEADLINE_EXCEEDED"]


async def test_allowed_origin_gets_credentialed_cors(gateway: httpx.AsyncClient) -> None:
    """The integration's allowed origin is echoed with credentials and Vary: Origin."""
    response = await gateway.get(
        ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY, "Origin": SHOP_ORIGIN}
    )
    assert response.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


async def test_disallowed_origin_gets_no_cors(gateway: httpx.AsyncClient) -> None:
    """Another origin, or the right origin with another key, gets no ACAO header."""
    evil = await gateway.get(
        ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY, "Origin": "https://evil.example"}
    )
    other_key = await gateway.get(
        f"{ENRICH}&anonymous_id=v1", headers={"X-Pipeline-Key": "pk_x", "Origin": SHOP_ORIGIN}
    )
    for response in (evil, other_key):
        assert "access-control-allow-origin" not in response.headers
        assert "Origin" in response.headers["vary"]


async def test_preflight_for_allowed_origin(gateway: httpx.AsyncClient) -> None:
    """OPTIONS from an allowed origin answers 204 allowing GET and X-Pipeline-Key."""
    response = await gateway.options(
        "/v1/enrich",
        headers={
            "Origin": SHOP_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-pipeline-key",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "X-Pipeline-Key" in response.headers["access-control-allow-headers"]


async def test_preflight_for_disallowed_origin(gateway: httpx.AsyncClient) -> None:
    """OPTIONS from an unknown origin answers 403 JSON without CORS headers."""
    response = await gateway.options(
        "/v1/enrich",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("route", ["/v1/enrich", "/v1/t"])
async def test_a_preflight_naming_an_unknown_pipeline_key_is_told_so_not_blamed_on_its_origin(
    gateway: httpx.AsyncClient, route: str
) -> None:
    """An allowed origin, ``pipeline_key=pk_typo``: 404 UNKNOWN_PIPELINE_KEY, not a 403.

    The key's (empty) origins were checked, and the 403 sent the page's developer to
    allowed_origins, where their origin already was.
    """
    response = await gateway.options(
        f"{route}?pipeline_key=pk_typo",
        headers={"Origin": SHOP_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("UNKNOWN_PIPELINE_KEY", "pipeline_key")
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"


async def test_a_preflight_whose_query_does_not_decode_is_told_so(
    gateway: httpx.AsyncClient,
) -> None:
    """``pipeline_key=%FF``: 400 INVALID_QUERY_ENCODING naming the parameter, as any /v1 call."""
    response = await gateway.options(
        "/v1/t?pipeline_key=%FF",
        headers={"Origin": SHOP_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_QUERY_ENCODING", "pipeline_key")
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_of_a_known_key_from_another_origin_is_still_403(
    gateway: httpx.AsyncClient,
) -> None:
    """The key is known, the origin is not among its allowed_origins: the origin is at fault."""
    response = await gateway.options(
        f"/v1/t?pipeline_key={KNOWN_KEY}",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ORIGIN_NOT_ALLOWED"


async def test_rate_limit_answers_429_with_retry_after(make_gateway: GatewayFactory) -> None:
    """Past the burst, a client gets 429 with Retry-After, CORS headers still present."""
    gateway = make_gateway(rate_limit_per_second=0.5, rate_limit_burst=2)
    headers = {"X-Pipeline-Key": KNOWN_KEY, "Origin": SHOP_ORIGIN}
    statuses = [(await gateway.get(ENRICH, headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await gateway.get(ENRICH, headers=headers)
    assert limited.json()["error"]["code"] == "RATE_LIMITED"
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["access-control-allow-origin"] == SHOP_ORIGIN


async def test_rate_limit_refills_with_time(make_gateway: GatewayFactory, clock: FakeClock) -> None:
    """After waiting, the client may call again."""
    gateway = make_gateway(rate_limit_per_second=1.0, rate_limit_burst=1)
    headers = {"X-Pipeline-Key": KNOWN_KEY}
    assert (await gateway.get(ENRICH, headers=headers)).status_code == 200
    assert (await gateway.get(ENRICH, headers=headers)).status_code == 429
    clock.now += 1.0
    assert (await gateway.get(ENRICH, headers=headers)).status_code == 200

"""The browser-facing API: ``GET /v1/enrich`` and the collector routes.

Handlers translate HTTP to the generated stub's messages and back, nothing more; gRPC
errors propagate to the app's exception handler, which maps them (``errors``). An event
Amperity refused is warned of here too when the service's log is not the gateway's.

``GET /v1/enrich``, which every page view calls, is a plain ASGI app (``EnrichRoute``)
that the gateway's middleware calls directly: Starlette's router, exception layers,
``Request`` and ``Response`` cost ~15 us of CPU per request (docs/benchmarks.md, session 14).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from http.cookies import _unquote
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import grpc.aio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from amperity_signal.config_values import closest
from amperity_signal.gateway.backend import ServiceClient
from amperity_signal.gateway.convert import (
    ANONYMOUS_ID_COOKIE,
    RequestFacts,
    consent_from_json,
    consented_at_from_json,
    event_from_json,
    page_clock,
    sent_at_from_json,
)
from amperity_signal.gateway.errors import (
    GatewayError,
    from_rpc_error,
    json_body,
    json_response,
    refusal,
    send_json,
    send_json_body,
)
from amperity_signal.gateway.fieldnames import consent_field, event_field
from amperity_signal.gateway.jsonbody import check_value, read_json, read_unchecked_json
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.limits import (
    ANONYMOUS_ID_TOO_LONG,
    MAX_ANONYMOUS_ID,
    PIPELINE_KEY,
    PIPELINE_KEY_RULE,
    control_character_problem,
)
from amperity_signal.logs import scrub_forms
from amperity_signal.redaction import scrub
from datafly.amperity.v1 import amperity_service_pb2 as pb

_log = logging.getLogger(__name__)

PROVIDER = "amperity"
ENRICH_PARAMETERS = frozenset({"provider", "pipeline_key", "anonymous_id"})
COLLECTOR_PARAMETERS = frozenset({"pipeline_key"})
_BODY_OPEN = b'{"provider":' + json_body(PROVIDER) + b',"attributes":'
"""What ``json_body`` writes before an enrich answer's attributes."""
_BATCH_ITEM_DEPTH = 2
"""How deep a ``/v1/batch`` item is in its body: ``{"batch": [item]}``."""
API_METHODS: dict[str, tuple[str, ...]] = {
    "/v1/enrich": ("GET",),
    "/v1/consent": ("POST",),
    "/v1/t": ("POST",),
    "/v1/p": ("POST",),
    "/v1/i": ("POST",),
    "/v1/batch": ("POST",),
}


def _pipeline_key(header: str | None, parameters: Mapping[str, str]) -> str:
    """The key from the ``X-Pipeline-Key`` header's (first) value, else the parameter."""
    key = header or parameters.get("pipeline_key")
    if not key:
        raise GatewayError(
            400,
            "MISSING_PIPELINE_KEY",
            "Send the pipeline key in the X-Pipeline-Key header or the pipeline_key parameter.",
            field="pipeline_key",
        )
    if not PIPELINE_KEY.fullmatch(key):
        raise GatewayError(
            400,
            "INVALID_PIPELINE_KEY",
            f"A pipeline key is {PIPELINE_KEY_RULE}; copy it from the integration.",
            field="pipeline_key",
        )
    return key


def _not_utf8(query: str) -> GatewayError:
    """The 400 naming the first parameter whose percent-escapes are not UTF-8."""
    field = None
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        try:
            unquote_plus(name, errors="strict")
            unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            field = unquote_plus(name, errors="replace")[:40] or None
            break
    shown = field or "a parameter"
    return GatewayError(
        400,
        "INVALID_QUERY_ENCODING",
        f"The query parameter {shown} is not UTF-8 once percent-decoded; percent-encode its "
        "UTF-8 bytes (encodeURIComponent and URLSearchParams do).",
        field=field,
    )


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, cheaper when nothing is escaped.

    Without ``%`` or ``+`` unquoting changes nothing, so a split gives the same pairs;
    ``parse_qsl``'s general path was ~10 % of the gateway's own time per enrich request.
    Escapes that are not UTF-8 are refused instead of becoming U+FFFD: ``anonymous_id=%E9``
    and ``anonymous_id=%FF`` would otherwise both look up the visitor ``"\ufffd"``.

    Raises:
        GatewayError: 400 ``INVALID_QUERY_ENCODING`` naming the parameter.
    """
    if "%" in query or "+" in query:
        try:
            return parse_qsl(query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise _not_utf8(query) from None
    pairs = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((name, value))
    return pairs


def _parameters(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all of them in ``allowed``.

    Parsed once, as Starlette's ``request.query_params`` parses (blank values kept): its
    multidict and the lookups on it were a tenth of the gateway's own time per request.

    Raises:
        GatewayError: 400 naming an unexpected or repeated parameter.
    """
    pairs = query_pairs(scope["query_string"].decode("latin-1"))
    parameters = dict(pairs)
    if len(parameters) == len(pairs) and parameters.keys() <= allowed:
        return parameters
    raise _refused(pairs, allowed)


def _refused(pairs: list[tuple[str, str]], allowed: frozenset[str]) -> GatewayError:
    """The 400 for parameters of which one is unexpected or repeated."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    unexpected = values.keys() - allowed
    if unexpected:
        names = sorted(name for name in unexpected if name)
        shown = [name[:40] for name in names[:5]]
        # "&=" or "=value": an empty name would read as "parameter(s): ." and field "".
        if "" in unexpected:
            shown.append("a parameter without a name")
        # anonymousId (datafly.js's spelling) for anonymous_id: the one it is a slip from.
        guess = closest(names[0], tuple(sorted(allowed))) if unexpected == set(names[:1]) else None
        hint = f" (did you mean {guess}?)" if guess else ""
        return GatewayError(
            400,
            "PARAMETER_NOT_ALLOWED",
            f"Unexpected query parameter(s): {', '.join(shown)}{hint}. Only "
            f"{', '.join(sorted(allowed))} are accepted; visitors are identified by the _dfid "
            "cookie, and emails, phones and user ids are resolved server-side, never sent by "
            "the page.",
            field=names[0][:40] if names else None,
        )
    repeated = next(name for name in allowed if len(values.get(name, ())) > 1)
    return GatewayError(400, "DUPLICATE_PARAMETER", f"Send {repeated} once.", field=repeated)


class FirstCookie:
    """Reads the first cookie of one name in a request's Cookie headers, in their order.

    A browser lists cookies with longer paths first, then the earlier created (RFC 6265
    §5.4), so with two cookies of a name (one for ``/`` and one for a longer path, or one
    for the parent domain and one for the host) the first is the most specific, and the
    one datafly.js reads; Starlette's ``request.cookies`` keeps the last. Every cookie the
    gateway reads is read this way, so that none is first-wins while another is last-wins.
    The value is read as Starlette's parser reads one (stripped, then unquoted); no other
    cookie is parsed, and a header without the name is not even decoded.

    Args:
        name: The cookie's name.
    """

    __slots__ = ("_name", "_pair")

    def __init__(self, name: str) -> None:
        self._name = name.encode()
        # ``name=`` and the value after it, spaced as Starlette's ``cookie_parser`` allows
        # (``str.strip()``'s whitespace is ``\s``'s). Led by the name, so that the regex
        # engine finds it by its fast literal search rather than trying every position.
        self._pair = re.compile(re.escape(name) + r"\s*=([^;]*)")

    def __call__(self, cookie_headers: Iterable[bytes]) -> str | None:
        """The first such cookie's value in these Cookie header values; None if none."""
        for header in cookie_headers:
            if self._name not in header:
                continue
            text = header.decode("latin-1")
            for found in self._pair.finditer(text):
                # The whole name of its cookie (``x_dfid=`` and ``a=_dfid=`` are not it):
                # only whitespace between it and the ``;`` before it, or the header's start.
                at = found.start()
                if not text[text.rfind(";", 0, at) + 1 : at].strip():
                    return str(_unquote(found.group(1).strip()))
        return None

    def of_request(self, request: Request) -> str | None:
        """The first such cookie of a Starlette request; None if it has none."""
        headers = request.scope["headers"]
        return self(value for name, value in headers if name == b"cookie")


anonymous_id_cookie = FirstCookie(ANONYMOUS_ID_COOKIE)
"""The first ``_dfid`` cookie in the request's Cookie headers (``FirstCookie``)."""


class ApiEndpoints:
    """The ``/v1`` handlers, wired to the service client and settings.

    Args:
        client: The gRPC client of the AmperityService.
        settings: Limits for bodies and batches; the secrets its log lines are scrubbed of.
        now: The current UTC time; the receive time of events without a timestamp.
        new_message_id: Makes messageIds for events that have none.
        warn_refusals: Log a warning for each event Amperity refused, with the reason and
            the service's advice: for a gateway whose log is not the service's.
    """

    def __init__(
        self,
        client: ServiceClient,
        settings: GatewaySettings,
        now: Callable[[], datetime],
        new_message_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        *,
        warn_refusals: bool = True,
    ) -> None:
        self._client = client
        self._settings = settings
        self._now = now
        self._new_message_id = new_message_id
        self._enrich = EnrichRoute(client)
        self._warn_refusals = warn_refusals
        self._secrets = tuple(scrub_forms(settings.redact))
        not_sent = (
            f"Not sent: the batch is answered within {settings.batch_deadline:g} s and this "
            "event's turn came too late; send it again (it did not reach Amperity)."
        )
        # NOT_SENT for a sender that says it takes it (``accepts``), DEADLINE_EXCEEDED for
        # the others: datafly.js before NOT_SENT resends that, and would drop an unknown code.
        self._not_sent = {
            True: GatewayError(504, "NOT_SENT", not_sent),
            False: GatewayError(504, "DEADLINE_EXCEEDED", not_sent),
        }

    def routes(self) -> list[Route]:
        """The routes, one per ``API_METHODS`` entry."""
        handlers = {
            "/v1/consent": self.consent,
            "/v1/t": self.track,
            "/v1/p": self.page,
            "/v1/i": self.identify,
            "/v1/batch": self.batch,
        }
        return [
            Route(path, handlers.get(path, self.enrich_route), methods=m)
            for path, m in API_METHODS.items()
        ]

    @property
    def enrich_route(self) -> EnrichRoute:
        """``GET /v1/enrich`` as a plain ASGI app, for the route table and the middleware."""
        return self._enrich

    async def consent(self, request: Request) -> Response:
        """``POST /v1/consent``: keep the visitor's consent state, without an event.

        A withdrawal then stops ``/v1/enrich`` for this visitor at once, in every tab;
        ``profileAllowed`` tells the page whether asking for the profile is worth it.
        ``consentedAt`` (optional) says when the visitor chose; else it is now. With
        ``sentAt`` it is put on the gateway's clock (``convert.PageClock``).
        """
        key = _collector_key(request)
        data = await read_json(request, self._settings.max_body_bytes)
        if not isinstance(data, dict):
            raise GatewayError(
                400,
                "INVALID_CONSENT",
                'Send {"anonymousId": "<_dfid>", "consent": {...}} as the body.',
                field="body",
            )
        given = data.get("anonymousId")
        if given is not None and not isinstance(given, str):
            raise GatewayError(
                400, "INVALID_CONSENT", "anonymousId must be a string.", field="anonymousId"
            )
        anonymous_id = given or anonymous_id_cookie.of_request(request)
        source = "anonymousId" if given else ANONYMOUS_ID_COOKIE
        if not anonymous_id:
            raise GatewayError(
                400,
                "MISSING_ANONYMOUS_ID",
                "Consent is kept per visitor: send anonymousId in the body or the _dfid cookie.",
                field="anonymousId",
            )
        _check_length(anonymous_id, source)
        consent = consent_from_json(data.get("consent"))
        sent = sent_at_from_json(data, "INVALID_CONSENT")
        consented_at = consented_at_from_json(data, page_clock(sent, self._now()))
        try:
            allowed = await self._client.record_consent(key, anonymous_id, consent, consented_at)
        except grpc.aio.AioRpcError as error:
            raise _in_body_names(error, lambda path: consent_field(path, data)) from None
        return json_response({"success": True, "profileAllowed": allowed})

    async def track(self, request: Request) -> Response:
        """``POST /v1/t``: one event, ``track`` unless it says otherwise."""
        return await self._single(request, "track")

    async def page(self, request: Request) -> Response:
        """``POST /v1/p``: one event, ``page`` unless it says otherwise."""
        return await self._single(request, "page")

    async def identify(self, request: Request) -> Response:
        """``POST /v1/i``: one event, ``identify`` unless it says otherwise."""
        return await self._single(request, "identify")

    def _facts(self, request: Request, default_type: str, sent: int | None) -> RequestFacts:
        now = self._now()
        return RequestFacts(
            default_type=default_type,
            ip=request.client.host if request.client else "",
            user_agent=request.headers.get("user-agent"),
            cookie_anonymous_id=anonymous_id_cookie.of_request(request) or None,
            now=now,
            new_message_id=self._new_message_id,
            clock=page_clock(sent, now),
        )

    async def _single(self, request: Request, default_type: str) -> Response:
        key = _collector_key(request)
        data = await read_json(request, self._settings.max_body_bytes)
        sent = sent_at_from_json(data, "INVALID_EVENT")
        event = event_from_json(data, self._facts(request, default_type, sent))
        try:
            await self._deliver(key, event)
        except grpc.aio.AioRpcError as error:
            raise _in_body_names(error, lambda path: event_field(path, data)) from None
        return json_response({"success": True, "messageId": event.message_id})

    def _call_deadline(self, left: float) -> float | None:
        """The deadline of a batch event's Deliver, ``left`` seconds before the batch's.

        None when the event is not to start. It starts only when its whole
        ``deliver_timeout`` fits, so that the batch's deadline never cuts a Deliver: a cut
        one may have reached Amperity, and its resend would deliver it twice. A
        ``deliver_timeout`` longer than half the batch's deadline would fit for few
        events after the first: then each starts while half the batch's deadline is
        left, with what is left (less, and the service fails it at once as too short to
        send, yet perhaps after sending it).
        """
        whole = self._settings.deliver_timeout
        if left >= min(whole, self._settings.batch_deadline / 2):
            return min(whole, left)
        return None

    async def _deliver(self, key: str, event: pb.Event, deadline: float | None = None) -> None:
        """Deliver one event; one the service refused is warned of, unless its log has it.

        The service logs "delivery failed" with its advice for each event Amperity refused;
        a gateway run as its own process logs the same, scrubbed, or its operator would see
        a failed event's 502 or 503 and nothing of why (``create_gateway_app(embedded=)``).

        Raises:
            grpc.aio.AioRpcError: When the service refuses or cannot be reached.
        """
        try:
            await self._client.deliver(key, event, deadline)
        except grpc.aio.AioRpcError as error:
            refused = refusal(error) if self._warn_refusals else None
            if refused is not None:
                extra = {
                    "reason": refused.reason,
                    "integration_id": refused.integration_id,
                    "message_id": event.message_id,
                }
                if refused.request_id:
                    extra["request_id"] = refused.request_id
                _log.warning(
                    "delivery failed: %s", scrub(refused.advice, self._secrets), extra=extra
                )
            raise

    async def batch(self, request: Request) -> Response:
        """``POST /v1/batch``: ``{"batch": [events...]}``, each answered on its own.

        An event with a value the gateway refuses (an integer beyond ±2^53, a lone
        surrogate: ``check_value``) fails alone, naming the value's field, as a field of
        the wrong type does; a body that is not JSON, or whose envelope is refused, fails
        whole. One such value in one event was a 400 for the whole batch, and datafly.js
        dropped every event of it. A messageId repeated in the batch is delivered once:
        each repeat is answered with its first's result.

        The batch is answered within ``batch_deadline`` of its arrival, before datafly.js
        gives up on it (``DATAFLY_SEND_TIMEOUT``): an event whose turn comes too late is
        not sent (``_call_deadline``) and answered ``NOT_SENT`` when the body's ``accepts``
        lists it (datafly.js's, which sends it again without counting an attempt), else
        ``DEADLINE_EXCEEDED``, which every datafly.js sends again as one of its attempts.
        100 events at 8 at once and 5 s each took up to 65 s, were sent again after 20 s,
        and so were delivered twice.
        """
        loop = asyncio.get_running_loop()
        # datafly.js's timer started before the body was sent, so the batch's starts here.
        answer_by = loop.time() + self._settings.batch_deadline
        key = _collector_key(request)
        data = await read_unchecked_json(request, self._settings.max_batch_body_bytes)
        items = data.get("batch") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise GatewayError(400, "INVALID_BATCH", 'Send {"batch": [event, ...]}.', field="batch")
        check_value({name: value for name, value in data.items() if name != "batch"}, "")
        limit = self._settings.max_batch_events
        if len(items) > limit:
            raise GatewayError(
                400,
                "BATCH_TOO_LARGE",
                f"A batch carries at most {limit} events; split it.",
                field="batch",
            )
        not_sent = self._not_sent["NOT_SENT" in _accepted_codes(data)]
        facts = self._facts(request, "track", sent_at_from_json(data, "INVALID_BATCH"))
        events = [_batch_event(index, item, facts) for index, item in enumerate(items)]
        # The first event of each messageId is delivered; a repeat in the same batch gets
        # its answer (it was delivered twice, and Amperity kept both).
        first_of: dict[str, int] = {}
        firsts: dict[int, pb.Event] = {}
        for index, event in enumerate(events):
            if (
                isinstance(event, pb.Event)
                and first_of.setdefault(event.message_id, index) == index
            ):
                firsts[index] = event
        in_flight = asyncio.Semaphore(self._settings.batch_concurrency)

        async def deliver_one(index: int, event: pb.Event) -> dict[str, Any]:
            try:
                async with in_flight:
                    deadline = self._call_deadline(answer_by - loop.time())
                    if deadline is None:
                        return _failed(event.message_id, not_sent)
                    await self._deliver(key, event, deadline)
            except grpc.aio.AioRpcError as rpc_error:
                prefix = f"batch[{index}]."
                item = items[index]
                refused = from_rpc_error(rpc_error, lambda path: event_field(path, item, prefix))
                return _failed(event.message_id, refused)
            return {"messageId": event.message_id, "ok": True}

        delivered = await asyncio.gather(*(deliver_one(i, e) for i, e in firsts.items()))
        answers = dict(zip(firsts, delivered, strict=True))
        results = [
            dict(answers[first_of[event.message_id]]) if isinstance(event, pb.Event) else event
            for event in events
        ]
        return json_response({"success": all(r["ok"] for r in results), "results": results})


def _in_body_names(error: grpc.aio.AioRpcError, body_field: Callable[[str], str]) -> Exception:
    """What to raise for a failed RPC: a refusal of the body's fields in the body's names.

    Any other failure is raised as it is, for the app's handler (which logs the 5xx).
    """
    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return error
    return from_rpc_error(error, body_field)


def _collector_key(request: Request) -> str:
    parameters = _parameters(request.scope, COLLECTOR_PARAMETERS)
    return _pipeline_key(request.headers.get("x-pipeline-key"), parameters)


class EnrichRoute:
    """``GET /v1/enrich?provider=amperity``: the visitor's allowlisted attributes.

    A plain ASGI app rather than a Starlette endpoint, so it needs neither ``Request`` nor
    ``Response`` objects; it answers the bytes and headers ``json_response`` gives
    (tested). Like any endpoint it raises ``GatewayError`` and ``grpc.aio.AioRpcError`` for
    the app's exception handlers; the gateway's middleware, which calls it without
    Starlette's router in between, answers them with the same handlers.

    Args:
        client: The gRPC client of the AmperityService.
    """

    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request."""
        parameters = _parameters(scope, ENRICH_PARAMETERS)
        provider = parameters.get("provider")
        if provider != PROVIDER:
            raise GatewayError(
                400,
                "UNKNOWN_PROVIDER",
                f"Unknown provider; the gateway serves provider={PROVIDER}.",
                field="provider",
            )
        # The first X-Pipeline-Key, as Starlette's Request reads it, and every Cookie header.
        key_header: str | None = None
        cookie_headers: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-pipeline-key" and key_header is None:
                key_header = value.decode("latin-1")
            elif name == b"cookie":
                cookie_headers.append(value)
        key = _pipeline_key(key_header, parameters)
        anonymous_id = parameters.get("anonymous_id")
        source = "anonymous_id"
        if not anonymous_id:
            anonymous_id = anonymous_id_cookie(cookie_headers)
            source = ANONYMOUS_ID_COOKIE
        if not anonymous_id:
            # A first-touch visitor has no profile yet: an empty answer, not an error.
            await send_json(send, {"provider": PROVIDER, "attributes": {}})
            return
        _check_length(anonymous_id, source)
        attributes = await self._client.browser_profile(key, anonymous_id)
        # The bytes json_body gives for {"provider": ..., "attributes": attributes}: with
        # no spaces between items, the envelope is a constant around the attributes' own
        # rendering, and the encoder skips a dict and two keys (~4k instructions).
        await send_json_body(send, _BODY_OPEN + json_body(attributes) + b"}")


def _check_length(anonymous_id: str, source: str) -> None:
    """Refuse a visitor's id no event could carry (too long, a control character), by source."""
    problem = control_character_problem(anonymous_id)
    if len(anonymous_id) > MAX_ANONYMOUS_ID or problem:
        message = f"{source}: {problem or ANONYMOUS_ID_TOO_LONG}"
        raise GatewayError(400, "INVALID_ANONYMOUS_ID", message, field=source)


def _batch_event(index: int, item: Any, facts: RequestFacts) -> pb.Event | dict[str, Any]:
    """The ``index``-th item of a batch as an Event, or its failed result when it is refused.

    Its values are checked at the depth they have in the body, so the body's nesting
    limit is the same as for a single event's body plus the batch around it.
    """
    try:
        check_value(item, f"batch[{index}]", _BATCH_ITEM_DEPTH)
        return event_from_json(item, facts, prefix=f"batch[{index}].")
    except GatewayError as error:
        return _failed(_given_message_id(item), error)


def _given_message_id(item: Any) -> str:
    """The messageId a batch item gave, as its result can carry it; "" when it gave none.

    A lone surrogate cannot be written in the UTF-8 answer: it is named escaped
    (a backslash, ``u`` and its hex digits), as the gateway names such a key.
    """
    given = item.get("messageId") if isinstance(item, dict) else None
    if not isinstance(given, str):
        return ""
    return given.encode("utf-8", "backslashreplace").decode("utf-8")


def _accepted_codes(data: dict[str, Any]) -> set[str]:
    """A batch body's ``accepts``: the result codes its sender takes beyond the first ones.

    Raises:
        GatewayError: 400 ``INVALID_BATCH`` naming ``accepts`` when it is not an array of
            strings.
    """
    accepts = data.get("accepts", [])
    if not isinstance(accepts, list) or not all(isinstance(code, str) for code in accepts):
        raise GatewayError(
            400,
            "INVALID_BATCH",
            'accepts must be an array of result codes, like ["NOT_SENT"], or left out.',
            field="accepts",
        )
    return set(accepts)


def _failed(message_id: str, error: GatewayError) -> dict[str, Any]:
    """A batch item's failure: the field, as its body spelled it, when the error names one.

    The same ``field`` a single event's answer would carry (``batch[3].``-prefixed for a
    field of the event), so a pipeline can branch on it without parsing the message.
    """
    result = {"messageId": message_id, "ok": False, "error": error.message, "code": error.code}
    if error.field is not None:
        result["field"] = error.field
    return result

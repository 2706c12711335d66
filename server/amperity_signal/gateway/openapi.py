"""The gateway's OpenAPI 3.1 description, written by hand to match every route exactly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from amperity_signal.gateway.live import LIVE_ASSETS
from amperity_signal.gateway.openapi_schemas import SCHEMAS, ref
from amperity_signal.gateway.routes_ops import DEMO_ASSETS
from amperity_signal.limits import (
    INTEGRATION_ID,
    INTEGRATION_ID_RULE,
    MAX_ANONYMOUS_ID,
    MAX_INTEGRATION_ID,
)

_JSON = "application/json"


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'Bearer realm="live".',
        "required": True,
        "schema": {"type": "string"},
    }
}
_LOCATION = {"Location": {"required": True, "schema": {"type": "string"}}}


def _error(
    description: str, retry_after: bool = False, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An error answer: the JSON envelope, and the headers it always carries."""
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": ref("Error")}},
    }
    all_headers = {**(_RETRY_AFTER if retry_after else {}), **(headers or {})}
    if all_headers:
        response["headers"] = all_headers
    return response


_UPSTREAM_ERRORS = {
    "429": _error("Too many requests from this client, or to Amperity.", retry_after=True),
    "431": _error("The request headers are too large."),
    "502": _error(
        "Amperity refused the integration's call (UPSTREAM_REFUSED: not to be sent again), "
        "or the service failed in an unexpected way (UPSTREAM_ERROR)."
    ),
    "503": _error("The service is unavailable.", retry_after=True),
    "504": _error("The service did not answer within the deadline."),
}

_HEADERS_TOO_LARGE = {"431": _error("The request headers are too large.")}
_UNSUPPORTED_BODY = _error(
    "The body is not application/json or text/plain (UNSUPPORTED_MEDIA_TYPE), or it is "
    "compressed (UNSUPPORTED_CONTENT_ENCODING: send it without Content-Encoding).",
    headers={
        "Accept-Encoding": {
            "description": "identity, on UNSUPPORTED_CONTENT_ENCODING: bodies are read as sent.",
            "schema": {"type": "string", "const": "identity"},
        }
    },
)

_ADMIN: list[dict[str, list[str]]] = [{"adminBearer": []}, {"adminSession": []}]
_ADMIN_ERRORS = {
    "401": _error("No admin token, or the wrong one.", headers=_WWW_AUTHENTICATE),
    "404": _error("Live Events is off: no [server] admin_token is configured."),
    "429": _error("Too many wrong admin tokens from this client.", retry_after=True),
    **_HEADERS_TOO_LARGE,
}

_PIPELINE_KEY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "X-Pipeline-Key",
        "in": "header",
        "required": False,
        "description": "The pipeline key; this or the pipeline_key parameter is required.",
        "schema": {"type": "string"},
    },
    {
        "name": "pipeline_key",
        "in": "query",
        "required": False,
        "description": "The pipeline key, for callers that cannot set headers (sendBeacon).",
        "schema": {"type": "string"},
    },
]

_DFID_COOKIE: dict[str, Any] = {
    "name": "_dfid",
    "in": "cookie",
    "required": False,
    "description": "The first-party Datafly anonymous id; of two, the first (the most "
    "specific, as the browser lists them) is used.",
    "schema": {"type": "string", "maxLength": MAX_ANONYMOUS_ID},
}


def _collector(summary: str, schema: str, ok: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [*_PIPELINE_KEY_PARAMETERS, _DFID_COOKIE],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": ref(schema)},
                    "text/plain": {"schema": ref(schema)},
                },
            },
            "responses": {
                "200": {
                    "description": ok,
                    "content": {
                        _JSON: {"schema": ref("BatchResult" if schema == "Batch" else "Accepted")}
                    },
                },
                "400": _error("Bad JSON, a bad event, or a missing pipeline key."),
                "404": _error("No integration uses this pipeline key."),
                "413": _error(
                    "The body is too large (BODY_TOO_LARGE), or Amperity refused the event "
                    "as too large (PAYLOAD_TOO_LARGE; a batch answers it in that event's "
                    "result)."
                ),
                "415": _UNSUPPORTED_BODY,
                **_UPSTREAM_ERRORS,
            },
        }
    }


def _media_types(content_types: Iterable[str]) -> dict[str, Any]:
    """The ``content`` of an asset's answer: each served type, without its parameters."""
    return {t.split(";")[0]: {} for t in sorted(content_types)}


def _ops(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, **extra, "responses": {**responses, **_HEADERS_TOO_LARGE}}}


def _live_paths() -> dict[str, Any]:
    return {
        "/live": {
            "get": {
                "summary": "The operator's Live Events page (streams WatchDeliveries).",
                "security": [*_ADMIN, {"adminQuery": []}],
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "The admin token, once: answered with a session cookie "
                        "and a redirect to /live without it.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The page; the session cookie is set unless it came "
                        "with one.",
                        "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                        "content": {"text/html": {}},
                    },
                    "303": {
                        "description": "Token accepted; the session cookie is set.",
                        "headers": {
                            **_LOCATION,
                            "Set-Cookie": {"required": True, "schema": {"type": "string"}},
                        },
                    },
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/live/stream": {
            "get": {
                "summary": "Server-sent events: one `delivery` event (a WatchDeliveries "
                "record as JSON, proto field names, secrets redacted) per delivery; a "
                "`failure` event (an Error's `error` object) ends the stream when the service "
                "or the gateway stops or the integration is unknown.",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "integration",
                        "in": "query",
                        "required": False,
                        "description": "Only this integration's deliveries (an integration "
                        f"id: {INTEGRATION_ID_RULE}).",
                        "schema": {
                            "type": "string",
                            "maxLength": MAX_INTEGRATION_ID,
                            "pattern": f"^(?:{INTEGRATION_ID.pattern})?$",
                        },
                    },
                    {
                        "name": "replay",
                        "in": "query",
                        "required": False,
                        "description": "Recent records to replay first (default 50).",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": {"description": "The stream.", "content": {"text/event-stream": {}}},
                    "400": _error("A bad integration or replay parameter."),
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/live/{name}": {
            "get": {
                "summary": "The Live Events page's script and stylesheet.",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(LIVE_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "live.js or live.css.",
                        "content": _media_types(LIVE_ASSETS.values()),
                    },
                    **_ADMIN_ERRORS,
                    "404": _error("Live Events is off, or no such asset."),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    status = {"content": {_JSON: {"schema": ref("Status")}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "amperity-signal gateway",
            "version": "1.0.0",
            "description": "Browser personalisation and event collection for Datafly Signal "
            "with Amperity. Every error is JSON: {error: {code, message, field?}}.",
        },
        "paths": {
            "/v1/enrich": {
                "get": {
                    "summary": "The visitor's allowlisted Amperity attributes.",
                    "parameters": [
                        {
                            "name": "provider",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "enum": ["amperity"]},
                        },
                        *_PIPELINE_KEY_PARAMETERS,
                        {
                            "name": "anonymous_id",
                            "in": "query",
                            "required": False,
                            "description": "The visitor id; else the _dfid cookie is used.",
                            "schema": {"type": "string", "maxLength": MAX_ANONYMOUS_ID},
                        },
                        _DFID_COOKIE,
                    ],
                    "responses": {
                        "200": {
                            "description": "The attributes; {} for a first-touch visitor.",
                            "content": {_JSON: {"schema": ref("EnrichResponse")}},
                        },
                        "400": _error(
                            "An unknown provider, a missing pipeline key, or an "
                            "identifier parameter (only provider, pipeline_key and "
                            "anonymous_id are accepted)."
                        ),
                        "404": _error("No integration uses this pipeline key."),
                        **_UPSTREAM_ERRORS,
                    },
                }
            },
            "/v1/consent": {
                "post": {
                    "summary": "Keep the visitor's consent state now, without an event: a "
                    "withdrawal stops /v1/enrich for the visitor at once.",
                    "parameters": [*_PIPELINE_KEY_PARAMETERS, _DFID_COOKIE],
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {"schema": ref("ConsentUpdate")},
                            "text/plain": {"schema": ref("ConsentUpdate")},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Kept.",
                            "content": {_JSON: {"schema": ref("ConsentKept")}},
                        },
                        "400": _error(
                            "Bad JSON, a bad consent field or consentedAt (code "
                            "INVALID_CONSENT), no visitor id, or a missing pipeline key."
                        ),
                        "404": _error("No integration uses this pipeline key."),
                        "413": _error("The body is too large."),
                        "415": _UNSUPPORTED_BODY,
                        **_UPSTREAM_ERRORS,
                        "503": _error(
                            "The service is unavailable, or could not reach the store that "
                            "keeps consent: the state was NOT recorded; send it again after "
                            "Retry-After.",
                            retry_after=True,
                        ),
                    },
                }
            },
            "/v1/t": _collector("Collect one event (track by default).", "Event", "Delivered."),
            "/v1/p": _collector("Collect one event (page by default).", "Event", "Delivered."),
            "/v1/i": _collector("Collect one event (identify by default).", "Event", "Delivered."),
            "/v1/batch": _collector(
                "Collect up to 100 events; each is answered on its own.", "Batch", "Processed."
            ),
            "/healthz": _ops("The process is alive.", {"200": {"description": "Alive.", **status}}),
            "/readyz": _ops(
                "The gRPC service answers SERVING.",
                {
                    "200": {"description": "Ready.", **status},
                    "503": _error("Not ready.", retry_after=True),
                },
            ),
            "/metrics": _ops(
                "Prometheus metrics (text exposition format).",
                {"200": {"description": "Metrics.", "content": {"text/plain": {}}}},
            ),
            "/openapi.json": _ops(
                "This document.", {"200": {"description": "OpenAPI 3.1.", "content": {_JSON: {}}}}
            ),
            "/demo": _ops(
                "Redirects to /demo/, keeping the query string.",
                {"308": {"description": "To /demo/.", "headers": _LOCATION}},
            ),
            "/demo/": _ops(
                "The demo storefront page (?pipeline_key= or ?pipelineKey=).",
                {"200": {"description": "HTML.", "content": {"text/html": {}}}},
            ),
            "/demo/{name}": _ops(
                "The browser client, datafly.js (script) or datafly.mjs (module), or the "
                "storefront page again as index.html.",
                {
                    "200": {
                        "description": "JavaScript, or the HTML page.",
                        "content": _media_types(t for _, _, t in DEMO_ASSETS.values()),
                    },
                    "404": _error("No such asset."),
                },
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(DEMO_ASSETS)},
                    }
                ],
            ),
            "/favicon.ico": _ops(
                "No icon: answered so that browsers log no error for the pages.",
                {"204": {"description": "No content."}},
            ),
            **_live_paths(),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "[server] admin_token.",
                },
                "adminSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "dfadmin",
                    "description": "Set by /live after the admin token was presented.",
                },
                "adminQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }

"""The gateway's OpenAPI 3.1 description, written by hand to match every route exactly."""

from __future__ import annotations

from typing import Any

from amperity_signal.gateway.openapi_schemas import SCHEMAS, ref

_JSON = "application/json"


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": ref("Error")}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    return response


_UPSTREAM_ERRORS = {
    "429": _error("Too many requests from this client, or to Amperity.", retry_after=True),
    "431": _error("The request headers are too large."),
    "502": _error("The service failed in an unexpected way."),
    "503": _error("The service is unavailable.", retry_after=True),
    "504": _error("The service did not answer within the deadline."),
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
    "description": "The first-party Datafly anonymous id.",
    "schema": {"type": "string"},
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
                "413": _error("The body is too large."),
                "415": _error("The body is not application/json or text/plain."),
                **_UPSTREAM_ERRORS,
            },
        }
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
                            "schema": {"type": "string", "maxLength": 200},
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
            "/v1/t": _collector("Collect one event (track by default).", "Event", "Delivered."),
            "/v1/p": _collector("Collect one event (page by default).", "Event", "Delivered."),
            "/v1/i": _collector("Collect one event (identify by default).", "Event", "Delivered."),
            "/v1/batch": _collector(
                "Collect up to 100 events; each is answered on its own.", "Batch", "Processed."
            ),
            "/healthz": {
                "get": {
                    "summary": "The process is alive.",
                    "responses": {"200": {"description": "Alive.", **status}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.1.", "content": {_JSON: {}}}},
                }
            },
            "/demo/": {
                "get": {
                    "summary": "The demo storefront page.",
                    "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}},
                }
            },
            "/demo/{name}": {
                "get": {
                    "summary": "The browser client: datafly.js (script) or datafly.mjs (module).",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "JavaScript.", "content": {"text/javascript": {}}},
                        "404": _error("No such asset."),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The gRPC service answers SERVING.",
                    "responses": {
                        "200": {"description": "Ready.", **status},
                        "503": _error("Not ready."),
                    },
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }

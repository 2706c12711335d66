"""The component schemas of the gateway's OpenAPI description."""

from __future__ import annotations

from typing import Any

from amperity_signal.limits import MAX_ANONYMOUS_ID


def ref(name: str) -> dict[str, str]:
    """A JSON reference to one of the component schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def _strings(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "additionalProperties": True,
    }


_CODE: dict[str, Any] = {"type": "string", "pattern": "^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$"}
_CODE_DESCRIPTION = (
    "UPPER_SNAKE, stable: a client may branch on it. docs/gateway.md, Error codes, lists "
    "every code with its status."
)

_SENT_AT: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "description": "When the request was sent, by the clock that stamped its instants "
    "(RFC 3339; sent_at is also accepted), stamped again on each retry. Each instant then "
    "counts as received less its age on that clock (received - (sentAt - instant)), so a "
    "page clock ahead or behind cancels out; an instant after sentAt counts as received. "
    "Absent: instants are taken as sent. Not RFC 3339 is a 400 naming it.",
}

_CONSENT: dict[str, Any] = {
    "type": "object",
    "description": "Absent fields stay absent all the way to Amperity.",
    "properties": {
        "analytics": {"type": ["boolean", "null"]},
        "marketing": {"type": ["boolean", "null"]},
        "functional": {"type": ["boolean", "null"]},
        "categories": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "google": {
            "type": "object",
            "properties": {
                name: {"type": ["string", "null"], "enum": ["granted", "denied", None]}
                for name in (
                    "ad_storage",
                    "ad_user_data",
                    "ad_personalization",
                    "analytics_storage",
                )
            },
        },
    },
}

SCHEMAS: dict[str, Any] = {
    # The answers' schemas list every key the gateway writes and no other
    # (additionalProperties false), so a route that adds or drops one fails
    # tests/gateway/test_openapi_conformance.py rather than a generated client.
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {**_CODE, "description": _CODE_DESCRIPTION},
                    "message": {"type": "string", "minLength": 1, "description": "What to change."},
                    "field": {"type": "string", "description": "The offending field."},
                },
            }
        },
    },
    "EnrichResponse": {
        "type": "object",
        "required": ["provider", "attributes"],
        "additionalProperties": False,
        "properties": {
            "provider": {"type": "string", "enum": ["amperity"]},
            "attributes": {"type": "object", "description": "Only allowlisted attributes."},
        },
    },
    "Event": {
        "type": "object",
        "description": "A Datafly event; unknown keys are ignored. Needs an anonymousId (or "
        "the _dfid cookie), also when it has a userId.",
        "properties": {
            "type": {
                "type": "string",
                "enum": ["track", "page", "identify", "screen", "group", "alias"],
            },
            "event": {"type": "string"},
            "messageId": {"type": "string", "description": "Generated when absent."},
            "anonymousId": {"type": "string", "maxLength": MAX_ANONYMOUS_ID},
            "userId": {"type": "string"},
            "canonicalId": {"type": "string"},
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "RFC 3339, read to the nanosecond; no offset means UTC. "
                "Absent means when the gateway receives it.",
            },
            "sentAt": {
                **_SENT_AT,
                "description": "On /v1/t, /v1/p and /v1/i: "
                + _SENT_AT["description"]
                + " In a batch the batch's own sentAt counts, an event's is ignored.",
            },
            "properties": {"type": "object"},
            "traits": {"type": "object"},
            "context": {
                "type": "object",
                "description": "ip and userAgent are taken from the request.",
                "properties": {
                    "userAgent": {"type": "string"},
                    "locale": {"type": "string"},
                    "timezone": {"type": "string"},
                    "page": _strings("url", "path", "referrer", "title", "search"),
                    "campaign": _strings("source", "medium", "name", "term", "content"),
                    "session": {
                        "type": "object",
                        "properties": {
                            # A whole number is its digits, exact in JavaScript.
                            "id": {
                                "type": ["string", "integer"],
                                "minimum": -(2**53 - 1),
                                "maximum": 2**53 - 1,
                            },
                            "number": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 2**53 - 1,
                            },
                        },
                    },
                    "geo": _strings("country", "region", "city", "postalCode"),
                    "device": _strings("type", "os", "browser"),
                    "vendorIds": {"type": "object", "additionalProperties": {"type": "string"}},
                    "consent": _CONSENT,
                    "traits": {
                        "type": "object",
                        "description": "Segment-style identity, folded into the event's "
                        "traits; a key traits holds (not null) wins.",
                    },
                },
            },
        },
    },
    "ConsentUpdate": {
        "type": "object",
        "required": ["consent"],
        "properties": {
            "anonymousId": {
                "type": "string",
                "maxLength": MAX_ANONYMOUS_ID,
                "description": "The visitor id; else the _dfid cookie is used.",
            },
            "consent": {
                **_CONSENT,
                "description": "The visitor's whole consent state; it replaces the one kept "
                "unless that one is newer.",
            },
            "consentedAt": {
                "type": "string",
                "format": "date-time",
                "description": "When the visitor made this choice (RFC 3339, no offset means "
                "UTC; consented_at is also accepted); absent means when the service receives "
                "it. An older state never replaces a newer one (events count by their "
                "timestamp). Without sentAt, more than 5 minutes ahead of the service's "
                "clock is a 400 INVALID_CONSENT; with it, it is put on the gateway's clock "
                "and never lies ahead.",
            },
            "sentAt": _SENT_AT,
        },
    },
    "ConsentKept": {
        "type": "object",
        "required": ["success", "profileAllowed"],
        "additionalProperties": False,
        "properties": {
            "success": {"type": "boolean"},
            "profileAllowed": {
                "type": "boolean",
                "description": "Whether /v1/enrich answers attributes under this consent.",
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["success", "messageId"],
        "additionalProperties": False,
        "properties": {"success": {"type": "boolean"}, "messageId": {"type": "string"}},
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "maxItems": 100, "items": ref("Event")},
            "sentAt": _SENT_AT,
            "accepts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Result codes the sender takes beyond the first release's: "
                "with NOT_SENT, an event the batch deadline left unsent is answered NOT_SENT, "
                "else DEADLINE_EXCEEDED. A code the gateway does not know is ignored.",
            },
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["success", "results"],
        "additionalProperties": False,
        "properties": {
            "success": {"type": "boolean", "description": "Whether every event was delivered."},
            "results": {
                "type": "array",
                "description": "One per event, in the batch's order.",
                "items": {
                    "type": "object",
                    "required": ["messageId", "ok"],
                    "additionalProperties": False,
                    # A failed event says why; a delivered one carries nothing more.
                    "if": {"properties": {"ok": {"const": False}}},
                    "then": {"required": ["error", "code"]},
                    "else": {"properties": {"error": False, "code": False, "field": False}},
                    "properties": {
                        "messageId": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "error": {"type": "string", "description": "What to change."},
                        "code": {**_CODE, "description": _CODE_DESCRIPTION},
                        "field": {
                            "type": "string",
                            "description": "The offending field as the body spelled it "
                            "(batch[3].context.page.url), when the error names one: exactly "
                            "when the event's own /v1/t answer would carry a field.",
                        },
                    },
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
    },
}

"""A context dict with every field set, shared by the blueprint tests."""

from __future__ import annotations

from typing import Any

FULL_CONTEXT: dict[str, Any] = {
    "ip": "203.0.113.7",
    "user_agent": "UA/1.0",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "page": {
        "url": "https://x.test/a?q=1",
        "path": "/a",
        "referrer": "https://r.test/",
        "title": "A",
        "search": "?q=1",
    },
    "campaign": {
        "source": "news",
        "medium": "email",
        "name": "spring",
        "term": "shoes",
        "content": "hero",
    },
    "session": {"id": 1713368230.0, "number": 3.0},
    "geo": {"country": "gb", "region": "ENG", "city": "London", "postal_code": "EC1A"},
    "device": {"type": "Desktop", "os": "macOS", "browser": "Safari"},
    "vendor_ids": {
        "ga_client_id": "GA1",
        "fbp": "FBP",
        "fbc": "FBC",
        "ttp": "TTP",
        "gclid": "GCL",
        "fbclid": "FBCL",
        "ttclid": "TTCL",
        "msclkid": "MS",
    },
}

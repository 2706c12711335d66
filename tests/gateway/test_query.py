"""The enrich route's query parsing gives what ``parse_qsl`` gives, and refuses non-UTF-8."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from amperity_signal.gateway.errors import GatewayError
from amperity_signal.gateway.routes_api import query_pairs

QUERIES = [
    "",
    "&",
    "&&a=1&&",
    "provider=amperity&anonymous_id=anon-3",
    "a",
    "a=",
    "=b",
    "=",
    "a=b=c",
    "a=1&a=2&b",
    "a=%20x&b=1",
    "a+b=c+d",
    "n%C3%A9=%E2%82%AC&x=\xe9",
    "bad=%ZZ&%",
    "a;b=c",
    "\xc3\xa9=\xe2\x82\xac",
]


@pytest.mark.parametrize("query", QUERIES)
def test_query_pairs_equal_parse_qsl_with_blank_values(query: str) -> None:
    """Every query, escaped or not, parses to the same pairs as the standard library."""
    assert query_pairs(query) == parse_qsl(query, keep_blank_values=True)


@pytest.mark.parametrize(
    ("query", "field"),
    [("a=1&anonymous_id=%FF", "anonymous_id"), ("n%E9=1", "n\ufffd"), ("=%FF", None)],
)
def test_escapes_that_are_not_utf8_are_refused_naming_the_parameter(
    query: str, field: str | None
) -> None:
    """Percent-escapes that do not decode as UTF-8 raise a 400 naming the parameter."""
    with pytest.raises(GatewayError) as raised:
        query_pairs(query)
    assert (raised.value.status, raised.value.code) == (400, "INVALID_QUERY_ENCODING")
    assert raised.value.field == field

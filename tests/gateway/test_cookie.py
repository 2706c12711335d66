"""The ``_dfid`` cookie: the first of the request's, each value read as Starlette reads it."""

from __future__ import annotations

import pytest
from starlette.requests import cookie_parser

from amperity_signal.gateway.routes_api import anonymous_id_cookie

# Headers holding at most one _dfid: the reader must find what Starlette's parser finds.
ONE_OR_NONE = [
    "",
    "_dfid=anon-1",
    "theme=dark; _dfid=anon-1; other=2",
    " _dfid = anon-1 ;x=1",
    "\t_dfid\t=\tanon-1\t",
    '_dfid="anon-1"',
    '_dfid="a\\"b\\054c"',
    "_dfid=a=b",
    "_dfid=",
    "_dfid",
    "x_dfid=no; _dfid2=no",
    "a=_dfid=no",
    "=_dfid; b",
    "theme=dark",
    "_dfid=\xe9t\xe9",
]


@pytest.mark.parametrize("header", ONE_OR_NONE)
def test_a_single_dfid_reads_as_starlettes_parser_reads_it(header: str) -> None:
    """Stripped, unquoted and found where ``cookie_parser`` finds it; None when absent."""
    expected = cookie_parser(header).get("_dfid")
    assert anonymous_id_cookie([header.encode("latin-1")]) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([b"_dfid=path; _dfid=root"], "path"),
        ([b"a=1", b"_dfid=first", b"_dfid=second"], "first"),
        ([b"_dfid2=x; _dfid=first; _dfid=second"], "first"),
        ([b"_dfid=; _dfid=second"], ""),
    ],
)
def test_of_several_the_first_dfid_is_taken(headers: list[bytes], expected: str) -> None:
    """In header order, as the browser listed them: most specific first (RFC 6265 5.4)."""
    assert anonymous_id_cookie(headers) == expected

"""Outbound proxies: ``serve`` reaches Amperity through the proxy the environment names.

Real processes: the sandbox, a forward proxy (``forward_proxy.py``, asking for
credentials) and the service, started with ``http_proxy`` / ``no_proxy`` in its
environment as a locked-down network sets them. The sandbox is plain http, so the http
proxy is the one exercised; the proxy's password must never reach a log line or an error.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import grpc
import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack, free_port
from tests.support import integration_dict, message_id, mint_keys

pytestmark = pytest.mark.e2e

USER = "signal"
PASSWORD = "pr0xy-s3cret-7f3a9c"  # a canary: never in a log or an error
CREDENTIALS = f"{USER}:{PASSWORD}"
ENCODED = base64.b64encode(CREDENTIALS.encode()).decode()


def proxy_env(**variables: str) -> dict[str, str]:
    """The process environment's proxy variables: exactly these (``http=``, ``no=``...).

    Both spellings are set, since a lower-case variable wins over its upper-case twin, and
    any other ``*_proxy`` variable of this machine is blanked.
    """
    env = {name: "" for name in os.environ if name.lower().endswith("_proxy")}
    for scheme in ("http", "https", "all", "no"):
        value = variables.get(scheme, "")
        env[f"{scheme}_proxy"] = env[f"{scheme.upper()}_PROXY"] = value
    return env


def with_credentials(url: str, credentials: str = CREDENTIALS) -> str:
    """``url`` (http://host:port) with user information."""
    return url.replace("http://", f"http://{credentials}@", 1)


def ingest_only(sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    """Integration ``web`` without enrichment: only event POSTs leave the service."""
    return integration_dict(sandbox.url, mint_keys(), enrichment=False, **overrides)


async def deliver(service: Service, **fields: Any) -> pb.DeliverResponse:
    """Deliver one track event through integration ``web``."""
    sent = pb.Event(message_id=message_id(), type="track", event="Product Added", **fields)
    response: pb.DeliverResponse = await service.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=sent), timeout=30
    )
    return response


def assert_no_credentials(text: str) -> None:
    """Neither the password nor the encoded credentials appear in ``text``."""
    assert PASSWORD not in text
    assert ENCODED not in text


async def test_deliver_goes_through_the_http_proxy_with_its_credentials(stack: Stack) -> None:
    """http_proxy with user:password: the POST (and lookups) go through it, authorised."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    service = await stack.service(
        sandbox, env=proxy_env(http=with_credentials(proxy.url)), debug=True
    )

    response = await deliver(service, anonymous_id="anon_proxy", user_id="cust-1001")

    assert response.vendor_request.status_code == 202
    seen = await proxy.requests()
    posts = [r for r in seen if "/prof/events/" in r["url"]]
    assert [(r["method"], r["status"], r["authorized"]) for r in posts] == [("POST", 202, True)]
    assert posts[0]["url"].startswith(sandbox.url)
    assert any("/prof/lookup/" in r["url"] for r in seen), "enrichment goes through it too"
    assert all(r["authorized"] for r in seen)
    received = [e["body"].get("message_id") for e in await sandbox.events()]
    assert response.message_id in received
    logs = stack.logs()
    hostport = proxy.url.removeprefix("http://")
    assert f"through the proxy http://[REDACTED]@{hostport} (http_proxy)" in logs
    assert_no_credentials(logs)


async def test_no_proxy_sends_a_matching_host_directly(stack: Stack) -> None:
    """no_proxy=127.0.0.1: the sandbox on 127.0.0.1 is reached directly, the proxy sees nothing."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    service = await stack.service(
        sandbox, env=proxy_env(http=with_credentials(proxy.url), no="localhost,127.0.0.1")
    )

    response = await deliver(service, anonymous_id="anon_direct")

    assert response.vendor_request.status_code == 202
    assert await proxy.requests() == []
    assert f"reaches {sandbox.url} directly (NO_PROXY)" in stack.logs()


async def test_a_no_proxy_cidr_range_sends_an_ip_in_it_directly(stack: Stack) -> None:
    """no_proxy=127.0.0.0/8 (a range, as curl reads it): the sandbox is reached directly."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    service = await stack.service(
        sandbox, env=proxy_env(http=with_credentials(proxy.url), no="10.0.0.0/8,127.0.0.0/8")
    )

    response = await deliver(service, anonymous_id="anon_cidr")

    assert response.vendor_request.status_code == 202
    assert await proxy.requests() == []
    assert f"reaches {sandbox.url} directly (NO_PROXY)" in stack.logs()
    received = [e["body"].get("message_id") for e in await sandbox.events()]
    assert response.message_id in received


async def test_refused_proxy_credentials_name_the_fix_and_never_the_password(
    stack: Stack,
) -> None:
    """A 407 from the proxy: FAILED_PRECONDITION PROXY_AUTH_REQUIRED, no password anywhere."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    wrong = f"{USER}:{PASSWORD}-but-wrong"
    service = await stack.service(
        sandbox,
        ingest_only(sandbox),
        env=proxy_env(http=with_credentials(proxy.url, wrong)),
        debug=True,
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(service, anonymous_id="anon_refused")

    error = refused.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "407 (Proxy Authentication Required)" in (error.details() or "")
    assert "http://user:password@host:port" in (error.details() or "")
    assert [(r["status"], r["authorized"]) for r in await proxy.requests()] == [(407, False)]
    assert_no_credentials(str(error.trailing_metadata()) + (error.details() or ""))
    assert_no_credentials(stack.logs())


async def test_an_unreachable_proxy_is_named_without_its_password(stack: Stack) -> None:
    """Nothing listens at the proxy's address: UNAVAILABLE naming the proxy, redacted."""
    sandbox = await stack.sandbox()
    port = free_port()
    service = await stack.service(
        sandbox,
        ingest_only(sandbox, max_retries=0),
        env=proxy_env(http=with_credentials(f"http://127.0.0.1:{port}")),
        debug=True,
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(service, anonymous_id="anon_unreachable")

    error = refused.value
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"cannot connect to the proxy http://[REDACTED]@127.0.0.1:{port} (http_proxy)" in (
        details
    )
    assert_no_credentials(str(error.trailing_metadata()) + details)
    assert_no_credentials(stack.logs())

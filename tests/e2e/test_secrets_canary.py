"""Secrets canary: freshly minted, unique keys never surface anywhere a person could see.

The stack mints unique Amperity keys (and here a unique admin token) for the service. An
end-to-end flow exercises every RPC, the error paths (invalid events, a 401 and a 403
from Amperity, unknown integrations) and every gateway route; then each log line, gRPC
response (``str`` of the whole message), live-event record, gateway body and header,
exception message and repr is scanned for any of the secrets, whole or by JWT segment.
The listeners' TLS private keys get the same scan, by line of their PEM bodies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import signal
import ssl
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
import tomli_w
import yaml

from amperity_signal.amperity.client import AmperityClient
from amperity_signal.amperity.ratelimit import MemoryRateLimiter
from amperity_signal.config import load_settings, settings_from_dict
from amperity_signal.errors import AmperitySignalError
from amperity_signal.gateway import GatewaySettings
from amperity_signal.metrics import Metrics
from amperity_signal.sandbox import SandboxApp, create_app
from amperity_signal.sandbox.data import DEFAULT_DATA_PATH
from amperity_signal_client import AmperitySignalError as ClientError
from amperity_signal_client import AsyncAmperityClient, from_delivery_error
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import CLI, Service, Stack
from tests.e2e.test_tls import credentials, deliver, refused, server_table
from tests.support import (
    ALICE_EMAIL,
    ALICE_PROFILE,
    Keys,
    integration_dict,
    mint_keys,
    reveals_encoded,
)
from tests.tls_files import TlsFiles, write_tls_files

pytestmark = pytest.mark.e2e


def needles(secrets: Iterable[str]) -> list[str]:
    """Each secret, plus its JWT payload and signature segments (a leak may be partial).

    The JWT header segment is shared by every HS256 token, so it is no secret.
    """
    found: list[str] = []
    for secret in secrets:
        found.append(secret)
        found.extend(part for part in secret.split(".")[1:] if len(part) >= 16)
    return found


def hits(text: str, secrets: list[str]) -> list[str]:
    """Which needles occur in ``text`` (shortened, so the report does not leak them)."""
    return [f"{s[:6]}…({len(s)})" for s in secrets if s in text]


def event(anonymous_id: str, **fields: Any) -> pb.Event:
    """A track event with a unique message id."""
    properties = fields.pop("properties", None)
    traits = fields.pop("traits", None)
    message = pb.Event(
        message_id=f"canary-{uuid.uuid4()}",
        type=fields.pop("type", "track"),
        event=fields.pop("event", "Product Viewed"),
        anonymous_id=anonymous_id,
        **fields,
    )
    if properties:
        message.properties.update(properties)
    if traits:
        message.traits.update(traits)
    return message


async def rpc_texts(target: str) -> AsyncIterator[str]:
    """Everything the gRPC API shows a caller, as text: responses, errors, live records."""
    async with AsyncAmperityClient(target, integration_id="web") as client:
        yield str(await client.deliver(event("anon_alice_01")))
        yield str(await client.enrich(event("anon_canary", traits={"email": "alice@example.com"})))
        yield str(await client.browser_profile("anon_alice_01"))
        async for answer in client.deliver_many([event("anon_bob_02") for _ in range(5)]):
            yield str(answer)
        async for record in client.watch_deliveries(replay=20):
            yield str(record)
            if record.integration_id == "web":
                break
        try:
            await client.deliver(event(""))
        except ClientError as error:
            yield f"{error} {error!r} {error.metadata} {error.field_violations}"
    for integration_id in ("expired", "wrong-scope", "nope"):
        async with AsyncAmperityClient(target, integration_id=integration_id) as client:
            try:
                await client.deliver(event("anon_canary"))
            except ClientError as error:
                yield f"{integration_id}: {error} {error!r} {error.metadata} {error.reason}"
            else:
                raise AssertionError(f"{integration_id} delivered")
            async for answer in client.deliver_many([event("anon_canary")]):
                assert answer.HasField("error"), integration_id
                yield str(answer)
                yield repr(from_delivery_error(answer.error))
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            unknown: Any = channel.unary_unary("/datafly.amperity.v1.AmperityService/Nope")
            await unknown(b"")
        except grpc.aio.AioRpcError as error:
            yield str(error)


async def gateway_texts(
    base_url: str,
    admin_token: str,
    verify: ssl.SSLContext | bool = True,
    pipeline_key: str = "pk_web",
) -> AsyncIterator[str]:
    """Bodies and headers of every gateway route, including errors and the operator page."""
    requests: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            f"/v1/t?pipeline_key={pipeline_key}",
            {"json": {"event": "x", "anonymousId": "b"}},
        ),
        ("GET", f"/v1/enrich?provider=amperity&pipeline_key={pipeline_key}x", {"headers": {}}),
        ("GET", "/v1/enrich?provider=amperity&anonymous_id=anon_alice_01", {}),
        ("GET", "/v1/enrich?provider=amperity", {"cookies": {"_dfid": "anon_alice_01"}}),
        ("GET", "/v1/enrich?provider=amperity&email=alice%40example.com", {}),
        ("POST", "/v1/t", {"json": {"event": "Product Viewed", "anonymousId": "anon_gw"}}),
        ("POST", "/v1/p", {"json": {"name": "Home", "anonymousId": "anon_gw"}}),
        ("POST", "/v1/i", {"json": {"userId": "u-1", "anonymousId": "anon_gw"}}),
        ("POST", "/v1/batch", {"json": {"batch": [{"event": "x", "anonymousId": "a"}, 5]}}),
        ("POST", "/v1/t", {"content": b"{not json"}),
        ("GET", "/metrics", {}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/demo/", {}),
        ("GET", "/nope", {}),
        ("GET", "/live", {}),
        ("GET", "/live", {"headers": {"Authorization": "Bearer wrong"}}),
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=10, verify=verify) as gateway:
        for method, url, options in requests:
            cookies = options.pop("cookies", None)
            if cookies:
                gateway.cookies.update(cookies)
            headers = {"X-Pipeline-Key": pipeline_key, **options.pop("headers", {})}
            response = await gateway.request(method, url, headers=headers, **options)
            asked = f"{method} {url.replace(pipeline_key, '<key>')}"  # the question, not answer
            yield f"{asked} {response.status_code} {dict(response.headers)} {response.text}"
            gateway.cookies.clear()
        # The operator's own page, with the token: the answer must not echo it.
        response = await gateway.get("/live", headers={"Authorization": f"Bearer {admin_token}"})
        yield f"/live {response.status_code} {dict(response.headers)} {response.text}"


async def test_no_canary_token_appears_in_logs_responses_records_or_gateway_answers(
    stack: Stack,
) -> None:
    """A full flow over fresh keys: zero occurrences of any key in anything observable."""
    sandbox = await stack.sandbox()
    keys = mint_keys()
    expired = mint_keys(ttl=-60)
    other = mint_keys(ttl=7_200)  # another expiry: another token, whatever the second
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    pipeline_key = f"pk_canary_{uuid.uuid4().hex}"
    tables = [
        integration_dict(sandbox.url, keys, pipeline_key=pipeline_key),
        integration_dict(sandbox.url, expired, integration_id="expired"),
        # The profile key where the ingest key belongs: Amperity answers 403.
        integration_dict(
            sandbox.url,
            Keys(ingest=other.profile, profile=keys.profile),
            integration_id="wrong-scope",
        ),
    ]
    service = await stack.service(sandbox, *tables, keys=keys, server={"admin_token": admin_token})
    secrets = needles(
        [keys.ingest, keys.profile, expired.ingest, expired.profile, other.profile, admin_token]
    )
    secrets.append(pipeline_key)

    observed: dict[str, list[str]] = {"grpc": [], "gateway": []}
    async for text in rpc_texts(service.grpc_target):
        observed["grpc"].append(text)
    async for text in gateway_texts(service.http_url, admin_token, pipeline_key=pipeline_key):
        observed["gateway"].append(text)
    observed["logs"] = stack.logs().splitlines()
    found = {
        where: [h for text in texts for h in hits(text, secrets)]
        for where, texts in observed.items()
    }
    print(json.dumps({"canary_hits": found, "scanned": {k: len(v) for k, v in observed.items()}}))

    assert found == {"grpc": [], "gateway": [], "logs": []}
    joined = "\n".join(observed["grpc"])
    assert "INGEST_KEY_REJECTED" in joined  # the 401 and 403 paths really ran
    assert len(observed["logs"]) > 5  # the scan had something to read


async def test_a_profile_quoting_the_admin_token_and_a_pipeline_key_reaches_no_answer(
    stack: Stack, tmp_path: Path
) -> None:
    """A sandbox profile holding the admin token and a pipeline key: no answer shows either.

    The profile was scrubbed only of the keys sent to Amperity: the Enrich answer and the
    page's /v1/enrich body quoted the admin token and the pipeline key it held.
    """
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    pipeline_key = f"pk_canary_{uuid.uuid4().hex}"
    data = yaml.safe_load(DEFAULT_DATA_PATH.read_text(encoding="utf-8"))
    [alice] = [
        p
        for p in data["tenants"][0]["collections"][0]["profiles"]
        if p["profile_id"] == ALICE_PROFILE
    ]
    # Persona and LifetimeTier are on the browser allowlist (integration_dict).
    alice["attributes"]["Persona"] = f"fed from an event: token {admin_token}"
    alice["attributes"]["LifetimeTier"] = pipeline_key
    data_file = tmp_path / "quoting.yaml"
    data_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    sandbox = await stack.sandbox("--data", str(data_file))
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, pipeline_key=pipeline_key)
    service = await stack.service(sandbox, table, keys=keys, server={"admin_token": admin_token})
    secrets = [admin_token, pipeline_key]

    observed: list[str] = []
    alice_event = event("anon_alice_01", traits={"email": ALICE_EMAIL})
    enriched = await service.stub.Enrich(
        pb.EnrichRequest(integration_id="web", event=alice_event), timeout=15
    )
    observed.append(str(enriched))
    watch = service.stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await watch.initial_metadata()  # subscribed: the delivery below is not missed
    delivered = await service.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=event("anon_alice_01")), timeout=15
    )
    observed.append(str(delivered))
    observed.append(str(await asyncio.wait_for(watch.read(), 15)))
    watch.cancel()
    async with httpx.AsyncClient(base_url=service.http_url, timeout=15) as gateway:
        answer = await gateway.get(
            "/v1/enrich?provider=amperity&anonymous_id=anon_alice_01",
            headers={"X-Pipeline-Key": pipeline_key},
        )
    observed.append(answer.text)

    assert enriched.amperity_id == ALICE_PROFILE  # the quoting profile was the one served
    assert answer.json()["attributes"] == {
        "Persona": "fed from an event: token [REDACTED]",
        "LifetimeTier": "[REDACTED]",
    }
    assert [h for text in observed for h in hits(text, secrets)] == []
    assert all(not reveals_encoded(text, s) for text in observed for s in secrets)


async def test_no_canary_token_appears_in_config_reprs_client_reprs_or_auth_errors() -> None:
    """Settings, GatewaySettings, AmperityClient and the 401/403 errors never show a key.

    Nor a pipeline key (repr(Settings) and repr(GatewaySettings) quoted it), nor a proxy's
    password.
    """
    keys, expired = mint_keys(), mint_keys(ttl=-60)
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    pipeline_key = f"pk_canary_{uuid.uuid4().hex}"
    proxy_password = f"canary-proxy-{uuid.uuid4().hex}"
    secrets = needles(
        [keys.ingest, keys.profile, expired.ingest, admin_token, pipeline_key, proxy_password]
    )
    sandbox = create_app(profile_delay=0.0, seed=3)
    assert isinstance(sandbox, SandboxApp)
    base = "http://sandbox.test"
    settings = settings_from_dict(
        {
            "server": {"admin_token": admin_token},
            "integrations": [
                integration_dict(base, keys, pipeline_key=pipeline_key),
                integration_dict(base, expired, integration_id="expired"),
                integration_dict(
                    base, Keys(ingest=keys.profile, profile=keys.ingest), integration_id="swapped"
                ),
            ],
        },
        {"HTTPS_PROXY": f"http://agent:{proxy_password}@proxy.test:3128"},
    )
    texts = [
        repr(settings),
        str(settings),
        repr(GatewaySettings.from_settings(settings)),
        str(settings.model_dump()),
        settings.model_dump_json(),
        repr(settings.proxies),
        settings.proxies.describe(),
    ]
    for integration in settings.integrations:
        texts += [repr(integration), str(integration)]
        client = AmperityClient(
            integration,
            limiter=MemoryRateLimiter(),
            metrics=Metrics(),
            transport=httpx.ASGITransport(app=sandbox),
        )
        texts.append(repr(client))
        try:
            await client.post_event({"source": "DATAFLY", "cookieid": "a"}, deadline=None)
            await client.lookup("device_cookie", "anon_alice_01", deadline=None)
        except AmperitySignalError as error:
            texts += [str(error), repr(error), repr(error.args), str(error.metadata)]
            texts += [repr(getattr(error, "call", None)), repr(error.__dict__)]
        else:
            assert integration.id == "web", f"{integration.id} was not refused"
        finally:
            await client.aclose()
    leaked = [h for text in texts for h in hits(text, secrets)]
    assert leaked == []
    assert any("INGEST_KEY_REJECTED" in t for t in texts)


FAULTS: list[dict[str, Any]] = [
    {"status": 503, "count": 2},
    {"status": 500, "kind": "events", "count": 2},
    {"burst_429": 2},
    {"drop_rate": 1.0, "count": 2},
    {"latency_ms": 1500, "count": 1},
    {"status": 401, "count": 2},
    {"status": 403, "count": 2},
    {"status": 404, "kind": "events", "count": 1},
]


async def fault_texts(stub: Any, sandbox: Any) -> AsyncIterator[str]:
    """Deliver and Enrich under each injected Amperity fault: answers and errors as text."""
    for fault in FAULTS:
        await sandbox.fault(**fault)
        for method, request in (
            ("Deliver", pb.DeliverRequest(integration_id="web", event=event("anon_f"))),
            ("Enrich", pb.EnrichRequest(integration_id="web", event=event("anon_alice_01"))),
        ):
            try:
                yield f"{fault} {await getattr(stub, method)(request, timeout=1.0)}"
            except grpc.aio.AioRpcError as error:
                yield f"{fault} {error} {error.trailing_metadata()} {error.debug_error_string()}"
        await sandbox.clear_faults()


async def test_no_canary_secret_appears_at_debug_level_through_faults_and_a_redis_outage(
    stack: Stack,
) -> None:
    """At DEBUG, through Amperity faults and Redis going down: no secret in anything seen.

    The Redis password needs JSON escaping and URL encoding, so both written forms are
    looked for; the sandbox's inspector and /metrics are scanned too.
    """
    sandbox = await stack.sandbox()
    keys = mint_keys()
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    password = f'canary"pass\\word-{uuid.uuid4().hex[:12]}'
    redis_url = await stack.redis(password=password)
    redis = stack.processes[-1]
    authenticated = redis_url.replace("redis://", f"redis://:{quote(password, safe='')}@")
    service = await stack.service(
        sandbox,
        keys=keys,
        server={"admin_token": admin_token},
        cache={"backend": "redis", "redis_url": authenticated},
        debug=True,
    )
    secrets = needles([keys.ingest, keys.profile, admin_token, password])
    secrets.append(quote(password, safe=""))

    observed: dict[str, list[str]] = {"grpc": [], "gateway": [], "inspector": []}
    async for text in fault_texts(service.stub, sandbox):
        observed["grpc"].append(text)
    await redis.stop(signal.SIGKILL)
    async for text in fault_texts(service.stub, sandbox):
        observed["grpc"].append(text)
    async with httpx.AsyncClient(base_url=service.http_url, timeout=10) as gateway:
        for path in ("/metrics", "/readyz", "/v1/enrich?provider=amperity&anonymous_id=a"):
            answer = await gateway.get(path, headers={"X-Pipeline-Key": "pk_web"})
            observed["gateway"].append(f"{path} {dict(answer.headers)} {answer.text}")
    for path in ("/_sandbox/requests", "/_sandbox/events", "/_sandbox/stats"):
        observed["inspector"].append((await sandbox.inspector.get(path)).text)
    await service.process.stop()
    observed["logs"] = stack.logs().splitlines()
    found = {
        where: [h for text in texts for h in hits(text, secrets)]
        for where, texts in observed.items()
    }

    assert found == {"grpc": [], "gateway": [], "inspector": [], "logs": []}
    logs = "\n".join(observed["logs"])
    assert '"level": "debug"' in logs  # the scan read the most verbose logging
    assert "Redis cannot be reached" in logs  # the outage path ran
    joined = "\n".join(observed["grpc"])
    assert "INGEST_KEY_REJECTED" in joined and "UNAVAILABLE" in joined


def pem_bodies(*keys: Path) -> list[str]:
    """Each key file's base64 lines, and its whole body on one line (a leak may be either)."""
    found: list[str] = []
    for key in keys:
        lines = [line for line in key.read_text().splitlines() if not line.startswith("-----")]
        found += [line for line in lines if len(line) >= 16]
        found.append("".join(lines))
    return found


async def check_config(path: Path) -> str:
    """What ``check-config --config path`` prints, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "check-config",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


async def test_no_tls_key_material_appears_in_logs_answers_check_config_or_reprs(
    stack: Stack, tmp_path: Path
) -> None:
    """No line of a private key's PEM body anywhere, through mutual TLS at debug level.

    Refused callers, both gateways, check-config on an open, a mismatched and a damaged
    key file, and the settings' reprs are all scanned.
    """
    tls: TlsFiles = write_tls_files(tmp_path)
    sandbox = await stack.sandbox()
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    # A copy of the key other users can read: serve and check-config warn about it.
    open_key = tmp_path / "open.key"
    shutil.copy(tls.server_key, open_key)
    open_key.chmod(0o644)
    server = {**server_table(tls, mutual=True), "tls_key_file": str(open_key)}
    server["admin_token"] = admin_token
    gateway_table = {
        "service_ca_file": str(tls.ca),
        "service_cert_file": str(tls.client_cert),
        "service_key_file": str(tls.client_key),
    }
    service = await stack.service(sandbox, server=server, gateway=gateway_table, debug=True)
    secrets = [*pem_bodies(tls.server_key, tls.client_key, tls.other_key), admin_token]
    verified = ssl.create_default_context(cafile=str(tls.ca))

    observed: dict[str, list[str]] = {"grpc": [], "gateway": [], "check-config": []}
    target = service.grpc_target
    observed["grpc"].append(str(await deliver(target, credentials(tls, client_cert=True))))
    for creds in (None, credentials(tls)):
        observed["grpc"].append(str(await refused(target, creds)))
    async for text in gateway_texts(service.http_url, admin_token, verified):
        observed["gateway"].append(text)
    standalone = await stack.gateway(service)
    async for text in gateway_texts(
        standalone.output_value("gateway listening on "), admin_token, verified
    ):
        observed["gateway"].append(text)
    # A key of another certificate, and one cut short: check-config names each file.
    damaged = tmp_path / "damaged.key"
    damaged.write_text(tls.server_key.read_text()[:150] + "\n-----END EC PRIVATE KEY-----\n")
    checked_paths = []
    for key in (open_key, tls.other_key, damaged):
        table = {**tomllib.loads(service.config.read_text())}
        table["server"] = {**table["server"], "tls_key_file": str(key)}
        path = tmp_path / f"check-{key.stem}.toml"
        path.write_text(tomli_w.dumps(table))
        checked_paths.append(path)
    observed["check-config"] += await asyncio.gather(*(check_config(p) for p in checked_paths))
    settings = load_settings(service.config)
    observed["reprs"] = [
        repr(settings),
        repr(settings.server.tls),
        repr(GatewaySettings.from_settings(settings)),
        settings.model_dump_json(),
    ]
    await service.process.stop()
    await standalone.stop()
    observed["logs"] = stack.logs().splitlines()
    found = {
        where: [h for text in texts for h in hits(text, secrets)]
        for where, texts in observed.items()
    }

    assert found == {k: [] for k in observed}
    checked = "\n".join(observed["check-config"])
    assert "open to other users" in checked and "KEY_VALUES_MISMATCH" in checked
    assert "damaged or truncated" in checked  # the broken-key paths really ran
    assert '"level": "debug"' in "\n".join(observed["logs"])


async def canned_server(
    answers: list[tuple[int, bytes, str]], heads: list[bytes]
) -> asyncio.Server:
    """A fake upstream (or proxy) on 127.0.0.1 giving ``answers`` in turn.

    ``heads`` gets each request's head, as received.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)
        status, body, extra = answers[(len(heads) - 1) % len(answers)]
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def refusals(stack: Stack, service: Service, server: asyncio.Server, count: int) -> list[str]:
    """``count`` Deliver calls the upstream refuses: each error and trailers, then the logs."""
    texts = []
    async with server:
        for _ in range(count):
            request = pb.DeliverRequest(integration_id="web", event=event("anon_echo"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await service.stub.Deliver(request, timeout=10)
            texts.append(f"{caught.value.details()} {caught.value.trailing_metadata()}")
        await service.process.stop()
    return texts + stack.logs().splitlines()


def echoes(token: str) -> list[tuple[int, bytes, str]]:
    """Answers that echo part of ``token``: one segment, a cut head, the tail, a redirect."""
    _, payload, signature = token.split(".")
    bodies: list[tuple[int, dict[str, str], str]] = [
        (401, {"message": f"bad token payload {payload}", "request_id": signature}, ""),
        (403, {"message": f"token {token[:120]}... rejected", "trace_id": token[-12:]}, ""),
        (302, {}, f"Location: https://other.example/{payload}?sig={signature}\r\n"),
        (400, {"message": f"stream not found for Bearer%20{token[:200]}"}, ""),
    ]
    return [(status, json.dumps(body).encode(), extra) for status, body, extra in bodies]


async def test_no_part_of_a_key_echoed_by_a_hostile_upstream_reaches_answers_or_logs(
    stack: Stack,
) -> None:
    """An upstream echoing a segment, a cut head or the tail of the key: none of it is seen.

    The answers of a fake Amperity quote back part of the Authorization they received; the
    gRPC errors, their trailers and every log line at DEBUG are scanned for any 12
    characters of the key's payload or signature.
    """
    keys = mint_keys()
    answers = echoes(keys.ingest)
    heads: list[bytes] = []
    server = await canned_server(answers, heads)
    port = server.sockets[0].getsockname()[1]
    sandbox = await stack.sandbox()
    table = integration_dict(f"http://127.0.0.1:{port}", keys, max_retries=0)
    service = await stack.service(sandbox, table, keys=keys, debug=True)
    texts = await refusals(stack, service, server, len(answers))
    private = keys.ingest.split(".")[1:]
    pieces = {part[i : i + 12] for part in private for i in range(len(part) - 11)}
    leaked = [hits(text, sorted(pieces)) for text in texts]
    assert [h for h in leaked if h] == []
    assert len(heads) >= len(answers)  # every echo was sent back at least once
    assert "redirecting to" in "\n".join(texts)


async def test_no_canary_key_appears_in_check_config_over_misplaced_keys(tmp_path: Path) -> None:
    """A pipeline key or admin token pasted into another field: check-config never quotes it.

    Each problem names its field; neither canary, as written or base64-encoded, is printed.
    """
    pipeline_key = f"pk_canary_{uuid.uuid4().hex}"
    admin_token = f"canary-admin-{uuid.uuid4().hex}"
    table = integration_dict("http://sandbox.test", mint_keys(), pipeline_key=pipeline_key)
    misplaced: dict[str, dict[str, Any]] = {
        "integrations[0].tenant_id": {"tenant_id": pipeline_key},
        "integrations[0].tenant_subdomain": {"tenant_subdomain": pipeline_key},
        "integrations[0].id": {"id": admin_token},
        "integrations[0].event_stream_id": {"event_stream_id": f" {pipeline_key}"},
        "integrations[0].api_base_url": {"api_base_url": pipeline_key},
        "integrations[0].allowed_origins[0]": {"allowed_origins": [f"{pipeline_key}.example"]},
        "gateway.trusted_proxies": {},
        "server.grpc_address": {},
    }
    paths = []
    for index, (location, change) in enumerate(misplaced.items()):
        config: dict[str, Any] = {
            "server": {"admin_token": admin_token},
            "integrations": [{**table, **change}],
        }
        if location == "gateway.trusted_proxies":
            config["gateway"] = {"trusted_proxies": [pipeline_key]}
        if location == "server.grpc_address":
            config["server"]["grpc_address"] = admin_token
        path = tmp_path / f"misplaced-{index}.toml"
        path.write_text(tomli_w.dumps(config))
        paths.append(path)
    # The check-config processes are independent: run together, they use every core.
    outputs = await asyncio.gather(*(check_config(path) for path in paths))
    for location, output in zip(misplaced, outputs, strict=True):
        assert f"  - {location}: " in output, output
    printed = "\n".join(outputs)
    for secret in (pipeline_key, admin_token):
        assert secret not in printed and not reveals_encoded(printed, secret)


def base64_answers(token: str, password: str) -> list[tuple[int, bytes, str]]:
    """Answers quoting the request's credentials base64-encoded, as a proxy's page may."""
    basic = base64.b64encode(f"api:{token}".encode()).decode()
    header = base64.urlsafe_b64encode(f"Authorization: Bearer {token}".encode()).decode()
    proxy = base64.b64encode(f"agent:{password}".encode()).decode()
    bodies: list[tuple[int, dict[str, str], str]] = [
        (401, {"message": f"Basic {basic} refused", "request_id": header}, ""),
        (403, {"message": f"Proxy-Authorization: Basic {proxy}", "trace_id": proxy}, ""),
        (400, {"message": f"headers {header.rstrip('=')} / {proxy}"}, ""),
        (302, {}, f"Location: http://amperity.test/{basic}/v0/events\r\n"),
    ]
    return [(status, json.dumps(body).encode(), extra) for status, body, extra in bodies]


async def test_no_credential_echoed_base64_through_a_proxy_reaches_answers_or_logs(
    stack: Stack,
) -> None:
    """Through an authenticating proxy that echoes credentials base64-encoded: none is seen.

    The service sends through ``HTTP_PROXY`` (user and password); the proxy answers each
    request quoting back the key and the Proxy-Authorization it got, base64-encoded. The
    gRPC errors, their trailers and every log line at DEBUG are scanned.
    """
    keys = mint_keys()
    password = f"canary-proxy-{uuid.uuid4().hex}"
    answers = base64_answers(keys.ingest, password)
    proxied: list[bytes] = []
    server = await canned_server(answers, proxied)
    port = server.sockets[0].getsockname()[1]
    sandbox = await stack.sandbox()
    table = integration_dict("http://amperity.test", keys, max_retries=0)
    env = {"HTTP_PROXY": f"http://agent:{password}@127.0.0.1:{port}", "NO_PROXY": ""}
    service = await stack.service(sandbox, table, keys=keys, debug=True, env=env)
    texts = await refusals(stack, service, server, len(answers))
    blob = "\n".join(texts)
    assert len(proxied) >= len(answers)
    assert all(b"Proxy-Authorization: Basic " in head for head in proxied)  # it went through
    assert "[REDACTED]" in blob
    for secret in (keys.ingest, password):
        assert secret not in blob and not reveals_encoded(blob, secret)

"""``amperity-signal gateway`` as its own process: what it writes to stdout and stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from amperity_signal.processes import Process, start_process
from tests.support import integration_dict, mint_keys

from .fakes import RunningService

ADMIN_TOKEN = "admin-standalone-9d41c7e2"


async def start_gateway(service: RunningService, tmp_path: Path) -> tuple[Process, Path]:
    """``amperity-signal gateway`` in front of the fake service; its stderr log's path."""
    keys = mint_keys()
    config = tmp_path / "amperity-signal.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "server": {"http_address": "127.0.0.1:0", "admin_token": ADMIN_TOKEN},
                "integrations": [integration_dict("http://127.0.0.1:9", keys)],
            }
        ),
        encoding="utf-8",
    )
    stderr_log = tmp_path / "gateway.log"
    command = [sys.executable, "-m", "amperity_signal.cli", "gateway", "--config", str(config)]
    command += ["--grpc-target", service.target]
    return await start_process(command, ready="gateway listening on ", log=stderr_log), stderr_log


async def test_the_admin_token_in_a_live_login_never_reaches_the_logs(
    service: RunningService, tmp_path: Path
) -> None:
    """/live?token= is not access-logged; stderr is the service's JSON lines, nothing else.

    And SIGTERM stops the gateway cleanly: exit 0, as ``serve`` exits.
    """
    gateway, stderr_log = await start_gateway(service, tmp_path)
    try:
        url = gateway.output_value("gateway listening on ")
        async with httpx.AsyncClient(base_url=url) as client:
            login = await client.get(f"/live?token={ADMIN_TOKEN}&integration=web")
    finally:
        exit_code = await gateway.stop()
    assert login.status_code == 303
    assert exit_code == 0, "SIGTERM is the normal way to stop the gateway: exit 0"

    stdout = "\n".join(gateway.lines)
    stderr = stderr_log.read_text(encoding="utf-8")
    assert ADMIN_TOKEN not in stdout
    assert ADMIN_TOKEN not in stderr
    assert gateway.lines == [gateway.ready_line]
    lines = stderr.splitlines()
    assert lines, "the gateway logged nothing at all"
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        # uvicorn attaches a terminal-coloured copy of its messages; JSON logs carry none.
        assert "color_message" not in record, line
        assert "\x1b" not in line and "\\u001b" not in line, line
    assert not any("/live" in line for line in lines)


async def test_a_standalone_gateway_exports_only_its_own_metrics(
    service: RunningService, tmp_path: Path
) -> None:
    """/metrics lists the gateway's own families alone: no empty family of the service's.

    Until session 26 it served every family's HELP and TYPE (deliveries, caches, RPCs)
    without a sample, which reads as a service that did nothing.
    """
    gateway, _ = await start_gateway(service, tmp_path)
    try:
        url = gateway.output_value("gateway listening on ")
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200
            page = (await client.get("/metrics")).text
    finally:
        assert await gateway.stop() == 0
    families = {family.name for family in text_string_to_metric_families(page)}
    assert families == {
        "amperity_signal_gateway_seconds",
        "amperity_signal_gateway_connections_refused",
    }
    assert {line.split()[2] for line in page.splitlines() if line.startswith("# ")} == {
        "amperity_signal_gateway_seconds",
        "amperity_signal_gateway_connections_refused_total",
    }

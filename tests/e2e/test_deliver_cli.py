"""The Deliver commands of the CLI, run as processes: send-test-event and blueprint show/test.

``send-test-event`` is the spec's "Verify it's working": against the sandbox process it
prints the vendor request with 202, and for a broken configuration the troubleshooting
advice, with exit code 1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.e2e.stack import CLI, Stack
from tests.support import DROP_STREAM, STREAM, integration_dict, mint_keys

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "server/amperity_signal/blueprints/samples"


async def run_cli(*args: str) -> tuple[int, str]:
    """Run ``amperity-signal ARGS``; its exit code and stdout + stderr."""
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode if process.returncode is not None else -1, output.decode()


def write_config(path: Path, base_url: str, **overrides: Any) -> Path:
    """A configuration with one retail integration pointed at ``base_url``."""
    table = integration_dict(base_url, mint_keys(), **overrides)
    path.write_text(tomli_w.dumps({"integrations": [table]}))
    return path


async def test_send_test_event_posts_to_the_sandbox_and_prints_the_202(
    stack: Stack, tmp_path: Path
) -> None:
    """send-test-event exits 0, prints POST .../prof/events/{esm-id} -> 202; the event lands."""
    sandbox = await stack.sandbox()
    config = write_config(tmp_path / "signal.toml", sandbox.url)
    code, output = await run_cli("send-test-event", "--config", str(config))
    assert code == 0, output
    assert f"POST {sandbox.url}/prof/events/{STREAM} -> 202" in output
    assert '"source": "DATAFLY"' in output
    (received,) = await sandbox.events()
    assert received["body"]["type"] == "signal_test_event"
    assert received["routed_to"] == "DataflyEvent"


async def test_send_test_event_to_a_dropping_stream_says_the_event_will_not_appear(
    stack: Stack, tmp_path: Path
) -> None:
    """A 204 is accepted (exit 0) but never says the event appears: the stream drops it."""
    sandbox = await stack.sandbox()
    config = write_config(tmp_path / "signal.toml", sandbox.url, event_stream_id=DROP_STREAM)
    code, output = await run_cli("send-test-event", "--config", str(config))
    assert code == 0, output
    assert f"POST {sandbox.url}/prof/events/{DROP_STREAM} -> 204" in output
    assert "will not appear in the stream's event inspector" in output
    assert "Set the stream's mode to active in Amperity (Sources > Streams)" in output
    assert "the event appears within" not in output


async def test_send_test_event_gives_the_routing_advice_with_the_source_it_sent(
    stack: Stack, tmp_path: Path
) -> None:
    """A 202 whose source misses the routing: the spec's advice, naming the source sent."""
    sandbox = await stack.sandbox()
    config = write_config(tmp_path / "signal.toml", sandbox.url, source_value="datafly")
    code, output = await run_cli("send-test-event", "--config", str(config))
    assert code == 0, output
    assert "-> 202" in output
    assert (
        "source 'datafly' does not match the stream's routing expression: check your "
        "stream's routing expression in Amperity and match exactly (case-sensitive)"
    ) in output
    (received,) = await sandbox.events()
    assert received["routed_to"] == "_unknown"


@pytest.mark.parametrize(
    ("overrides", "advice"),
    [
        pytest.param(
            {"event_stream_id": "esm-N0SuchStrm"}, "check event_stream_id", id="unknown-stream"
        ),
        pytest.param(
            {"api_key": mint_keys(ttl=-60).ingest},
            "Regenerate it under Settings > Security > API Keys with Streaming Ingest Write Access",
            id="expired-key",
        ),
        pytest.param(
            {"api_base_url": "http://no-such-tenant.invalid:1"},
            "no such host no-such-tenant.invalid: it is the host of api_base_url",
            id="unknown-host",
        ),
    ],
)
async def test_send_test_event_prints_the_advice_for_a_broken_config(
    stack: Stack, tmp_path: Path, overrides: dict[str, Any], advice: str
) -> None:
    """A broken integration makes send-test-event exit 1 with the troubleshooting fix."""
    sandbox = await stack.sandbox()
    config = write_config(tmp_path / "signal.toml", sandbox.url, **overrides)
    code, output = await run_cli("send-test-event", "--config", str(config))
    assert code == 1, output
    assert "FAILED" in output
    assert advice in output
    assert "Traceback" not in output
    assert [e for e in await sandbox.events() if e["status"] in {202, 204}] == []


async def test_blueprint_show_prints_the_effective_retail_blueprint() -> None:
    """`blueprint show --vertical retail` prints the globals and every retail handler."""
    code, output = await run_cli("blueprint", "show", "--vertical", "retail")
    assert code == 0, output
    assert "vertical: retail" in output
    for handler in ("pageview", "view_item_list", "view_item", "add_to_cart", "purchase"):
        assert f"  {handler}:\n" in output
    for segment_name in ("Product Viewed", "Product Removed", "Order Completed"):
        assert segment_name in output
    assert "target: cookieid" in output


async def test_blueprint_test_dry_runs_the_ga4_sample_and_lists_gaps() -> None:
    """`blueprint test` maps each sample event, names pass-throughs and unfired mappings."""
    events = json.loads((SAMPLES / "retail_ga4.json").read_text())
    code, output = await run_cli(
        "blueprint",
        "test",
        "--vertical",
        "retail",
        "--events",
        str(SAMPLES / "retail_ga4.json"),
    )
    assert code == 0, output
    assert "#1 page -> pageview (handler pageview)" in output
    assert "purchase -> purchase (handler purchase)" in output
    assert f"events: {len(events)}, passed through: 1" in output
    assert "pass-through: #10 Size Guide Opened" in output
    assert "global mappings that never fired:" in output

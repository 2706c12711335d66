"""``amperity-signal demo --once``: what a newcomer's ``make demo`` shows."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.stack import CLI

pytestmark = pytest.mark.e2e


async def test_the_demo_delivers_resolves_and_shows_the_browser_view() -> None:
    """The demo delivers each sample event, resolves the visitor and lists the URLs."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 180)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    for expected in ("type=pageview", "type=view_item", "type=purchase", " 202 (attempts 1)"):
        assert expected in text, text
    assert "resolved=True amperity_id=p-a11ce0000001 matched_key=email_sha256" in text
    assert '"EventCount": 92' in text  # the profile as the demo's own events changed it
    assert '"Persona": "Value Hunter"' in text.split("BrowserProfile", 1)[1]
    assert "FAILED" not in text and "Traceback" not in text

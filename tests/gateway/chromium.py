"""Headless Chromium for the browser tests: Debian's system binary, driven by playwright."""

from __future__ import annotations

from playwright.async_api import Browser, Playwright

# No GPU, no sandbox (containers), and no background traffic that would muddy network logs.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def launch(playwright: Playwright, executable: str) -> Browser:
    """Launch the system Chromium headless with the test flags."""
    return await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)

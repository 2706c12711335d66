"""Schemathesis against the running gateway's own ``/openapi.json``: no 5xx, nothing undocumented.

The service process (with its embedded gateway) runs on a sandbox; ``st run`` generates
positive and negative requests for every operation the gateway describes and checks that
none answers a 5xx, and that every answer is one the document describes: its status, its
media type, its required headers (``Retry-After``, ``Location``, ...) and its body's schema,
which is what a client generated from the document relies on. The gateway limits each
client IP to 20 requests/s, so the run is paced just under that (every request then reaches
the routes, not the limiter). Figures go to ``artifacts/reliability/fuzz_gateway.json``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack
from tests.reliability.profile import PROFILE
from tests.reliability.support import ARTIFACTS

pytestmark = pytest.mark.e2e

ST = Path(sys.executable).with_name("st")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    stack: Stack, tmp_path: Path
) -> None:
    """Every generated request to every documented operation answers below 500, as documented."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    async with httpx.AsyncClient(base_url=service.http_url) as gateway:
        operations = sum(
            len(m) for m in (await gateway.get("/openapi.json")).json()["paths"].values()
        )
    report = tmp_path / "schemathesis.json"
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "run",
        f"{service.http_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(PROFILE.gateway_fuzz_cases),
        "--phases",
        # The coverage phase alone is ~3,000 cases (3-4 minutes at the paced rate).
        "coverage,fuzzing" if PROFILE.name == "long" else "fuzzing",
        "--rate-limit",
        "18/s",
        "--workers",
        "1",
        "--seed",
        "20250131",
        "--header",
        "X-Pipeline-Key: pk_web",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    text = output.decode(errors="replace")
    cases = re.search(r"Test cases:\s*(\d+) generated", text)
    summary = {
        "profile": PROFILE.name,
        "operations": operations,
        "exit_code": process.returncode,
        "test_cases": int(cases.group(1)) if cases else None,
        "summary": text[-1_500:],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "fuzz_gateway.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text[-1_500:])

    assert process.returncode == 0, text[-4_000:]
    assert cases is not None and int(cases.group(1)) >= 200, text[-1_500:]

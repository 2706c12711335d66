"""The per-tenant rate under `serve --workers N`: told at start when the workers cannot keep it.

Without Redis each worker keeps its own share (``ratelimit.process_share``). With fewer
requests a second than workers, each keeps one request per ``workers / limit`` seconds: the
rate holds over that window, but not within every second, and check-config and serve say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from amperity_signal.config import settings_from_dict
from amperity_signal.runner import with_workers
from amperity_signal.service.app import report_configuration
from amperity_signal.setup_advice import rate_limit_warnings
from tests.unit.cli_support import integration, run_cli


def config(rate: int, workers: int, backend: str = "memory") -> dict[str, Any]:
    """One integration at ``rate`` requests/s under ``workers`` workers and ``backend``."""
    return {
        "server": {"workers": workers},
        "cache": {"backend": backend},
        "integrations": [integration(rate_limit_per_second=rate)],
    }


def warnings_of(rate: int, workers: int, backend: str = "memory") -> list[str]:
    settings = settings_from_dict(config(rate, workers, backend), {})
    return rate_limit_warnings(settings, settings.integrations[0])


def test_fewer_requests_a_second_than_workers_is_told_with_the_share_and_the_fix() -> None:
    """2/s over 4 workers: each keeps 1 every 2 s; up to 4 in one second; Redis or 2 workers."""
    (warning,) = warnings_of(rate=2, workers=4)

    assert warning.startswith(
        "integration web: rate_limit_per_second = 2 is less than the 4 worker processes"
    )
    assert "each keeps 1 request every 2 s" in warning
    assert "so Amperity gets 2 requests/s over every 2 s, but up to 4 in the same second" in warning
    assert 'Set [cache] backend = "redis"' in warning and "at most 2 workers." in warning


@pytest.mark.parametrize(
    ("rate", "workers", "backend"),
    [(4, 4, "memory"), (500, 64, "memory"), (2, 4, "redis"), (1, 1, "memory")],
)
def test_no_warning_when_each_worker_keeps_a_whole_request_a_second_or_redis_shares(
    rate: int, workers: int, backend: str
) -> None:
    """A whole share a second per worker, or one limit shared through Redis: nothing to say."""
    assert warnings_of(rate, workers, backend) == []


def test_serve_logs_it_for_the_workers_it_starts(caplog: pytest.LogCaptureFixture) -> None:
    """`serve --workers 4` over a config saying 1: the warning counts the 4 started."""
    settings = with_workers(settings_from_dict(config(rate=3, workers=1), {}), 4)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.server"):
        report_configuration(settings, proxies=False)

    (record,) = [r for r in caplog.records if "rate_limit_per_second" in r.getMessage()]
    assert "rate_limit_per_second = 3 is less than the 4 worker processes" in record.getMessage()
    assert getattr(record, "integration_id", None) == "web"


def test_check_config_prints_it_as_a_warning_and_is_still_ok(tmp_path: Path) -> None:
    """check-config: a warning line, then config OK (a legitimate setup, with a cost)."""
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(config(rate=2, workers=4)), encoding="utf-8")

    result = run_cli("check-config", "--config", str(path))

    assert result.returncode == 0, result.stderr
    assert (
        "warning: integration web: rate_limit_per_second = 2 is less than the 4 worker processes"
        in result.stdout
    )
    assert "config OK" in result.stdout

"""A ``[gateway] deliver_timeout`` the ``/v1/batch`` deadline can cut is warned of."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from amperity_signal.config_checks import deliver_timeout_warnings
from amperity_signal.gateway.settings import GatewaySettings
from tests.unit.cli_support import integration, run_cli


def _config(path: Path, deliver_timeout: float) -> Path:
    table = integration(api_base_url="http://127.0.0.1:9")
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
    gateway = {"deliver_timeout": deliver_timeout}
    path.write_text(tomli_w.dumps({"server": server, "gateway": gateway, "integrations": [table]}))
    return path


def test_a_deliver_timeout_up_to_half_the_batch_deadline_is_not_warned_of() -> None:
    """Half the batch's deadline (7.5 s of 15 s) still fits a whole Deliver for each start."""
    deadline = GatewaySettings().batch_deadline
    assert deliver_timeout_warnings(GatewaySettings().deliver_timeout, deadline) == []
    assert deliver_timeout_warnings(deadline / 2, deadline) == []


def test_check_config_warns_of_a_deliver_timeout_over_half_the_batch_deadline(
    tmp_path: Path,
) -> None:
    """deliver_timeout = 8 is OK, with a warning naming the setting, the deadline and the fix."""
    result = run_cli("check-config", "--config", str(_config(tmp_path / "c.toml", 8)))

    assert result.returncode == 0, result.stderr
    assert (
        "warning: [gateway] deliver_timeout = 8 is over half of the gateway's 15 s /v1/batch "
        "deadline" in result.stdout
    )
    assert "Set deliver_timeout to 7.5 or less." in result.stdout
    assert "config OK" in result.stdout

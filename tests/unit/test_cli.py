"""The command line: input the user can fix is one clear error and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from starlette.applications import Starlette

from amperity_signal import commands
from amperity_signal.blueprint import SAMPLES_DIR, VERTICALS
from amperity_signal.cli import grpc_target, main
from amperity_signal.gateway.server import gateway_server
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.limits import ANONYMOUS_ID_TOO_LONG
from amperity_signal.workers import exit_status
from tests.unit.cli_support import INGEST, run_cli
from tests.unit.cli_support import integration as integration_table

BAD_OVERRIDES = {"handlers": {"custom": {"type": "custom", "events": ["A"], "use": ["nope"]}}}


def assert_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, every word in stderr, and no Python traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def write_config(
    path: Path,
    *,
    grpc_address: str = "127.0.0.1:0",
    http_address: str = "127.0.0.1:0",
    log_level: str | None = None,
    **integration: Any,
) -> Path:
    table = integration_table(api_base_url="http://127.0.0.1:9", **integration)
    server = {"grpc_address": grpc_address, "http_address": http_address}
    if log_level is not None:
        server["log_level"] = log_level
    config = {"server": server, "integrations": [table]}
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (here: this one) is listening on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


WITHOUT_HANDOFF = ((), ("already in use", "free port"))
# A handoff cannot join a listener without SO_REUSEPORT (a serve without --handoff).
HANDOFF = (("--handoff",), ("does not share it", "without --handoff", "free port"))


@pytest.mark.parametrize("handoff", [WITHOUT_HANDOFF, HANDOFF])
@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("setting", ["grpc_address", "http_address"])
def test_serve_on_a_taken_port_names_the_setting_and_the_fix(
    tmp_path: Path,
    taken_port: int,
    setting: str,
    workers: str,
    handoff: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    """Serving on a port in use is one line naming the setting and address, exit 2."""
    flags, says = handoff
    address = f"127.0.0.1:{taken_port}"
    config = write_config(tmp_path / "c.toml", **{setting: address})
    result = run_cli("serve", "--config", str(config), "--workers", workers, *flags)
    assert_clear_error(result, f"server.{setting}", address, *says)
    assert result.stderr.count("already in use") == 1
    # Refused before anything listens: no gRPC port announced as ready (and taking calls)
    # for a service that then exits because its gateway's port is taken.
    assert "listening" not in result.stdout, result.stdout


@pytest.mark.parametrize("setting", ["grpc_address", "http_address"])
def test_workers_do_not_join_another_services_reuseport_listener(
    tmp_path: Path, setting: str
) -> None:
    """A port held with SO_REUSEPORT (another `serve --workers`) is in use, not shared."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        config = write_config(tmp_path / "c.toml", **{setting: address})
        result = run_cli("serve", "--config", str(config), "--workers", "2")
    assert_clear_error(result, f"server.{setting}", address, "already in use")


def test_check_config_compiles_each_integrations_blueprint(tmp_path: Path) -> None:
    """A handler using an undefined mapping set fails check-config, naming the integration."""
    config = write_config(tmp_path / "c.toml", blueprint=BAD_OVERRIDES)
    result = run_cli("check-config", "--config", str(config))
    assert_clear_error(result, "integrations[0].blueprint", "'web'", "'nope'", "Fix:")
    assert "config OK" not in result.stdout


def test_check_configs_blueprint_fix_names_the_integrations_show_command(tmp_path: Path) -> None:
    """The fix names `blueprint show` with this config and integration, a command that works.

    The path has a space: the command is quoted as a shell reads it. Once the overrides
    compile, the command the fix printed shows the integration's blueprint.
    """
    config = write_config(tmp_path / "my config.toml", blueprint=BAD_OVERRIDES)
    result = run_cli("check-config", "--config", str(config))
    assert_clear_error(result, "`amperity-signal blueprint show --vertical retail`")
    command = f"amperity-signal blueprint show --config '{config}' --integration web"
    assert f"`{command}`" in result.stderr, result.stderr

    fixed = {"handlers": {"custom": {"type": "custom", "events": ["A"], "use": []}}}
    write_config(config, blueprint=fixed)
    shown = run_cli(*shlex.split(command)[1:])
    assert shown.returncode == 0, shown.stderr
    assert "custom" in shown.stdout


def test_check_config_says_under_ok_what_each_integration_does(tmp_path: Path) -> None:
    """One line per integration after "config OK": an ingest-only one is told as such."""
    config = write_config(tmp_path / "c.toml")

    result = run_cli("check-config", "--config", str(config))

    assert result.returncode == 0, result.stderr
    ok, line = result.stdout.splitlines()[-2:]
    assert ok.startswith("config OK: 1 integration(s)")
    table = integration_table()
    assert line.startswith(f"  {table['id']}: delivers events (vertical ")
    assert f"to stream {table['event_stream_id']}" in line
    assert "ingest only" in line


def test_check_config_warns_of_a_no_proxy_entry_that_is_no_range(tmp_path: Path) -> None:
    """NO_PROXY=10.0.0.0/33 is still OK (other tools share it), with a warning naming it."""
    config = write_config(tmp_path / "c.toml")
    proxies = {name: "" for name in os.environ if name.lower().endswith("_proxy")}
    proxies |= {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "localhost,10.0.0.0/33"}

    result = run_cli("check-config", "--config", str(config), env=proxies)

    assert result.returncode == 0, result.stderr
    assert (
        "warning: NO_PROXY entry '10.0.0.0/33' is ignored: /33 is more than the 32 bits of an "
        "IPv4 address" in result.stdout
    )
    assert "config OK" in result.stdout


def test_serve_refuses_a_blueprint_that_does_not_compile(tmp_path: Path) -> None:
    """Serving reports the same blueprint problem as check-config instead of a traceback."""
    config = write_config(tmp_path / "c.toml", blueprint=BAD_OVERRIDES)
    result = run_cli("serve", "--config", str(config), "--no-gateway")
    assert_clear_error(result, "integrations[0].blueprint", "'nope'")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vertical", "bogus"], ["--vertical", "'bogus'", "retail"]),
        (
            ["--vertical", "Retail"],
            ["--vertical: unknown vertical 'Retail'; did you mean 'retail'? If not, choose"],
        ),
        (
            ["--vertical", "retail", "--config", "{empty}"],
            ["integrations: is empty", "[[integrations]]"],
        ),
        (["--vertical", "retail", "--config", "{bad}"], ["integration 'web'", "'nope'"]),
        (
            ["--vertical", "retail", "--config", "{good}", "--integration", "x"],
            ["--integration", "'x'", "'web'"],
        ),
        (["--vertical", "retail", "--integration", "web"], ["--integration", "--config"]),
        (
            ["--vertical", "retail", "--config", "{good}", "--integration", "webb"],
            ["no integration 'webb'", "did you mean 'web'? If not, choose one of: 'web'"],
        ),
    ],
)
def test_blueprint_show_explains_what_cannot_be_compiled(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    """An unknown vertical or integration, bad overrides, --integration alone: a clear error."""
    (tmp_path / "empty.toml").write_text("")
    files = {
        "empty": str(tmp_path / "empty.toml"),
        "bad": str(write_config(tmp_path / "bad.toml", blueprint=BAD_OVERRIDES)),
        "good": str(write_config(tmp_path / "good.toml")),
    }
    result = run_cli("blueprint", "show", *(a.format(**files) for a in args))
    assert_clear_error(result, *words)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe[", ["not UTF-8"]),
        (b'{"type": "page"}', ["expected a JSON array of events"]),
        (b"[{", ["is not valid JSON"]),
    ],
)
def test_blueprint_test_names_what_is_wrong_with_the_events_file(
    tmp_path: Path, content: bytes, words: list[str]
) -> None:
    """An --events file that is no JSON array of events is one clear error and exit 2."""
    events = tmp_path / "events.json"
    events.write_bytes(content)
    result = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert_clear_error(result, f"--events {events}", *words)


_TRACK = '{"type": "track", "event": "X", "anonymousId": "a"'
_DEEP_PROPERTIES = '{"a": ' * 900 + "1" + "}" * 900
# 33 strings of 8000 characters: each within Deliver's limit, 264 KB over the gateway's.
_BIG_PROPERTIES = "{" + ", ".join(f'"p{i}": "{"x" * 8000}"' for i in range(33)) + "}"


@pytest.mark.parametrize(
    ("bad_event", "refusal"),
    [
        # What the gateway refuses (gateway/jsonbody.py, gateway/convert.py), in its words.
        ("1", "events[1]: an event must be a JSON object."),
        ('{"type": "page", "anonymousId": 42}', "events[1].anonymousId: must be a string."),
        # An alias is named as the file spelled it.
        ('{"type": "page", "anonymous_id": 42}', "events[1].anonymous_id: must be a string."),
        (
            _TRACK + ', "context": {"vendor_ids": {"gaClientId": 1}}}',
            "events[1].context.vendor_ids.gaClientId: must be a string.",
        ),
        (_TRACK + ', "partner_attrs": 5}', "events[1].partner_attrs: must be a JSON object."),
        (_TRACK + ', "properties": [1]}', "events[1].properties: must be a JSON object."),
        (
            _TRACK + ', "context": {"consent": {"analytics": "yes"}}}',
            "events[1].context.consent.analytics: must be true or false.",
        ),
        (
            _TRACK + ', "context": {"consent": {"google": {"adStorage": "maybe"}}}}',
            'events[1].context.consent.google.adStorage: must be "granted" or "denied".',
        ),
        (_TRACK + ', "properties": {"n": NaN}}', "events[1].properties.n: numbers must be finite."),
        (
            _TRACK + ', "properties": {"big": 12345678901234567890}}',
            "events[1].properties.big: integers beyond ±2^53 lose precision; send it as a string.",
        ),
        (
            _TRACK + ', "timestamp": "garbage"}',
            "events[1].timestamp: is not an RFC 3339 date-time such as",
        ),
        (
            _TRACK + ', "timestamp": "0001-01-01T00:00:00+01:00"}',
            "events[1].timestamp: is out of the range a Timestamp holds",
        ),
        # Only null or no timestamp means now: an empty one is refused.
        (_TRACK + ', "timestamp": ""}', "events[1].timestamp: is not an RFC 3339 date-time"),
        (
            _TRACK + f', "properties": {_DEEP_PROPERTIES}}}',
            ": The JSON is nested deeper than 32 levels.",
        ),
        # A body over 256 KiB, even alone in a /v1/batch body: the gateway's 413.
        (
            _TRACK + f', "properties": {_BIG_PROPERTIES}}}',
            "events[1]: The request body is larger than 262144 bytes; send less.",
        ),
        # What Deliver refuses (service/validation.py), in its words, named as the file
        # spelled the field (as the gateway names a batch item's).
        (
            _TRACK + ', "timestamp": "1990-06-01T12:00:00Z"}',
            "events[1].timestamp: must lie between 2000-01-01 and 2100-01-01 (UTC).",
        ),
        (
            _TRACK + ', "properties": {"s": "' + "x" * 8193 + '"}}',
            "events[1].properties.s: is longer than 8192 characters.",
        ),
        (
            '{"type": "page", "userId": "u"}',
            "events[1].anonymousId: is required, with a userId or without: it becomes the cookieid",
        ),
        ('{"type": "track", "anonymousId": "a"}', "events[1].event: a track event needs a name."),
        (
            '{"type": "page", "anonymousId": "a", "partnerAttrs": {"x": '
            + "[" * 11
            + "]" * 11
            + "}}",
            "events[1].partnerAttrs.x" + "[0]" * 9 + ": is nested deeper than 10 levels.",
        ),
    ],
    ids=lambda value: value[:48],
)
def test_blueprint_test_refuses_each_event_the_service_would_refuse(
    tmp_path: Path, bad_event: str, refusal: str
) -> None:
    """The refusal the gateway or Deliver would answer, named by events[i]; the rest mapped.

    The events around the refused one are still mapped under their own numbers, and the
    exit status (1) says the report is incomplete.
    """
    events = tmp_path / "events.json"
    page = '{"type": "page", "anonymousId": "a"}'
    events.write_text(f"[{page}, {bad_event}, {page}]", encoding="utf-8")
    result = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert f"error: --events {events}: " in result.stderr
    assert refusal in result.stderr, result.stderr
    assert result.stderr.count("error: ") == 1, result.stderr
    assert "#1 page -> pageview" in result.stdout
    assert "#3 page -> pageview" in result.stdout
    assert "#2 " not in result.stdout
    assert "events: 2, passed through: 0" in result.stdout
    assert "refused, not mapped: events[1]" in result.stdout


def test_blueprint_test_lists_every_refused_event(tmp_path: Path) -> None:
    """Several bad events are each listed (every violation of each); none stops the run."""
    events = tmp_path / "events.json"
    long = "x" * 8193
    events.write_text(
        json.dumps(
            [
                {"type": "track", "anonymousId": 7},
                {"type": "page", "anonymousId": "a"},
                {"type": "track", "anonymousId": "a", "properties": {"s": long, "t": long}},
            ]
        ),
        encoding="utf-8",
    )
    result = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        f"error: --events {events}: events[0].anonymousId: must be a string.",
        f"error: --events {events}: events[2].event: a track event needs a name.",
    ]
    # A Struct's keys come in no set order, to Deliver's validation as here.
    assert sorted(lines[2:]) == [
        f"error: --events {events}: events[2].properties.s: is longer than 8192 characters.",
        f"error: --events {events}: events[2].properties.t: is longer than 8192 characters.",
    ]
    assert "#2 page -> pageview" in result.stdout
    assert "refused, not mapped: events[0], events[2]" in result.stdout


def test_blueprint_test_names_deliver_refusals_as_the_file_spelled_them(tmp_path: Path) -> None:
    """Deliver's snake_case paths, named back by the gateway's table (``event_field``).

    camelCase or the proto's name, whichever the file used, below ``events[i].``; a field
    the gateway takes from the connection (``context.ip``) keeps Deliver's path.
    """
    events = tmp_path / "events.json"
    long = "x" * 8193
    page: dict[str, Any] = {"type": "page", "anonymousId": "a"}
    events.write_text(
        json.dumps(
            [
                {"type": "page", "anonymousId": long},
                {"type": "page", "anonymous_id": long},
                {**page, "context": {"geo": {"postalCode": long}}},
                {**page, "context": {"vendorIds": {"gaClientId": long}}},
                {**page, "partner_attrs": {"s": long}},
                {**page, "context": {"ip": long}},
            ]
        ),
        encoding="utf-8",
    )
    result = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert result.returncode == 1, result.stderr
    fields = [
        "events[2].context.geo.postalCode",
        "events[3].context.vendorIds.gaClientId",
        "events[4].partner_attrs.s",
        "events[5].context.ip",
    ]
    # An anonymous id has its own, shorter limit, the same wherever it arrives.
    ids = ["events[0].anonymousId", "events[1].anonymous_id"]
    assert result.stderr.splitlines() == [
        *(f"error: --events {events}: {field}: {ANONYMOUS_ID_TOO_LONG}" for field in ids),
        *(
            f"error: --events {events}: {field}: is longer than 8192 characters."
            for field in fields
        ),
    ]


@pytest.mark.parametrize("vertical", VERTICALS)
@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES_DIR.glob("*.json")))
def test_every_shipped_sample_dry_runs_cleanly_on_every_vertical(
    sample: str, vertical: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The samples are events the gateway and Deliver take: none is refused, exit 0."""
    args = argparse.Namespace(
        blueprint_command="test",
        vertical=vertical,
        events=str(SAMPLES_DIR / sample),
        source_value="DATAFLY",
    )
    assert commands.blueprint(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    count = len(json.loads((SAMPLES_DIR / sample).read_text("utf-8")))
    assert f"events: {count}, passed through: " in out
    assert "refused" not in out
    # The samples' context.vendorIds.gaClientId fills the global ga_client_id mapping.
    never_fired = next(line for line in out.splitlines() if line.startswith("global mappings"))
    assert "ga_client_id" not in never_fired.split(": ", 1)[1].split(", ")


@pytest.mark.parametrize("workers", ["500", "-3", "0", "two"])
def test_serve_takes_workers_from_1_to_64(tmp_path: Path, workers: str) -> None:
    """--workers outside the range [server] workers allows is refused, naming the flag."""
    config = write_config(tmp_path / "c.toml")
    result = run_cli("serve", "--config", str(config), "--workers", workers)
    assert_clear_error(result, "--workers", "1 to 64")


def test_gateway_refuses_a_grpc_target_that_is_not_host_port(tmp_path: Path) -> None:
    """A gateway --grpc-target of nonsense:xyz is refused before anything starts."""
    config = write_config(tmp_path / "c.toml")
    result = run_cli("gateway", "--config", str(config), "--grpc-target", "nonsense:xyz")
    assert_clear_error(result, "--grpc-target", "HOST:PORT")


@pytest.mark.parametrize(
    "target", ["127.0.0.1:50051", "localhost:1", "[::1]:50051", "dns:///svc.local:50051"]
)
def test_a_grpc_target_may_be_host_port_or_a_grpc_uri(target: str) -> None:
    """HOST:PORT, a bracketed IPv6 host and gRPC's own URI schemes all pass."""
    assert grpc_target(target) == target


@pytest.mark.parametrize(
    "target", ["nonsense:xyz", "host", ":50051", "::1:50051", "h:0", "h:70000"]
)
def test_a_grpc_target_without_a_usable_port_is_refused(target: str) -> None:
    """A missing or out-of-range port, no host or a bare IPv6 host is refused."""
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        grpc_target(target)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "-1"], ["--port", "0 to 65535"]),
        (["--port", "70000"], ["--port", "0 to 65535"]),
        (["--rate-limit", "0"], ["--rate-limit", "at least 1"]),
        (["--profile-delay", "-1"], ["--profile-delay"]),
        (["--host", "999.1.1.1"], ["999.1.1.1", "--host"]),
        (["--data", "{missing}"], ["--data", "cannot read"]),
        (["--data", "{broken}"], ["--data", "not valid YAML"]),
        (["--data", "{wrong}"], ["--data", "signing_secret"]),
    ],
)
def test_sandbox_flags_it_cannot_use_are_one_error(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    """A bad sandbox port, rate limit, host or data file: `error:` naming it, exit 2."""
    (tmp_path / "broken.yaml").write_text("tenants: [1,2\n")
    (tmp_path / "wrong.yaml").write_text("tenants: {x: 1}\n")
    files = {
        "missing": str(tmp_path / "missing.yaml"),
        "broken": str(tmp_path / "broken.yaml"),
        "wrong": str(tmp_path / "wrong.yaml"),
    }
    result = run_cli("sandbox", "--port", "0", *(a.format(**files) for a in args), timeout=20)
    assert_clear_error(result, "error:", *words)


def test_sandbox_on_a_taken_port_says_so(taken_port: int) -> None:
    """A sandbox --port already in use names the port and how to pick another."""
    result = run_cli("sandbox", "--port", str(taken_port), timeout=20)
    assert_clear_error(result, f"--port {taken_port}", "already in use")


def serve_two_workers(config: Path, *args: str) -> tuple[list[str], str]:
    """Run `serve --workers 2` until both workers serve, then SIGTERM: stdout lines, stderr."""
    command = [sys.executable, "-m", "amperity_signal.cli", "serve", "--config", str(config)]
    with subprocess.Popen(
        [*command, "--workers", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while sum(x.startswith("gateway listening") for x in lines) < 2 and (
            line := process.stdout.readline()
        ):
            lines.append(line.strip())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert sum(x.startswith("gateway listening") for x in lines) == 2, stderr
    return lines, stderr


def test_serve_workers_log_json_lines_like_one_process(tmp_path: Path) -> None:
    """`serve --workers 2` logs JSON lines (scrubbed), as a single process does.

    The configuration's setup advice once (the parent says it for both workers), each
    worker's own stop line once each.
    """
    config = write_config(
        tmp_path / "c.toml", linking_keys=[{"source": "email", "key": "email_sha256"}]
    )
    _, stderr = serve_two_workers(config)
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    warnings = [r for r in records if "profile enrichment is off" in r["msg"]]
    assert [r["level"] for r in warnings] == ["warning"]
    assert sum(r["msg"] == "shutting down" for r in records) == 2


def test_serve_workers_say_once_that_redis_does_not_answer(tmp_path: Path) -> None:
    """The start-up ping of a Redis where nothing listens is one warning, not one a worker.

    The parent pings before it starts the workers, as it gives the configuration's advice:
    the warning cannot be lost with a worker that fails. Both workers still serve.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    config = write_config(tmp_path / "c.toml")
    settings = tomllib.loads(config.read_text("utf-8"))
    settings["cache"] = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{port}/0"}
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    _, stderr = serve_two_workers(config)
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    warnings = [r for r in records if r["msg"].startswith("Redis does not answer at start")]
    assert [r["level"] for r in warnings] == ["warning"], stderr
    assert "Redis cannot be reached (ConnectionError)" in warnings[0]["msg"]
    assert sum(r["msg"] == "shutting down" for r in records) == 2


@pytest.mark.parametrize(
    ("config_level", "args"),
    [(None, ("--log-level", "debug")), ("DEBUG", ())],
    ids=["flag", "config"],
)
def test_serve_workers_log_at_the_level_of_the_flag_or_the_config_with_no_key(
    tmp_path: Path, config_level: str | None, args: tuple[str, ...]
) -> None:
    """--log-level or [server] log_level reaches every worker; debug lines carry no key."""
    config = write_config(tmp_path / "c.toml", log_level=config_level)
    _, stderr = serve_two_workers(config, *args)
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    serving = [r for r in records if r["msg"] == "serving"]
    assert [r["level"] for r in serving] == ["debug", "debug"]
    assert len({r["pid"] for r in serving}) == 2  # one line from each worker
    assert INGEST not in stderr and INGEST.split(".")[2] not in stderr


def test_the_log_level_flag_overrides_the_config(tmp_path: Path) -> None:
    """`--log-level error` over [server] log_level = "debug": workers log no info or debug."""
    config = write_config(tmp_path / "c.toml", log_level="debug")
    _, stderr = serve_two_workers(config, "--log-level", "error")
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert {r["level"] for r in records} <= {"error"}, stderr


@pytest.mark.parametrize("command", ["serve", "gateway", "demo"])
def test_an_unknown_log_level_flag_names_the_levels(tmp_path: Path, command: str) -> None:
    """--log-level verbose is refused, naming the flag and the four levels."""
    config = ("--config", str(write_config(tmp_path / "c.toml"))) if command != "demo" else ()
    target = ("--grpc-target", "127.0.0.1:1") if command == "gateway" else ()
    result = run_cli(command, *config, *target, "--log-level", "verbose")
    assert_clear_error(result, "--log-level", "'verbose'", "debug, info, warning, error")


def test_serve_workers_on_port_0_share_one_free_port(tmp_path: Path) -> None:
    """Port 0 under `serve --workers 2` is one free port both workers listen on, not two."""
    lines, _ = serve_two_workers(write_config(tmp_path / "c.toml"))
    assert len(lines) == 4
    assert len(set(lines)) == 2, lines  # one grpc and one gateway address, each said twice


def gateway_app() -> Starlette:
    """An app with the state ``create_gateway_app`` leaves for ``gateway_server``."""
    app = Starlette()
    app.state.end_streams = lambda: None
    app.state.count_refused_connection = lambda limit: None
    return app


def test_ctrl_c_under_serve_workers_stops_each_worker_gracefully() -> None:
    """A worker hearing the parent's SIGTERM and the terminal's SIGINT shuts down, unforced."""
    server = gateway_server(gateway_app(), GatewaySettings())
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit
    assert not server.force_exit


def test_a_second_ctrl_c_still_forces_the_gateway_to_exit() -> None:
    """Ctrl-C twice skips waiting for requests in flight, as uvicorn does."""
    server = gateway_server(gateway_app(), GatewaySettings())
    server.handle_exit(signal.SIGINT, None)
    assert not server.force_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit


def test_send_test_event_to_an_unknown_integration_lists_the_configured_ids(
    tmp_path: Path,
) -> None:
    """An --integration that is not configured is a usage error naming the ids there are."""
    config = write_config(tmp_path / "c.toml")
    result = run_cli("send-test-event", "--config", str(config), "--integration", "nope")
    assert_clear_error(result, "error:", "--integration", "'nope'", "'web'")


def test_send_test_event_names_the_integration_whose_blueprint_does_not_compile(
    tmp_path: Path,
) -> None:
    """Overrides that do not compile are reported as check-config reports them."""
    config = write_config(tmp_path / "c.toml", blueprint=BAD_OVERRIDES)
    result = run_cli("send-test-event", "--config", str(config))
    assert_clear_error(result, "integrations[0].blueprint", "'web'", "'nope'", "Fix:")


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:99999", "127.0.0.1:http"])
def test_gateway_refuses_an_http_address_that_is_not_host_port(
    tmp_path: Path, address: str
) -> None:
    """A gateway --http-address that is not host:port is a usage error, not a traceback."""
    config = write_config(tmp_path / "c.toml")
    result = run_cli(
        "gateway",
        "--config",
        str(config),
        "--grpc-target",
        "127.0.0.1:1",
        "--http-address",
        address,
    )
    assert_clear_error(result, "--http-address", repr(address), "127.0.0.1:8080")


@pytest.mark.parametrize("flag", [True, False])
def test_gateway_on_a_taken_port_names_where_the_address_came_from(
    tmp_path: Path, taken_port: int, flag: bool
) -> None:
    """A taken gateway port names --http-address or server.http_address, and the fix."""
    address = f"127.0.0.1:{taken_port}"
    config = write_config(tmp_path / "c.toml", http_address=address)
    args = ["--http-address", address] if flag else []
    result = run_cli(
        "gateway", "--config", str(config), "--grpc-target", "127.0.0.1:1", *args, timeout=20
    )
    setting = "--http-address" if flag else "server.http_address"
    assert_clear_error(result, f"{setting}: {address} is already in use", "free port")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["--config", "is empty", "AMPERITY_SIGNAL_CONFIG"]),
        ("dir", ["is a directory", "the TOML file"]),
        (b"\xff\xfe[server]\n", ["not UTF-8 text", "save it as UTF-8"]),
    ],
)
def test_a_config_path_that_is_no_toml_text_says_what_it_is(
    tmp_path: Path, content: bytes | str | None, words: list[str]
) -> None:
    """An empty --config, a directory or a binary file: what it is and what to pass instead."""
    path = tmp_path / "c.toml"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = run_cli("check-config", "--config", "" if content is None else str(path))
    assert_clear_error(result, *words)
    assert "check the path" not in result.stderr


def test_workers_stopped_before_their_handlers_are_set_count_as_a_clean_stop() -> None:
    """A worker killed by the SIGTERM the parent forwarded exits 0 overall, not 241 (-15)."""
    assert exit_status([-signal.SIGTERM, 0], stopped=True) == 0
    assert exit_status([-signal.SIGTERM, -signal.SIGTERM], stopped=True) == 0


def test_a_worker_killed_by_another_signal_is_a_failure_in_shell_terms() -> None:
    """A worker that died of SIGSEGV, or of a SIGTERM nobody forwarded, is 128 + the signal."""
    assert exit_status([-signal.SIGSEGV, 0], stopped=True) == 128 + signal.SIGSEGV
    assert exit_status([-signal.SIGTERM, 0], stopped=False) == 128 + signal.SIGTERM
    assert exit_status([1, 0], stopped=True) == 1


def test_blueprint_test_reads_an_events_file_with_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    """An --events file saved as "UTF-8 with BOM" is read like the same file without one."""
    events = tmp_path / "events.json"
    events.write_bytes(b'\xef\xbb\xbf[{"type": "page", "anonymousId": "a"}]')
    result = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert result.returncode == 0, result.stderr
    assert "#1 page -> pageview" in result.stdout


def test_blueprint_test_takes_the_configs_overrides_and_message_size(tmp_path: Path) -> None:
    """--config (and --integration) dry-run as that integration delivers.

    Its blueprint overrides apply (an added global mapping fires), and so does its
    ``[server] max_message_bytes``: an event within the default 1 MiB but over the
    configured 64 KiB is refused in Deliver's words, as Deliver would refuse it.
    """
    config = write_config(
        tmp_path / "c.toml",
        blueprint={"global_mappings": [{"source": "properties.shelf", "target": "shelf_code"}]},
    )
    settings = tomllib.loads(config.read_text("utf-8"))
    settings["server"]["max_message_bytes"] = 65_536
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    big = {f"p{i}": "x" * 8000 for i in range(9)}  # 72 KB: under 1 MiB, over 64 KiB
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps(
            [
                {"type": "page", "anonymousId": "a", "properties": {"shelf": "S-9"}},
                {"type": "page", "anonymousId": "a", "properties": big},
            ]
        ),
        encoding="utf-8",
    )
    plain = run_cli("blueprint", "test", "--vertical", "retail", "--events", str(events))
    assert plain.returncode == 0, plain.stderr
    assert '"shelf_code"' not in plain.stdout
    result = run_cli(
        "blueprint", "test", "--vertical", "retail", "--events", str(events),
        "--config", str(config),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert '"shelf_code": "S-9"' in result.stdout
    assert "events[1]" in result.stderr
    assert "at most 65536 are accepted" in result.stderr, result.stderr
    assert "refused, not mapped: events[1]" in result.stdout


def test_blueprint_test_takes_the_configs_gateway_body_limit(tmp_path: Path) -> None:
    """--config's ``[gateway] max_batch_body_bytes`` is the body size an event must fit.

    An event of 5 KB is taken with the default 256 KiB and refused, in the gateway's words,
    under a configured 4 KiB (for the single-event routes too).
    """
    config = write_config(tmp_path / "c.toml")
    settings = tomllib.loads(config.read_text("utf-8"))
    settings["gateway"] = {"max_batch_body_bytes": 4096, "max_body_bytes": 4096}
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    events = tmp_path / "events.json"
    page = {"type": "page", "anonymousId": "a"}
    events.write_text(
        json.dumps([page, {**page, "properties": {"s": "x" * 5000}}]), encoding="utf-8"
    )
    command = ("blueprint", "test", "--vertical", "retail", "--events", str(events))
    plain = run_cli(*command)
    assert plain.returncode == 0, plain.stderr
    result = run_cli(*command, "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: --events {events}: events[1]: "
        "The request body is larger than 4096 bytes; send less."
    ]
    assert "refused, not mapped: events[1]" in result.stdout


def test_blueprint_test_says_which_routes_take_an_event_when_the_body_limits_differ(
    tmp_path: Path,
) -> None:
    """An event over ``max_batch_body_bytes`` but within ``max_body_bytes`` is mapped, with a line.

    ``/v1/t``, ``/v1/p`` and ``/v1/i`` deliver it, ``/v1/batch`` (datafly.js) answers 413:
    one warning naming both settings. An event over both is refused in the gateway's words.
    """
    config = write_config(tmp_path / "c.toml")
    settings = tomllib.loads(config.read_text("utf-8"))
    settings["gateway"] = {"max_batch_body_bytes": 4096, "max_body_bytes": 8192}
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    page = {"type": "page", "anonymousId": "a"}
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps(
            [
                page,
                {**page, "properties": {"s": "x" * 5000}},
                {**page, "properties": {"s": "x" * 9000}},
            ]
        ),
        encoding="utf-8",
    )
    result = run_cli(
        "blueprint", "test", "--vertical", "retail", "--events", str(events),
        "--config", str(config),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: --events {events}: events[2]: "
        "The request body is larger than 4096 bytes; send less.",
        f"warning: --events {events}: events[1]: fits a /v1/t, /v1/p or /v1/i body "
        "([gateway] max_body_bytes = 8192) but not a /v1/batch body of its own ([gateway] "
        "max_batch_body_bytes = 4096): the gateway answers 413 to it from datafly.js, which "
        "sends every event in a batch; mapped as those routes deliver it.",
    ]
    assert "#2 page -> pageview" in result.stdout
    assert "refused, not mapped: events[2]" in result.stdout


def test_blueprint_test_maps_with_the_configs_source_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config's integration's source_value is the payloads' source; --source-value wins."""
    config = write_config(tmp_path / "c.toml", source_value="WEB_STORE")
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"type": "page", "anonymousId": "a"}]), encoding="utf-8")
    command = ["blueprint", "test", "--vertical", "retail", "--events", str(events)]

    assert main([*command, "--config", str(config)]) == 0
    assert '"source": "WEB_STORE"' in capsys.readouterr().out
    assert main([*command, "--config", str(config), "--source-value", "APP"]) == 0
    assert '"source": "APP"' in capsys.readouterr().out
    assert main(command) == 0
    assert '"source": "DATAFLY"' in capsys.readouterr().out


@pytest.mark.parametrize("command", ["show", "test"])
def test_blueprint_help_lists_the_verticals(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``blueprint show|test --help`` says what --vertical takes."""
    with pytest.raises(SystemExit):
        main(["blueprint", command, "--help"])
    assert ", ".join(VERTICALS) in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["show", "test"])
def test_blueprint_takes_the_vertical_of_the_configs_integration(
    tmp_path: Path, command: str
) -> None:
    """With --config, --vertical may be left out: the integration's vertical is compiled.

    The config's first integration, or --integration's, as the service compiles each; its
    overrides apply (an added global mapping fires in the dry run).
    """
    web = integration_table(
        api_base_url="http://127.0.0.1:9",
        vertical="travel",
        blueprint={"global_mappings": [{"source": "properties.shelf", "target": "shelf_code"}]},
    )
    shop = integration_table(api_base_url="http://127.0.0.1:9", id="shop", pipeline_key="pk_s")
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps({"integrations": [web, shop]}), encoding="utf-8")
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps([{"type": "page", "anonymousId": "a", "properties": {"shelf": "S-9"}}]),
        encoding="utf-8",
    )
    words = ["blueprint", command, "--config", str(config)]
    if command == "test":
        words += ["--events", str(events)]
    first = run_cli(*words)
    assert first.returncode == 0, first.stderr
    if command == "show":
        assert "vertical: travel" in first.stdout.splitlines()
        assert "shelf_code" in first.stdout
    else:
        assert '"shelf_code": "S-9"' in first.stdout
    chosen = run_cli(*words, "--integration", "shop", "--vertical", "retail")
    assert chosen.returncode == 0, chosen.stderr
    assert "shelf_code" not in chosen.stdout
    if command == "show":
        assert "vertical: retail" in chosen.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--vertical", "retail"],
            "error: --vertical retail: integration 'web' in {config} has vertical 'travel', "
            "the preset the service compiles its overrides with; leave out --vertical, or "
            "choose with --integration an integration of that vertical: 'shop'",
        ),
        (
            ["--vertical", "media"],
            "error: --vertical media: integration 'web' in {config} has vertical 'travel', "
            "the preset the service compiles its overrides with; leave out --vertical, or "
            "leave out --config for the plain media preset (no integration in {config} has "
            "vertical 'media')",
        ),
        (
            ["--vertical", "travel", "--integration", "shop"],
            "error: --vertical travel: integration 'shop' in {config} has vertical 'retail', "
            "the preset the service compiles its overrides with; leave out --vertical, or "
            "choose with --integration an integration of that vertical: 'web'",
        ),
    ],
)
def test_blueprint_refuses_a_vertical_that_is_not_the_integrations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Its overrides on another preset would show a blueprint the service never compiles.

    One line naming both verticals and the fix, exit 2, nothing on stdout (show and test).
    """
    web = integration_table(api_base_url="http://127.0.0.1:9", vertical="travel")
    shop = integration_table(api_base_url="http://127.0.0.1:9", id="shop", pipeline_key="pk_s")
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps({"integrations": [web, shop]}), encoding="utf-8")
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"type": "page", "anonymousId": "a"}]), encoding="utf-8")
    for command in (["show"], ["test", "--events", str(events)]):
        assert main(["blueprint", *command, "--config", str(config), *args]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [message.format(config=config)]


@pytest.mark.parametrize("command", [["show"], ["test", "--events", "events.json"]])
def test_blueprint_without_config_needs_a_vertical(command: list[str]) -> None:
    """No --config and no --vertical: one line naming --vertical, its choices and --config."""
    result = run_cli("blueprint", *command)
    assert_clear_error(result)
    assert result.stderr.splitlines() == [
        f"error: --vertical is required without --config; choose one of: {', '.join(VERTICALS)}"
        " (or pass --config to take its integration's vertical)"
    ]


COMMANDS = "serve, check-config, sandbox, gateway, demo, blueprint, send-test-event"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bogus"],
            "amperity-signal: error: unrecognized arguments: --bogus; "
            f"name a command: {COMMANDS} (see amperity-signal --help)",
        ),
        ([], f"amperity-signal: error: name a command: {COMMANDS} (see amperity-signal --help)"),
        (
            ["serve", "--bogus"],
            "amperity-signal serve: error: unrecognized arguments: --bogus; the following "
            "arguments are required: --config (or set AMPERITY_SIGNAL_CONFIG) "
            "(see amperity-signal serve --help)",
        ),
        (
            ["blueprint", "--bogus"],
            "amperity-signal blueprint: error: unrecognized arguments: --bogus; "
            "name a command: show, test (see amperity-signal blueprint --help)",
        ),
        (
            ["--bogus", "serve"],
            "amperity-signal: error: unrecognized arguments: --bogus (see amperity-signal --help)",
        ),
        (
            ["blueprint", "--bogus", "show"],
            "amperity-signal blueprint: error: unrecognized arguments: --bogus "
            "(see amperity-signal blueprint --help)",
        ),
    ],
    ids=[
        "unknown-option",
        "no-command",
        "serve-unknown-option",
        "blueprint-unknown-option",
        "unknown-option-before-serve",
        "unknown-option-before-show",
    ],
)
def test_an_unknown_option_is_named_before_a_missing_argument(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown option and a missing command: both named, and the commands listed.

    argparse reports a missing required argument first, so ``--bogus`` was never named:
    "the following arguments are required: command" (or ``--config`` under ``serve``, even
    for ``--bogus serve``, until session 22).
    """
    monkeypatch.delenv("AMPERITY_SIGNAL_CONFIG", raising=False)  # else --config is not required
    result = run_cli(*args)
    assert_clear_error(result)
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == message
    assert result.stderr.startswith("usage: "), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serv"],
            "amperity-signal: error: argument command: invalid choice: 'serv' (choose from "
            f"{', '.join(repr(c) for c in COMMANDS.split(', '))}); did you mean 'serve'?",
        ),
        (
            ["blueprint", "shwo"],
            "amperity-signal blueprint: error: argument blueprint_command: invalid choice: "
            "'shwo' (choose from 'show', 'test'); did you mean 'show'?",
        ),
        (
            ["serve", "--conifg", "x"],
            "amperity-signal serve: error: unrecognized arguments: --conifg x (did you mean "
            "--config?); the following arguments are required: --config (or set "
            "AMPERITY_SIGNAL_CONFIG) (see amperity-signal serve --help)",
        ),
        (
            ["serve", "--config", "x.toml", "--wokers", "2"],
            "amperity-signal: error: unrecognized arguments: --wokers 2 (did you mean --workers?)",
        ),
        (
            ["sandbox", "--prot", "0"],
            "amperity-signal sandbox: error: unrecognized arguments: --prot 0 "
            "(did you mean --port?)",
        ),
    ],
    ids=["command", "blueprint-command", "serve-option", "option-after-config", "sandbox-option"],
)
def test_a_mistyped_command_or_option_is_told_the_one_it_is_close_to(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slip gets argparse's message and the command or option it is one slip from."""
    monkeypatch.delenv("AMPERITY_SIGNAL_CONFIG", raising=False)
    result = run_cli(*args, timeout=20)
    assert_clear_error(result)
    assert result.stderr.splitlines()[-1] == message


@pytest.mark.parametrize("command", [["serve", "--config", "x.toml"], ["sandbox"]])
def test_a_log_level_written_short_is_told_the_level(command: list[str]) -> None:
    """``--log-level warn`` (Python's alias): "did you mean 'warning'?", then the levels."""
    result = run_cli(*command, "--log-level", "warn", timeout=20)
    assert_clear_error(result)
    assert result.stderr.splitlines()[-1].endswith(
        "argument --log-level: 'warn' is not a log level; did you mean 'warning'? If not, "
        "pass one of debug, info, warning, error"
    )


@pytest.mark.parametrize("command", ["serve", "check-config", "gateway", "send-test-event"])
def test_a_missing_config_names_the_environment_variable_too(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config the error names AMPERITY_SIGNAL_CONFIG, the other way to give it."""
    monkeypatch.delenv("AMPERITY_SIGNAL_CONFIG", raising=False)
    result = run_cli(command)
    assert_clear_error(result)
    assert "--config (or set AMPERITY_SIGNAL_CONFIG)" in result.stderr.splitlines()[-1]


def test_sandbox_help_gives_every_options_default() -> None:
    """Each sandbox option's help says its default: the README's table points at --help."""
    result = run_cli("sandbox", "--help", timeout=20)
    assert result.returncode == 0, result.stderr
    # argparse wraps help text; one option's help runs until the next option's line.
    helps = re.split(r"\n  (?=--)", " ".join(result.stdout.split("\n  -h, --help")[1:]))[1:]
    assert [h.split()[0] for h in helps] == [
        "--host", "--port", "--data", "--profile-delay", "--rate-limit", "--seed",
        "--stop-grace", "--log-level",
    ]  # fmt: skip
    assert [h.split()[0] for h in helps if "default" not in " ".join(h.split())] == []


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["check-config"],
        ["sandbox"],
        ["gateway"],
        ["demo"],
        ["blueprint"],
        ["blueprint", "show"],
        ["blueprint", "test"],
        ["send-test-event"],
    ],
    ids=" ".join,
)
def test_each_commands_help_says_what_it_does(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command's --help opens with a description, and shows --config as one may leave it out.

    The help pages were a usage line and the options only; their usage showed ``--config
    CONFIG`` as required, though AMPERITY_SIGNAL_CONFIG gives it as well.
    """
    monkeypatch.delenv("AMPERITY_SIGNAL_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    usage, description, *_ = capsys.readouterr().out.split("\n\n")
    assert not description.startswith(("options:", "positional arguments:")), description
    assert len(description.split()) >= 8, description  # a sentence, not a word
    if "--config" in usage:
        assert "[--config CONFIG]" in usage, usage

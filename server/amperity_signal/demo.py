"""``amperity-signal demo``: sandbox, service and gateway as processes, with sample traffic.

It prints a summary of what happened and the URLs to look at.

The demo runs on the embedded defaults (sandbox tenant + in-memory cache) and needs
nothing else: it writes its own configuration, pointed at the sandbox it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from amperity_signal.pid_dirs import PidDirs
from amperity_signal.processes import Process, ProcessFailed, start_process
from amperity_signal.sandbox import default_data
from amperity_signal.service.convert import struct_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

PIPELINE_KEY = "pk_demo_storefront"
VISITOR = "anon_demo_visitor"
ALICE = "p-a11ce0000001"
# grpcurl's name for the call the demo prints: the service's full name from the proto.
_SERVICE = pb.DESCRIPTOR.services_by_name["AmperityService"]
BROWSER_PROFILE_METHOD = f"{_SERVICE.full_name}/{_SERVICE.methods_by_name['BrowserProfile'].name}"
HIT_RATIO = "amperity_signal_cache_hit_ratio"
PROFILE_FIELDS = ("EventCount", "LastEventType", "LifetimeOrderValue", "OrderCount", "Persona")
# Where each process the demo starts logs (in its temporary directory, gone at exit).
SANDBOX_LOG = "sandbox.log"
SERVICE_LOG = "service.log"  # the gRPC service and the gateway: one process


# The demo's processes all listen on this machine: a proxy in the environment (a newcomer's
# egress proxy, for the internet) must not carry their calls to each other. The demo's own
# calls skip it (gRPC core reads http_proxy too); its processes get these hosts added to
# NO_PROXY (lower-case first, as httpx and the service read it; both names set alike).
_DIRECT = [("grpc.enable_http_proxy", 0)]
_LOCAL_HOSTS = "localhost,127.0.0.1"


def _direct_env() -> dict[str, str]:
    """NO_PROXY and no_proxy as the environment has them, plus the demo's local hosts."""
    have = os.environ.get("no_proxy", os.environ.get("NO_PROXY", ""))
    hosts = f"{have},{_LOCAL_HOSTS}" if have.strip() else _LOCAL_HOSTS
    return {"no_proxy": hosts, "NO_PROXY": hosts}


def _logs_written(directory: str) -> bool:
    """Whether a process the demo started still writes a log in ``directory``.

    Each holds a shared lock on its log through its stderr (``start_process``): a demo
    killed with SIGKILL leaves its sandbox and service running, and their directory is kept
    until they have exited too (whatever cannot be read is kept as well).
    """
    try:
        logs = [entry.path for entry in os.scandir(directory) if entry.name.endswith(".log")]
    except OSError:
        return True
    return any(_locked(log) for log in logs)


def _locked(path: str) -> bool:
    try:
        with open(path, "rb") as log:
            fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # removed meanwhile: nothing writes it; no locks there: kept
        return os.path.lexists(path)
    return False


# Each demo's logs and configuration: the demo's pid in the name, removed when it stops,
# and swept by a later demo once it was killed (SIGKILL) and what it started is gone.
DEMO_DIRS = PidDirs("amperity-signal-demo-", "demo", in_use=_logs_written)


# The ports the demo prefers, so that the URLs it prints stay the same from run to run;
# another, free one for each that is taken.
SANDBOX_PORT = 8765
GRPC_PORT = 50051
HTTP_PORT = 8080
# How many times a process is started when a port of its own is taken meanwhile.
_PORT_ATTEMPTS = 3


def _port_free(port: int) -> bool:
    """Whether a process could listen on ``port`` of 127.0.0.1 now.

    Looked at with SO_REUSEADDR, as the sandbox, gRPC and uvicorn bind: without it the
    connections a demo just stopped left in TIME-WAIT made its ports look taken, and a
    demo run right after it moved to random ones.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    """A port of 127.0.0.1 that the kernel says is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _free_port(preferred: int) -> int:
    """``preferred`` if a process could listen on it now, else another free port."""
    return preferred if _port_free(preferred) else _any_free_port()


async def _start_on_free_ports(
    start: Callable[[tuple[int, ...]], Awaitable[Process]],
    preferred: tuple[int, ...],
    stop: asyncio.Event,
) -> Process:
    """``start(ports)``: on the ``preferred`` ports where free, on other free ones if not.

    Free when looked at may be taken at the bind: a second demo started at the same moment
    looks at the same ports. A start that failed on a port taken meanwhile is made again
    with another in its place; it used to fail with the process's advice to pass another
    ``--port``, which ``demo`` has no way to take. Not once ``stop`` is set: a Ctrl-C that
    also ended the process being started would otherwise start another after it.
    """
    ports = tuple(map(_free_port, preferred))
    attempt = 1
    while True:
        try:
            return await start(ports)
        except ProcessFailed as failed:
            taken = {port for port in ports if _lost(port, failed)}
            if not taken or attempt == _PORT_ATTEMPTS or stop.is_set():
                raise
        ports = tuple(_any_free_port() if port in taken else port for port in ports)
        attempt += 1


def _lost(port: int, failed: ProcessFailed) -> bool:
    """Whether a process failed to start as ``port`` was taken by another.

    Its own words say so (the sandbox's and the service's alike: ``8765 is already in
    use``) though the other may have stopped since (a ``demo --once`` is over in seconds);
    a port still taken now is as good a reason.
    """
    return f"{port} is already in use" in str(failed) or not _port_free(port)


def demo_config(sandbox_url: str, grpc_port: int, http_port: int, admin_token: str) -> str:
    """The TOML the demo runs the service with, using the sandbox's default demo keys."""
    tenant = default_data().tenants["acme"]
    ingest = next(t.token for t in tenant.tokens if t.name == "ingest")
    profile = next(t.token for t in tenant.tokens if t.name == "profile")
    origin = f"http://127.0.0.1:{http_port}"
    return f"""
[server]
grpc_address = "127.0.0.1:{grpc_port}"
http_address = "127.0.0.1:{http_port}"
grace_period = 5.0
admin_token = "{admin_token}"

[cache]
backend = "memory"
# Short, so the demo's Enrich shows the profile as the events just changed it.
attribute_ttl = 1.0

[[integrations]]
id = "demo-storefront"
pipeline_key = "{PIPELINE_KEY}"
vertical = "retail"
tenant_subdomain = "acme"
tenant_id = "acme"
api_base_url = "{sandbox_url}"
api_key = "{ingest}"
event_stream_id = "esm-2VP6va3Zn"
source_value = "DATAFLY"
profile_api_key = "{profile}"
profile_collection_id = "apc-vPsQheAm"
linking_keys = [
  {{ source = "email", key = "email_sha256", hash = "sha256" }},
  {{ source = "canonical_id", key = "device_cookie" }},
  {{ source = "user_id", key = "customer_id" }},
]
browser_attribute_allowlist = "Persona,LifetimeTier,FavoriteBrand,NextBestOffer"
personalisation_enabled = true
personalisation_context_mappings = '[{{"source": "properties.category", "target": "pageCategory"}}]'
allowed_origins = ["{origin}", "http://localhost:{http_port}"]
"""


def sample_events(visitor: str) -> list[pb.Event]:
    """A short shopping session: anonymous browsing, then an identify as alice."""

    def event(kind: str, event_name: str = "", **properties: Any) -> pb.Event:
        message = pb.Event(
            message_id=str(uuid.uuid4()),
            type=kind,
            event=event_name,
            anonymous_id=visitor,
            context=pb.Context(
                ip="203.0.113.7",
                user_agent="Mozilla/5.0 (demo)",
                locale="en-GB",
                page=pb.Page(url="https://shop.example.com/", path="/", title="Shop"),
                consent=pb.Consent(analytics=True, marketing=False, functional=True),
            ),
        )
        message.timestamp.GetCurrentTime()
        message.properties.update(properties)
        return message

    identify = event("identify")
    identify.user_id = "cust-1001"
    identify.traits.update({"email": "Alice@Example.com"})
    return [
        event("page"),
        event(
            "track",
            "Product Viewed",
            product_id="sku-42",
            name="Trail Jacket",
            brand="Acme Outdoor",
            category="jackets",
            price=129.0,
        ),
        event(
            "track",
            "add_to_cart",
            currency="GBP",
            value=129.0,
            category="jackets",
            items=[
                {
                    "item_id": "sku-42",
                    "item_name": "Trail Jacket",
                    "price": 129.0,
                    "quantity": 1,
                    "item_brand": "Acme Outdoor",
                }
            ],
        ),
        identify,
        event(
            "track",
            "Order Completed",
            order_id="o-1001",
            revenue=129.0,
            currency="GBP",
            products=[
                {
                    "product_id": "sku-42",
                    "name": "Trail Jacket",
                    "price": 129.0,
                    "quantity": 1,
                    "brand": "Acme Outdoor",
                }
            ],
        ),
        event("track", "video_ad_clicked", campaign="winter"),
    ]


@contextlib.asynccontextmanager
async def _stack(
    workdir: Path, admin_token: str, log_level: str, stop: asyncio.Event
) -> AsyncIterator[tuple[Process, Process, str, int]]:
    exe = [sys.executable, "-m", "amperity_signal.cli"]

    async def start_sandbox(ports: tuple[int, ...]) -> Process:
        return await start_process(
            [
                *exe,
                "sandbox",
                *("--port", str(ports[0]), "--profile-delay", "0.5"),
                *("--log-level", log_level),
            ],
            ready="sandbox listening on ",
            log=workdir / SANDBOX_LOG,
            env=_direct_env(),
            name="the demo's sandbox",
        )

    sandbox = await _start_on_free_ports(start_sandbox, (SANDBOX_PORT,), stop)
    try:
        sandbox_url = sandbox.ready_line.split("listening on ", 1)[1].strip()
        config = workdir / "demo.toml"

        async def start_service(ports: tuple[int, ...]) -> Process:
            grpc_port, http_port = ports
            config.write_text(demo_config(sandbox_url, grpc_port, http_port, admin_token))
            return await start_process(
                [*exe, "serve", "--config", str(config), "--log-level", log_level],
                ready="gateway listening on ",
                log=workdir / SERVICE_LOG,
                env=_direct_env(),
                name="the demo's service",
            )

        service = await _start_on_free_ports(start_service, (GRPC_PORT, HTTP_PORT), stop)
        try:
            # The port it listens on, as it says (http://127.0.0.1:PORT).
            http_port = int(service.output_value("gateway listening on ").rsplit(":", 1)[1])
            yield sandbox, service, sandbox_url, http_port
        finally:
            await service.stop()
    finally:
        await sandbox.stop()


async def run_demo(*, once: bool, log_level: str = "info") -> int:
    """Run the demo; with ``once``, exit after the summary, else stay up until Ctrl-C.

    ``log_level`` is the ``--log-level`` of every process it starts: the sandbox, and the
    service with its gateway.

    SIGTERM and SIGINT stop it at any point, and the sandbox and service it started stop
    with it (a plain SIGTERM used to kill the demo alone and leave both running).
    """
    # The Live Events page's admin token: made up per run, since it guards only this demo.
    admin_token = secrets.token_urlsafe(16)
    stop = asyncio.Event()
    with _demo_dir() as tmp, _stop_on_signals(stop):
        try:
            async with _stack(Path(tmp), admin_token, log_level, stop) as stack:
                return await _run(
                    *stack, stop, admin_token=admin_token, log_level=log_level, once=once
                )
        except ProcessFailed:
            # A Ctrl-C reaches the processes being started as well as the demo: one that
            # exited of it before it was ready is the stop asked for, not a failure to tell.
            if stop.is_set():
                return EXIT_STOPPED
            raise


async def _run(
    sandbox: Process,
    service: Process,
    sandbox_url: str,
    http_port: int,
    stop: asyncio.Event,
    *,
    admin_token: str,
    log_level: str,
    once: bool,
) -> int:
    """The demo once its processes are ready: the traffic, the summary, then the wait."""
    grpc_target = service.output_value("grpc listening on ")
    processes = {"sandbox": sandbox, "service (gRPC and gateway)": service}
    traffic = asyncio.create_task(_traffic(grpc_target, sandbox_url, http_port, admin_token))
    try:
        if not await _until_stopped(traffic, stop):
            return EXIT_STOPPED
    except Exception:
        # The traffic failed: a process gone meanwhile is the reason to give, not
        # the traceback of the call that found it gone.
        gone = await _first_exit(processes, within=2.0)
        if gone is None:
            raise
        await _say_gone(*gone, "while the demo sent its traffic")
        return EXIT_PROCESS_GONE
    if once:
        # The addresses just listed were this run's: say they are gone with it.
        print(
            "\nThe demo has stopped (--once): run it without --once to keep these addresses up.",
            flush=True,
        )
        return 0
    print(
        f"\n-- Logs ({log_level} and above) while the demo runs:\n"
        f"  sandbox:       {sandbox.log}\n"
        f"  service:       {service.log}  (gRPC and gateway)"
    )
    print("\nThe demo stays up. Press Ctrl-C to stop.", flush=True)
    gone = await _first_exit(processes, stop=stop)
    if gone is not None:
        await _say_gone(*gone, "while the demo was up")
        return EXIT_PROCESS_GONE
    return 0


# The exit code of a demo whose sandbox or service exited before it was ready or while it
# was up.
EXIT_PROCESS_GONE = 1
# How much of that process's log it prints.
_TAIL_LINES = 10


def _ended(returncode: int | None) -> str:
    """How a process ended, by its exit code (asyncio's negative one: the signal's number)."""
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:  # a real-time signal: no name of its own
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


async def _say_gone(name: str, process: Process, when: str) -> None:
    """Say which process ended and how, with its log's end (gone with the demo's directory)."""
    tail = await asyncio.to_thread(_last_lines, process.log)
    print(
        f"\nThe demo's {name} {_ended(process.proc.returncode)} {when}, so the addresses "
        "it printed no longer answer: the demo stops too. The last lines of its log:\n"
        + "\n".join(f"  {line}" for line in tail),
        file=sys.stderr,
        flush=True,
    )


def _last_lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-_TAIL_LINES:]


async def _first_exit(
    processes: dict[str, Process],
    *,
    stop: asyncio.Event | None = None,
    within: float | None = None,
) -> tuple[str, Process] | None:
    """The first of ``processes`` to exit, waiting until ``stop`` is set or ``within`` passes.

    None when neither exited first. A Ctrl-C reaches the demo and its processes at once;
    the demo hears it long before either has stopped, so an exit after ``stop`` is set is
    the stop's own. ``within``: a call that failed because a process died can fail before
    its exit is reaped.
    """
    exits = {asyncio.create_task(p.proc.wait()): (name, p) for name, p in processes.items()}
    waited: set[asyncio.Task[Any]] = set(exits)
    if stop is not None:
        waited.add(asyncio.create_task(stop.wait()))
    try:
        done, _ = await asyncio.wait(waited, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waited:
            task.cancel()
    if stop is not None and stop.is_set():
        return None
    return next((exits[task] for task in done if task in exits), None)


@contextlib.contextmanager
def _demo_dir() -> Iterator[str]:
    """This demo's directory (after a sweep of those killed demos left), removed at exit."""
    directory = DEMO_DIRS.make()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# The exit code of a demo stopped by a signal before its summary was printed (128 + SIGINT).
EXIT_STOPPED = 130
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT while the demo runs, so its cleanup always runs."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue  # e.g. SIGINT of a background job: whoever started us chose that
        loop.add_signal_handler(sig, stop.set)
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _until_stopped(work: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """Await ``work`` unless ``stop`` is set first (then cancel it); whether it finished."""
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False
    work.result()  # re-raise what the traffic raised
    return True


async def _traffic(grpc_target: str, sandbox_url: str, http_port: int, admin_token: str) -> None:
    print(f"\n== amperity-signal demo: service at {grpc_target}, sandbox at {sandbox_url}")
    async with grpc.aio.insecure_channel(grpc_target, options=_DIRECT) as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        print("\n-- Deliver: a shopping session through the retail blueprint")
        for event in sample_events(VISITOR):
            try:
                response = await stub.Deliver(
                    pb.DeliverRequest(integration_id="demo-storefront", event=event), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                print(
                    f"  {event.event or event.type:<18} FAILED {error.code().name}: "
                    f"{error.details()}"
                )
                continue
            request = response.vendor_request
            print(
                f"  {event.event or event.type:<18} -> type={response.amperity_type:<16} "
                f"{request.method} {request.url} {request.status_code} "
                f"(attempts {request.attempts})"
            )
        async with httpx.AsyncClient(base_url=sandbox_url, trust_env=False) as sandbox:
            await sandbox.post("/_sandbox/flush")
            received = (await sandbox.get("/_sandbox/events", params={"limit": 100})).json()
            profiles = (
                await sandbox.get("/_sandbox/profiles", params={"collection": "apc-vPsQheAm"})
            ).json()
        print(f"\n-- The sandbox received {_count(received)} event(s) on esm-2VP6va3Zn")
        alice = next(
            (p for p in profiles.get("profiles", []) if p.get("profile_id") == ALICE), None
        )
        if alice is not None:
            shown = {k: alice["attributes"].get(k) for k in PROFILE_FIELDS}
            print(f"   and updated profile {ALICE} from them: {json.dumps(shown)}")
        await asyncio.sleep(1.2)  # past the demo's attribute_ttl, so Enrich fetches anew
        follow = sample_events(VISITOR)[0]
        enriched = await stub.Enrich(
            pb.EnrichRequest(integration_id="demo-storefront", event=follow), timeout=10
        )
        attributes = struct_to_dict(enriched.attributes)
        print("\n-- Enrich: the visitor resolved through the identity map")
        print(
            f"  resolved={enriched.resolved} amperity_id={enriched.amperity_id} "
            f"matched_key={enriched.matched_key} "
            f"cache_status={pb.CacheStatus.Name(enriched.cache_status)}"
        )
        print(f"  partner_attrs.amperity = {json.dumps(attributes, default=str)}")
        browser = await stub.BrowserProfile(
            pb.BrowserProfileRequest(pipeline_key=PIPELINE_KEY, anonymous_id=VISITOR), timeout=10
        )
        print("\n-- BrowserProfile: what the page may see (allowlisted)")
        print(f"  {json.dumps(struct_to_dict(browser.attributes))}")
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, trust_env=False) as gateway:
        page = (await gateway.get("/metrics")).text
    print("\n-- Cache, from /metrics")
    print(f"  {cache_hit_line(page)}")
    print("\n-- Look around:")
    print(
        f"  storefront (click Identify: the hero switches on Persona): "
        f"{base}/demo/?pipeline_key={PIPELINE_KEY}"
    )
    print(f"  live events:   {base}/live?token={admin_token}")
    print(f"  metrics:       {base}/metrics")
    print(
        f"  enrich:        {base}/v1/enrich?provider=amperity&anonymous_id={VISITOR}"
        f"&pipeline_key={PIPELINE_KEY}"
    )
    print(f"  sandbox:       {sandbox_url}/_sandbox/events  {sandbox_url}/_sandbox/profiles")
    print(f"  grpcurl:       grpcurl -plaintext {grpc_target} list")
    # The README's grpcurl calls name the example configuration's integration; this one
    # names the demo's, so it can be pasted as it is.
    call = json.dumps({"pipeline_key": PIPELINE_KEY, "anonymous_id": VISITOR})
    print(
        f"                 grpcurl -plaintext -d '{call}' {grpc_target} {BROWSER_PROFILE_METHOD}",
        flush=True,
    )


def cache_hit_line(metrics_page: str) -> str:
    """The overall cache hit ratio of a ``/metrics`` page, as a line of the summary."""
    for family in text_string_to_metric_families(metrics_page):
        for sample in family.samples:
            if sample.name == HIT_RATIO and sample.labels.get("cache") == "all":
                return f'hit ratio {sample.value:.0%} since the start ({HIT_RATIO}{{cache="all"}})'
    return "no cache lookups yet"


def _count(received: Any) -> int:
    if isinstance(received, dict):
        items = received.get("events", [])
        return len(items) if isinstance(items, list) else 0
    return len(received) if isinstance(received, list) else 0

r"""``GET /v1/enrich`` through a uvicorn protocol in process, marked for callgrind.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --dump-before=os_getppid \
        python -m tests.benchmarks.gateway_requests

(with the venv's python) writes the startup and 100 warm-up requests to part 1 and 300
requests to part 2 (``callgrind.out.PID.2``): its ``summary`` line over 300 is the
instructions per request (docs/benchmarks.md, sessions 14-19). The visitor is the
gateway load benchmark's (``bench_gateway.VISITOR``), resolved by the route itself on its
first request, nothing else warmed; the server is ``inprocess.bench_server``'s, the gateway
and the protocol ``inprocess_gateway``'s. ``--bare`` measures the benchmark's bare route
instead. ``--http`` picks the protocol: uvicorn's ``h11`` (the default, as sessions 14-17
measured) or ``httptools`` (llhttp), or ``served``, the subclass ``gateway_server``
configures. With ``--cold`` the caches are evicted before each request and each request
gets its own part (the even ones); run it with ``--cache-sim=yes --LL=2097152,16,64`` and
the misses of those parts are what one cold request touches. ``--cookie`` names the
visitor by the ``_dfid`` cookie, among a site's other cookies, instead of the query.
"""

from __future__ import annotations

import uvloop

from tests.benchmarks.bench_gateway import VISITOR
from tests.benchmarks.enrich_hits import WARM_UP, argument_parser, marked_calls
from tests.benchmarks.gateway_serve import BARE_PATH
from tests.benchmarks.inprocess import bench_server
from tests.benchmarks.inprocess_gateway import PROTOCOLS, bench_gateway, h11_call

ENRICH_QUERY = f"provider=amperity&anonymous_id={VISITOR}".encode()
COOKIE_QUERY = b"provider=amperity"
# A storefront's Cookie header: analytics and consent cookies around the visitor's _dfid.
SITE_COOKIES = (
    "_ga=GA1.1.1234567890.1738000000; _gcl_au=1.1.987654321.1738000000; "
    "OptanonConsent=isGpcEnabled=0&datestamp=Thu+Jan+30+2025&groups=C0001%3A1%2CC0002%3A1; "
    f"_dfid={VISITOR}; cart=3; _ga_ABC123=GS1.1.1738000000.1.1.1738000100.0.0.0"
)


async def run(
    requests: int, *, cold: bool, bare: bool, http: str = "h11", cookie: bool = False
) -> None:
    """``WARM_UP`` requests, then ``requests`` between ``os.getppid()`` markers."""
    settings, service, _ = bench_server()
    await service.start()
    _, config = bench_gateway(service, settings)
    if http == "served":
        config.load()
        protocol = config.http_protocol_class
    else:
        protocol = PROTOCOLS[http]
    path, query = (BARE_PATH, b"") if bare else ("/v1/enrich", ENRICH_QUERY)
    if cookie:
        query = COOKIE_QUERY
    call = h11_call(config, path, query, protocol, SITE_COOKIES if cookie else "")
    for i in range(WARM_UP):
        await call(i)
    await marked_calls(requests, call, cold=cold)
    await service.stop(0)


def main() -> None:
    """Parse the arguments and run."""
    parser = argument_parser(__doc__ or "", "request")
    parser.add_argument("--bare", action="store_true", help="the bare route instead")
    parser.add_argument(
        "--http",
        choices=[*PROTOCOLS, "served"],
        default="h11",
        help="uvicorn's protocol to drive (served: the one gateway_server configures)",
    )
    parser.add_argument(
        "--cookie", action="store_true", help="the visitor in a _dfid cookie, not the query"
    )
    args = parser.parse_args()
    uvloop.run(run(args.calls, cold=args.cold, bare=args.bare, http=args.http, cookie=args.cookie))


if __name__ == "__main__":
    main()

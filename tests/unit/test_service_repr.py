"""What a built Service shows of itself: no secret of the configuration it was built from."""

from __future__ import annotations

from amperity_signal.service.app import build_server
from tests.support import integration_dict, mint_keys, settings_for

REDIS_PASSWORD = "Redis-Passw0rd-canary"


async def test_the_redis_password_is_no_part_of_a_built_services_repr() -> None:
    """``repr(Service)`` leaves the Redis URL out, as ``CacheSettings``' repr does.

    ``Service.redis_url`` (kept for the start's probe) was a plain dataclass field: the
    repr of the Service that ``serve`` builds showed the URL, password and all.
    """
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"
    settings = settings_for(
        integration_dict("http://sandbox.test", mint_keys(ttl=365 * 86400)),
        cache={"backend": "redis", "redis_url": url},
    )
    service = build_server(settings, bind=False, report=True)
    try:
        assert service.redis_url == url  # still there, for the probe at start
        assert REDIS_PASSWORD not in repr(service)
        assert REDIS_PASSWORD not in str(service)
    finally:
        await service.registry.aclose()
        await service.cache.close()

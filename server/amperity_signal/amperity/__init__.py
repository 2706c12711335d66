"""The Amperity client: the only code that knows Amperity's URLs, headers and statuses.

Public API::

    AmperityClient(integration, limiter=..., metrics=...)   post_event / lookup / get_profile
    MemoryRateLimiter(), RedisRateLimiter(redis_client)      per-tenant sliding-window limits
    IngestResult, Profile, VendorCall                        what calls return
    CallProgress, Stage                                      where a call stands (cancelled)
    vendor_call(error)                                       the VendorCall an error carries
    jwt_expiry(token), expiry_warnings(integration, now)     API key expiry checks
"""

from amperity_signal.amperity.client import AmperityClient, vendor_call
from amperity_signal.amperity.models import IngestResult, Profile, VendorCall
from amperity_signal.amperity.progress import CallProgress, Stage
from amperity_signal.amperity.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from amperity_signal.amperity.tokens import expiry_warnings, jwt_expiry

__all__ = [
    "AmperityClient",
    "CallProgress",
    "IngestResult",
    "MemoryRateLimiter",
    "Profile",
    "RateLimiter",
    "RedisRateLimiter",
    "Stage",
    "VendorCall",
    "expiry_warnings",
    "jwt_expiry",
    "vendor_call",
]

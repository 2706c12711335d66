"""Where a tenant's Amperity API is: the one host rule, for configuration and the client.

The base URL is ``https://{tenant_subdomain}.amperity.com`` unless ``api_base_url``
overrides it, and every host under ``amperity.com`` (``app.amperity.com``,
``app-aws-apse2.amperity.com``) is Amperity's, sharing the tenant's one rate limit (the API
notes, "Hosts and common headers"). The rule sits beside ``amperity.endpoints`` rather than
in it: configuration derives the default base URL, and the gateway, which loads the
configuration, must not load the Amperity client (``tests/unit/test_module_walls.py``).
"""

from __future__ import annotations

AMPERITY_DOMAIN = "amperity.com"
"""Amperity's own domain: its tenants' subdomains and shared hosts are all below it."""


def tenant_base_url(tenant_subdomain: str) -> str:
    """The default base URL of a tenant: ``https://{tenant_subdomain}.amperity.com``."""
    return f"https://{tenant_subdomain}.{AMPERITY_DOMAIN}"


def is_amperity_host(host: str) -> bool:
    """Whether ``host`` is Amperity's (``amperity.com`` or any host below it)."""
    return host == AMPERITY_DOMAIN or host.endswith(f".{AMPERITY_DOMAIN}")

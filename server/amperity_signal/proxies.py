"""Outbound proxies from the environment, read as httpx reads them (``trust_env``).

``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY`` (lower case too, which wins) name the
proxy for http, https or any URL; a value without a scheme means ``http://``. ``NO_PROXY``
lists what is reached directly, comma-separated: ``*`` (nothing goes through a proxy), a
host (it and its subdomains), ``.host`` (its subdomains only), an IP address or
``localhost`` (exactly), each optionally with ``:port``, or a ``scheme://host`` pattern.
The most specific rule wins, as in httpx: one with a port, then the longest host, then a
named scheme. Two differences: a ``:port`` rule also matches a URL that leaves that port
implicit (``NO_PROXY=host:443`` covers ``https://host/``); httpx compares it with ``None``.
And a CIDR range (``10.0.0.0/8``, ``::1/128``, ``192.168.1.5/24`` for its network) covers
every IP address literal in it, as curl and Go read it; httpx takes it for a host name
that matches nothing. A host name is not resolved to be matched against a range, so
``localhost`` is not in ``127.0.0.0/8``: list names as names.

A proxy URL's credentials (``http://user:password@proxy:3128``) are turned into a
``Proxy-Authorization`` header at load and never kept in a URL: what is shown, logged or
put in an error is the URL with ``[REDACTED]`` in their place, and ``secrets`` lists every
form they could be seen in, for the log scrubber.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from yarl import URL

from amperity_signal.errors import ConfigProblem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PROXY_SCHEMES = ("http", "https")
_REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Proxy:
    """One proxy to send through.

    Attributes:
        url: The proxy's URL, without credentials.
        authorization: The ``Proxy-Authorization`` value for its credentials, or None.
        shown: The URL as it may be shown: credentials replaced by ``[REDACTED]``.
        variable: The environment variable it came from (``HTTPS_PROXY``...).
    """

    url: URL
    # Carries the credentials: kept out of repr so tracebacks and logs never show it.
    authorization: str | None = field(repr=False)
    shown: str
    variable: str


@dataclass(frozen=True)
class _Rule:
    """A URL pattern (httpx's ``URLPattern``) and the proxy for URLs it matches (None: direct)."""

    scheme: str  # "" for any
    # "" for any; "*.x" subdomains of x; "*x" x and its subdomains; a CIDR range's text
    # (then ``network`` is set); else exactly
    host: str
    port: int | None
    proxy: Proxy | None
    network: IPNetwork | None = None

    @property
    def priority(self) -> tuple[bool, int, int]:
        """Sort key: most specific first, as httpx orders its mounts."""
        return (self.port is None, -len(self.host), -len(self.scheme))

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """Whether a URL with this scheme, (lower-case) host and effective port matches."""
        if self.scheme and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        return self._matches_host(host)

    def _matches_host(self, host: str) -> bool:
        pattern = self.host
        if not pattern:
            return True
        if self.network is not None:
            address = _ip(host)
            return address is not None and address in self.network
        if pattern.startswith("*."):
            return host.endswith(pattern[1:])
        if pattern.startswith("*"):
            return host == pattern[1:] or host.endswith("." + pattern[1:])
        return host == pattern


@dataclass(frozen=True)
class ProxyRules:
    """Which proxy, if any, each URL goes through; empty (falsy) when none is configured.

    Build it with ``ProxyRules.from_environ(os.environ)``; ``problems`` lists the variables
    that could not be used (the configuration refuses to start with any).
    """

    rules: tuple[_Rule, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return any(rule.proxy is not None for rule in self.rules)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyRules:
        """Read ``*_PROXY`` and ``NO_PROXY`` as ``urllib.request.getproxies`` does for httpx."""
        found = _proxy_variables(environ)
        rules: list[_Rule] = []
        problems: list[ConfigProblem] = []
        secrets: list[str] = []
        for scheme in ("http", "https", "all"):
            if scheme not in found:
                continue
            variable, value = found[scheme]
            proxy = _parse_proxy(variable, value, problems)
            if proxy is not None:
                rules.append(_Rule("" if scheme == "all" else scheme, "", None, proxy))
                secrets += _credential_forms(value)
        if "no" in found:
            entries = [entry.strip() for entry in found["no"][1].split(",")]
            if "*" in entries:
                rules = []
            else:
                rules += [_no_proxy_rule(entry) for entry in entries if entry]
        rules.sort(key=lambda rule: rule.priority)
        return cls(tuple(rules), tuple(problems), tuple(dict.fromkeys(secrets)))

    def proxy_for(self, scheme: str, host: str, port: int | None) -> Proxy | None:
        """The proxy for a URL (None: connect directly); ``port`` None is the default one."""
        host = host.lower()
        effective = port if port is not None else _DEFAULT_PORTS.get(scheme, 0)
        for rule in self.rules:
            if rule.matches(scheme, host, effective):
                return rule.proxy
        return None

    def describe(self) -> str:
        """One line for the start-up log: each proxy (credentials redacted) and NO_PROXY."""
        proxies = [f"{r.proxy.variable}={r.proxy.shown}" for r in self.rules if r.proxy]
        direct = [_pattern_text(r) for r in self.rules if r.proxy is None]
        text = ", ".join(proxies)
        return f"{text}; NO_PROXY: {', '.join(direct)}" if direct else text


def _proxy_variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{"http": (variable, value), ...}``: urllib's reading, with the variables' names.

    A lower-case variable wins over its upper-case twin, and a set-but-empty lower-case one
    unsets it; under CGI (``REQUEST_METHOD`` set) ``HTTP_PROXY`` is ignored, since a client
    can set it through a ``Proxy:`` request header.
    """
    found: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy") and name != name.lower():
            found[name.lower()[:-6]] = (name, value)
    if "REQUEST_METHOD" in environ:
        found.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy") and name == name.lower():
            if value:
                found[name[:-6]] = (name, value)
            else:
                found.pop(name[:-6], None)
    return found


def _parse_proxy(variable: str, value: str, problems: list[ConfigProblem]) -> Proxy | None:
    """The proxy a variable names, or None with a problem saying how to write it."""
    text = value.strip() if "://" in value else f"http://{value.strip()}"
    try:
        url = URL(text)
        host, port = url.host, url.port
    except ValueError:
        host, port, url = None, None, URL()
    shown = _redacted(text)
    if host is None or port is None or url.scheme not in _PROXY_SCHEMES:
        why = (
            f"is {shown}, a {url.scheme} proxy: Amperity calls go through HTTP proxies only."
            if host and url.scheme not in _PROXY_SCHEMES
            else f"is {shown}, which is not a proxy URL (scheme://host:port)."
        )
        problems.append(
            ConfigProblem(
                f"environment variable {variable}",
                why,
                "set it to http://host:port (with credentials, http://user:password@host:port; "
                "percent-encode @ : / in them), or unset it.",
            )
        )
        return None
    authorization = None
    if url.raw_user is not None:
        userinfo = f"{url.user or ''}:{url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(userinfo).decode("ascii")
    bare = URL.build(scheme=url.scheme, host=host, port=port, encoded=True)
    return Proxy(url=bare, authorization=authorization, shown=shown, variable=variable)


def _redacted(text: str) -> str:
    """A proxy URL with its credentials replaced (as written, before any parsing)."""
    scheme, _, rest = text.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    return f"{scheme}://{_REDACTED}@{hostport}" if at and userinfo else text


def _credential_forms(value: str) -> list[str]:
    """Every form a proxy URL's credentials could be seen in, for the log scrubber.

    Short passwords are not scrubbed alone (``logs.SCRUB_MIN_LENGTH``), so the longer forms
    that carry them (``user:password@host``, the whole value) are listed too.
    """
    text = value.strip()
    rest = text.partition("://")[2] if "://" in text else text
    userinfo, at, hostport = rest.rpartition("@")
    if not at or not userinfo:
        return []
    user, _, password = userinfo.partition(":")
    forms = [password, unquote(password), userinfo, unquote(userinfo), f"{userinfo}@{hostport}"]
    encoded = f"{unquote(user)}:{unquote(password)}".encode()
    forms += [base64.b64encode(encoded).decode("ascii"), text]
    return [form for form in dict.fromkeys(forms) if form]


def _no_proxy_rule(entry: str) -> _Rule:
    """The direct-connection rule of one ``NO_PROXY`` entry, as httpx builds its pattern."""
    scheme = ""
    if "://" in entry:
        scheme, _, entry = entry.partition("://")
        scheme = "" if scheme == "all" else scheme.lower()
    host, port = _host_port(entry)
    network = _network(host)
    if network is not None:
        return _Rule(scheme, str(network), port, None, network)
    if scheme:
        return _Rule(scheme, host, port, None)
    if _is_ip(host) or host == "localhost":
        return _Rule("", host, port, None)
    return _Rule("", f"*{host}", port, None)


def _host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]`` (an IPv6 address bare or in brackets), host lower-cased."""
    text = text.strip().rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    port = int(port_text) if port_text.isdigit() else None
    return host.lower(), port


def _is_ip(host: str) -> bool:
    return _ip(host) is not None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host is written as (an IPv6 one bare or in brackets), or None."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _network(host: str) -> IPNetwork | None:
    """The range a ``NO_PROXY`` entry's host writes in CIDR notation, or None.

    Host bits are allowed (``192.168.1.5/24`` is ``192.168.1.0/24``), as curl allows them.
    """
    if "/" not in host:
        return None
    try:
        return ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None


def _pattern_text(rule: _Rule) -> str:
    host = rule.host.removeprefix("*") if not rule.host.startswith("*.") else rule.host[1:]
    text = f"{rule.scheme}://{host}" if rule.scheme else host
    return f"{text}:{rule.port}" if rule.port is not None else text

"""Outbound proxies from the environment, read as httpx reads them (``trust_env``).

``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY`` (lower case too, which wins) name the
proxy for http, https or any URL; a value without a scheme means ``http://``, one without a
port the scheme's default (80, or 443 for ``https://``), as httpx reads them. ``NO_PROXY``
lists what is reached directly, comma-separated: ``*`` (nothing goes through a proxy), a
host (it and its subdomains), ``.host`` (its subdomains only), an IP address or
``localhost`` (exactly), each optionally with ``:port``, or a ``scheme://host`` pattern.
The most specific rule wins, as in httpx: one with a port, then the longest host, then a
named scheme. Two differences: a ``:port`` rule also matches a URL that leaves that port
implicit (``NO_PROXY=host:443`` covers ``https://host/``); httpx compares it with ``None``.
And a CIDR range (``10.0.0.0/8``, ``::1/128``, ``192.168.1.5/24`` for its network) covers
every IP address literal in it, as curl and Go read it; httpx takes it for a host name
that matches nothing. An IPv6 range may also be written in brackets, ``[fd00::]/8`` (then
with an optional ``:port``, ``[fd00::]/8:443``) or ``[fd00::/8]``, and reads as the bare
form; curl and Go match nothing with a bracketed range, so a ``NO_PROXY`` shared with
them is better written bare. A host name is not resolved to be matched against a range,
so ``localhost`` is not in ``127.0.0.0/8``: list names as names. An entry with a ``/``
that is no range (``10.0.0.0/33``, ``10.0.0/8``) matches nothing, as in curl; since
``NO_PROXY`` is shared with other tools it is not refused, but ``warnings`` names it.

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
from amperity_signal.redaction import REDACTED

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PROXY_SCHEMES = ("http", "https")


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
    that could not be used (the configuration refuses to start with any), ``warnings`` the
    ``NO_PROXY`` entries ignored because they match nothing (when a proxy is configured).
    """

    rules: tuple[_Rule, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    warnings: tuple[str, ...] = ()
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
        warnings: list[str] = []
        if "no" in found:
            variable, value = found["no"]
            entries = [entry.strip() for entry in value.split(",")]
            if "*" in entries:
                rules = []
            elif rules:  # without a proxy, NO_PROXY changes nothing here: no warnings
                for entry in filter(None, entries):
                    rule, unusable = _no_proxy_rule(entry)
                    rules.append(rule)
                    if unusable is not None:
                        warnings.append(_ignored(variable, entry, unusable))
        rules.sort(key=lambda rule: rule.priority)
        return cls(tuple(rules), tuple(problems), tuple(warnings), tuple(dict.fromkeys(secrets)))

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
    """The proxy a variable names, or None with a problem saying how to write it.

    A URL without a port (``http://proxy.internal``, ``http://proxy:``) is the scheme's
    default port, 80 for ``http://`` and 443 for ``https://``, as httpx (httpcore) and
    urllib take it (curl would try 1080).
    """
    text = value.strip() if "://" in value else f"http://{value.strip()}"
    shown = _redacted(text)
    try:
        url = URL(text)
        host = url.host
    except ValueError:
        host, url = None, URL()
    port_text = _port_text(text)
    why = _unusable(text, shown, url.scheme, host, port_text)
    if why is not None or not host:  # no host always has a why: this narrows host
        problems.append(
            ConfigProblem(f"environment variable {variable}", why or shown, _PROXY_URL_FIX)
        )
        return None
    port = int(port_text) if port_text else _DEFAULT_PORTS[url.scheme]
    authorization = None
    if url.raw_user is not None:
        userinfo = f"{url.user or ''}:{url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(userinfo).decode("ascii")
    bare = URL.build(scheme=url.scheme, host=host, port=port)
    # As it may be shown: the port always written, so "no port" reads as the port it means.
    address = f"[{host}]" if ":" in host else bare.raw_host
    credentials = f"{REDACTED}@" if url.raw_user is not None else ""
    shown = f"{url.scheme}://{credentials}{address}:{port}"
    return Proxy(url=bare, authorization=authorization, shown=shown, variable=variable)


_PROXY_URL_FIX = (
    "set it to http://host:port (with credentials, http://user:password@host:port; "
    "percent-encode @ : / ? # in them; an IPv6 address in brackets, http://[fd00::1]:3128), "
    "or unset it. Without a port, http:// means port 80 and https:// 443."
)


def _unusable(text: str, shown: str, scheme: str, host: str | None, port_text: str) -> str | None:
    """Why a proxy URL cannot be used, or None.

    Only ``shown`` (credentials redacted) is quoted: with an unencoded ``/`` in the
    password, what a parser reads as the host and the port is part of the credentials.
    """
    hostport = _authority(text).rpartition("@")[2]
    if "@" in text.partition("://")[2] and "@" not in _authority(text):
        return (
            f"is {shown}, whose credentials hold a / ? or # that is not percent-encoded, "
            "which ends the host part before the @."
        )
    if not hostport.startswith("[") and hostport.count(":") > 1:
        return f"is {shown}, an IPv6 address without brackets, which cannot be told from its port."
    if port_text and not (
        port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65_536
    ):
        return f"is {shown}, whose port is not a number from 1 to 65535."
    if host and scheme not in _PROXY_SCHEMES:
        return f"is {shown}, a {scheme} proxy: Amperity calls go through HTTP proxies only."
    if not host:
        return f"is {shown}, which is not a proxy URL (scheme://host:port)."
    return None


def _port_text(url: str) -> str:
    """The port of a URL as written ("" for none or an empty one)."""
    hostport = _authority(url).rpartition("@")[2]
    if hostport.startswith("["):
        return hostport.partition("]")[2].removeprefix(":")
    return hostport.rpartition(":")[2] if ":" in hostport else ""


def _authority(url: str) -> str:
    """The ``[userinfo@]host[:port]`` of a URL as written, up to its path, query or fragment."""
    rest = url.partition("://")[2]
    for end in "/?#":
        rest = rest.partition(end)[0]
    return rest


def _redacted(text: str) -> str:
    """A proxy URL with its credentials replaced (as written, before any parsing)."""
    scheme, _, rest = text.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    return f"{scheme}://{REDACTED}@{hostport}" if at and userinfo else text


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


def _no_proxy_rule(entry: str) -> tuple[_Rule, str | None]:
    """The direct-connection rule of one ``NO_PROXY`` entry, as httpx builds its pattern.

    Also why the entry matches nothing, when it is written as a range that is none.
    """
    scheme = ""
    if "://" in entry:
        scheme, _, entry = entry.partition("://")
        scheme = "" if scheme == "all" else scheme.lower()
    host, port = _host_port(entry)
    network, unusable = _network(host)
    if network is not None:
        return _Rule(scheme, str(network), port, None, network), None
    if scheme:
        return _Rule(scheme, host, port, None), unusable
    if _is_ip(host) or host == "localhost":
        return _Rule("", host, port, None), None
    return _Rule("", f"*{host}", port, None), unusable


def _ignored(variable: str, entry: str, why: str) -> str:
    """The start-up warning for a ``NO_PROXY`` entry that can match nothing."""
    return (
        f"{variable} entry {entry!r} is ignored: {why}, so it covers no address (the "
        "addresses meant still go through the proxy). Write a range as address/bits (10.0.0.0/8, "
        "fd00::/8), or remove the entry."
    )


def _host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]`` (an IPv6 address bare or in brackets), host lower-cased.

    A bracketed IPv6 range keeps its prefix length: ``[fd00::]/8:443`` is ``fd00::/8``, 443.
    """
    text = text.strip().rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith("/"):
            bits, _, rest = rest.partition(":")
            host += bits
            rest = ":" + rest if rest else ""
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


def _network(host: str) -> tuple[IPNetwork | None, str | None]:
    """The range a ``NO_PROXY`` entry's host writes in CIDR notation, or why it is none.

    ``(None, None)`` for a host without ``/`` (no range meant). Host bits are allowed
    (``192.168.1.5/24`` is ``192.168.1.0/24``), as curl allows them.
    """
    if "/" not in host:
        return None, None
    address_text, _, bits = host.partition("/")
    address = _ip(address_text)
    if address is None:
        return None, f"{address_text!r} before the / is not an IP address"
    if not (bits.isascii() and bits.isdigit()):
        return None, f"{bits!r} after the / is not a number of bits"
    if int(bits) > address.max_prefixlen:
        most = address.max_prefixlen
        return None, f"/{bits} is more than the {most} bits of an IPv{address.version} address"
    try:
        return ipaddress.ip_network(f"{address}/{int(bits)}", strict=False), None
    except ValueError as error:  # e.g. an IPv6 scope (fe80::1%eth0), which no range has
        return None, str(error)


def _pattern_text(rule: _Rule) -> str:
    host = rule.host.removeprefix("*") if not rule.host.startswith("*.") else rule.host[1:]
    if rule.port is not None and ":" in host:  # IPv6: brackets keep the port apart
        address, slash, bits = host.partition("/")
        host = f"[{address}]{slash}{bits}"
    text = f"{rule.scheme}://{host}" if rule.scheme else host
    return f"{text}:{rule.port}" if rule.port is not None else text

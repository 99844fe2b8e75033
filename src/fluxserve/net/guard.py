"""Outgoing HTTP to user-supplied URLs (webhooks, image inputs), guarded against SSRF.

Only ``http``/``https``. The host is resolved once and *every* address it resolves to must be
global (not loopback, private, link-local, CGNAT, multicast, reserved or a cloud metadata address;
IPv4-mapped IPv6 is unwrapped first); the connection then goes to the vetted address, so a DNS
answer cannot change between the check and the connect (rebinding). A followed redirect opens a new
connection, which passes the same check. An operator setting allows loopback, for tests and
local development only.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx


class UnsafeURL(Exception):
    """The URL may not be fetched: wrong scheme, or it resolves to a non-public address."""


@dataclass(frozen=True)
class NetPolicy:
    """What outgoing requests may reach."""

    allow_loopback: bool = False


_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64: only ever routed inside one network, so never a public destination.
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, IPv4-compatible, NAT64, 6to4, Teredo): where
    NAT64 or 6to4 exists, a packet to it reaches them, so they must pass the same check."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return [low32]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [client, server]
    return []


def check_address(address: str, policy: NetPolicy) -> None:
    """Raise :class:`UnsafeURL` unless ``address`` (an IP literal) may be contacted."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            raise UnsafeURL(f"{address} is in the local-use NAT64 prefix 64:ff9b:1::/48, not a public address")
        for inner in embedded_ipv4(ip):
            try:
                check_address(str(inner), policy)
            except UnsafeURL as exc:
                raise UnsafeURL(f"{address} embeds {inner}, which is not a public address") from exc
        if ip.ipv4_mapped is not None:
            return  # the embedded IPv4 address passed: that is where the packet goes
    if ip.is_loopback and policy.allow_loopback:
        return
    if not ip.is_global or ip.is_multicast:
        raise UnsafeURL(f"{address} is not a public address")


def check_url(url: str) -> None:
    """Raise :class:`UnsafeURL` for anything but an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise UnsafeURL(f"not a valid URL: {url[:80]!r}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise UnsafeURL(f"only http and https URLs are allowed, not {url[:80]!r}")


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address, None)
    return list(seen)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that vets every resolved address and connects to the vetted one."""

    def __init__(self, policy: NetPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse unless every address is allowed, connect to the first."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout or 10)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = _unique(str(info[4][0]) for info in infos)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            check_address(address, self._policy)
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: user URLs do not reach local sockets."""
        raise UnsafeURL("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep (part of the backend interface)."""
        await self._inner.sleep(seconds)


def guarded_client(policy: NetPolicy, *, timeout: httpx.Timeout, follow_redirects: bool = False) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through :class:`GuardedBackend`.

    With ``follow_redirects`` (image inputs), up to 5 redirects are followed; each hop is a new
    connection and so is vetted again. Webhooks keep them off: a 3xx counts as a failed delivery.
    """
    context = _ssl_context()
    transport = httpx.AsyncHTTPTransport(retries=0, verify=context)
    # httpx does not take a network backend; swap the connection pool for one that uses ours
    # (TLS still verifies the certificate of the URL's host name, not of the IP).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        network_backend=GuardedBackend(policy),
        max_connections=50,
        keepalive_expiry=5.0,
    )
    return httpx.AsyncClient(
        transport=transport, follow_redirects=follow_redirects, max_redirects=5, timeout=timeout, trust_env=False
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every guarded client: building one reads the CA bundle (~25 ms), which a
    client made per download (the LoRA cache makes one per fetch) would otherwise pay each time."""
    return httpx.create_ssl_context()

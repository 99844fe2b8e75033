"""The SSRF guard: which addresses outgoing requests may reach."""

from __future__ import annotations

import pytest

from fluxserve.net.guard import GuardedBackend, NetPolicy, UnsafeURL, check_address, check_url


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1",
     "100.64.0.1", "0.0.0.0", "fd00::1", "fe80::1", "224.0.0.1", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeURL):
        check_address(address, NetPolicy())


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo (client address obfuscated)
        ("::ffff:169.254.169.254", "169.254.169.254"),
    ],
)
def test_ipv6_forms_that_embed_ipv4_are_refused_naming_it(address: str, embedded: str) -> None:
    with pytest.raises(UnsafeURL, match=f"embeds {embedded}"):
        check_address(address, NetPolicy())


def test_local_use_nat64_is_refused_and_public_embedded_addresses_pass() -> None:
    with pytest.raises(UnsafeURL, match="64:ff9b:1::/48"):
        check_address("64:ff9b:1::a00:1", NetPolicy())
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"):
        check_address(address, NetPolicy())


def test_public_addresses_pass_and_loopback_only_when_allowed() -> None:
    check_address("93.184.216.34", NetPolicy())
    check_address("2606:4700::1111", NetPolicy())
    check_address("127.0.0.1", NetPolicy(allow_loopback=True))
    with pytest.raises(UnsafeURL):
        check_address("10.0.0.1", NetPolicy(allow_loopback=True))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "http://", "/relative"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "017700000001", "localhost"])
async def test_numeric_and_named_forms_of_loopback_are_refused_before_connecting(host: str) -> None:
    with pytest.raises(UnsafeURL):
        await GuardedBackend(NetPolicy()).connect_tcp(host, 80, timeout=2)

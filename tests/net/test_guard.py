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

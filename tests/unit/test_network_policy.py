"""Which networks webhooks may reach (realtime/webhooks/policy.py), and the resolver that applies it."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import ResolveResult

from app.settings import DENY_NETWORKS
from realtime.webhooks.client import PolicyResolver
from realtime.webhooks.policy import DestinationBlockedError, NetworkPolicy

DEFAULT = NetworkPolicy(allow=(), deny=DENY_NETWORKS)  # the settings' default lists
PRIVATE = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")  # the README's
PRODUCTION_DENY = (*DENY_NETWORKS, *PRIVATE)


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
     "::", "fe80::1", "ff02::1"],
)  # fmt: skip
def test_the_default_denies_metadata_unspecified_multicast_and_reserved(address: str) -> None:
    assert not DEFAULT.permits(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "203.0.113.9", "2001:db8::1"])
def test_the_default_allows_loopback_private_and_public(address: str) -> None:
    assert DEFAULT.permits(address)


def test_production_deny_list_refuses_loopback_and_private_networks() -> None:
    policy = NetworkPolicy(allow=(), deny=PRODUCTION_DENY)
    for address in ("127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.31.255.255", "192.168.0.1", "fd00::1"):
        assert not policy.permits(address), address
    assert policy.permits("172.32.0.1") and policy.permits("203.0.113.9") and policy.permits("2001:db8::1")


def test_an_allow_list_admits_only_its_networks_and_deny_wins_over_it() -> None:
    policy = NetworkPolicy(allow=["203.0.113.0/24", "2001:db8::/32"], deny=["203.0.113.7/32"])
    assert policy.permits("203.0.113.5") and policy.permits("2001:db8::5")
    assert not policy.permits("203.0.113.7")  # allowed network, denied address: deny wins
    assert not policy.permits("127.0.0.1") and not policy.permits("198.51.100.1") and not policy.permits("::1")


def test_an_allow_list_of_one_family_admits_nothing_of_the_other() -> None:
    assert not NetworkPolicy(allow=["203.0.113.0/24"], deny=()).permits("2001:db8::1")
    assert not NetworkPolicy(allow=["2001:db8::/32"], deny=()).permits("203.0.113.1")


def test_ipv4_mapped_ipv6_is_judged_as_the_ipv4_address_it_carries() -> None:
    default = DEFAULT
    assert not default.permits("::ffff:169.254.169.254") and not default.permits("::ffff:a9fe:a9fe")
    assert default.permits("::ffff:127.0.0.1")
    allow_v4 = NetworkPolicy(allow=["203.0.113.0/24"], deny=())
    assert allow_v4.permits("::ffff:203.0.113.1") and not allow_v4.permits("::ffff:198.51.100.1")


def test_a_zone_id_is_ignored() -> None:
    assert not DEFAULT.permits("fe80::1%eth0")
    assert NetworkPolicy(allow=(), deny=()).permits("fe80::1%eth0")
    assert not NetworkPolicy(allow=(), deny=["::1/128"]).permits("::1%lo")


def test_host_bits_in_a_network_are_accepted() -> None:
    assert not NetworkPolicy(allow=(), deny=["10.1.2.3/8"]).permits("10.200.0.1")


def test_permitted_keeps_the_allowed_addresses_in_order_without_repeats() -> None:
    policy = NetworkPolicy(allow=(), deny=["10.0.0.0/8"])
    got = policy.permitted("h", ["10.0.0.1", "203.0.113.2", "::1", "203.0.113.2", "10.0.0.2"])
    assert got == ["203.0.113.2", "::1"]


def test_permitted_refuses_a_host_with_no_allowed_address_naming_them() -> None:
    with pytest.raises(DestinationBlockedError, match=r"^metadata resolves to 169.254.169.254, fe80::1: not an"):
        DEFAULT.permitted("metadata", ["169.254.169.254", "fe80::1", "169.254.169.254"])


class _Answers:
    """Stands in for the system resolver: fixed answers for any host."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
             "proto": 0, "flags": 0}
            for a in self.addresses
        ]  # fmt: skip

    async def close(self) -> None:
        pass


def _resolver(policy: NetworkPolicy, *answers: str) -> PolicyResolver:
    resolver = PolicyResolver(policy)
    resolver._system = _Answers(*answers)  # type: ignore[assignment]
    return resolver


async def test_the_resolver_returns_only_permitted_addresses_for_aiohttp_to_connect_to() -> None:
    policy = NetworkPolicy(allow=(), deny=["169.254.0.0/16", "::1/128"])
    resolver = _resolver(policy, "169.254.169.254", "::1", "203.0.113.4")
    got = await resolver.resolve("rebinding.example", 443, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["hostname"]) for r in got] == [("203.0.113.4", 443, "rebinding.example")]


async def test_the_resolver_refuses_a_name_with_only_denied_addresses() -> None:
    resolver = _resolver(DEFAULT, "169.254.169.254", "::ffff:169.254.169.254")
    with pytest.raises(DestinationBlockedError, match="not an allowed network"):
        await resolver.resolve("metadata.example", 80)
    assert not issubclass(DestinationBlockedError, OSError)  # aiohttp would wrap an OSError as a DNS error


@pytest.mark.parametrize(
    "address",
    ["::169.254.169.254", "::a9fe:a9fe",  # IPv4-compatible (::/96)
     "64:ff9b::169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::224.0.0.1",  # NAT64 (RFC 6052)
     "2002:a9fe:a9fe::", "2002:a9fe:a9fe:1::1", "2002:0:1::",  # 6to4 (2002:V4ADDR::/48)
     "::ffff:0:169.254.169.254",  # IPv4-translated (RFC 2765)
     "2001:0:4136:e378:8000:63bf:5601:5601"],  # Teredo whose client is 169.254.169.254 (XORed)
)  # fmt: skip
def test_ipv6_forms_embedding_a_denied_ipv4_address_are_denied(address: str) -> None:
    assert not DEFAULT.permits(address)


def test_an_embedded_ipv4_is_judged_against_the_deny_list_and_the_ipv6_address_against_both() -> None:
    assert DEFAULT.permits("64:ff9b::203.0.113.9") and DEFAULT.permits("2002:cb00:7109::1")
    assert DEFAULT.permits("::ffff:0:203.0.113.9")
    assert DEFAULT.permits("::") is False and DEFAULT.permits("::1")  # unspecified and loopback, not IPv4
    production = NetworkPolicy(allow=(), deny=PRODUCTION_DENY)
    for address in ("::127.0.0.1", "64:ff9b::10.0.0.1", "2002:c0a8:0101::1", "64:ff9b::7f00:1"):
        assert not production.permits(address), address
    assert production.permits("64:ff9b::203.0.113.9")
    nat64_only = NetworkPolicy(allow=["64:ff9b::/96"], deny=["10.0.0.0/8"])
    assert nat64_only.permits("64:ff9b::203.0.113.9") and not nat64_only.permits("64:ff9b::10.1.2.3")
    assert not NetworkPolicy(allow=["203.0.113.0/24"], deny=()).permits("64:ff9b::203.0.113.9")

"""Which networks webhooks may reach: the allow/deny lists, checked on resolved addresses (pure, no I/O).

A webhook URL is chosen by whoever configures the Service, so without a guard the server could be made
to POST into places it should never reach (cloud metadata at 169.254.169.254, the unroutable ranges).
The HTTP client (client.py) checks every address a host resolves to *at connect time* and connects to
the checked address itself, so DNS rebinding cannot slip past; this module only decides.

Deny wins over allow; an empty allow list allows every network not denied. IPv4-mapped IPv6
addresses (``::ffff:a.b.c.d``) are judged as the IPv4 address they carry, and an IPv6 zone id
(``fe80::1%eth0``) is ignored. Every other IPv6 form that carries an IPv4 address a router or the host
may deliver to (IPv4-compatible ``::a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, NAT64
``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::/48``, Teredo's client) is denied whenever that IPv4 address
is denied; otherwise it is judged as the IPv6 address it is.

The lists come from SYNC_WEBHOOK_ALLOW_NETWORKS / SYNC_WEBHOOK_DENY_NETWORKS, whose defaults are declared
once, with the settings (app/settings.py): deny link-local (cloud metadata), "this network",
unspecified, multicast and reserved ranges; loopback and private networks stay allowed so that a
development receiver on localhost works.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible (RFC 4291 2.5.5.1)
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (SIIT, RFC 2765)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the NAT64 well-known prefix (RFC 6052)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses this IPv6 address carries for delivery (none for a plain IPv6 address).
    ``::`` and ``::1`` are IPv6's own unspecified and loopback, not IPv4-compatible addresses."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.append(ip.teredo[1])  # the client, which the relay delivers to (the server only relays)
    if (ip in _COMPATIBLE and int(ip) > 1) or ip in _TRANSLATED or ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


class DestinationBlockedError(Exception):
    """The webhook URL is not http(s), or its host resolves only to networks the server may not call.
    Final: retrying cannot help, so the delivery goes straight to the dead letters."""


class NetworkPolicy:
    def __init__(self, allow: Sequence[str], deny: Sequence[str]) -> None:
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.deny: list[Network] = [ipaddress.ip_network(n, strict=False) for n in deny]

    def permits(self, address: str) -> bool:
        """Whether the server may connect to this IP address (a literal, optionally with a zone id)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self._denied(ip):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and any(self._denied(v4) for v4 in _embedded_ipv4(ip)):
            return False
        return not self.allow or any(ip in n for n in self.allow if n.version == ip.version)

    def _denied(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in n for n in self.deny if n.version == ip.version)

    def permitted(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses ``host`` resolved to that may be reached, in order; raises
        DestinationBlockedError when there is none (the message names them all)."""
        addresses = list(dict.fromkeys(addresses))
        allowed = [a for a in addresses if self.permits(a)]
        if not allowed:
            raise DestinationBlockedError(f"{host} resolves to {', '.join(addresses)}: not an allowed network")
        return allowed

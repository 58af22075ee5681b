"""Which networks webhooks may reach: the allow/deny lists, checked on resolved addresses (pure, no I/O).

A webhook URL is chosen by whoever configures the Service, so without a guard the server could be made
to POST into places it should never reach (cloud metadata at 169.254.169.254, the unroutable ranges).
The HTTP client (client.py) checks every address a host resolves to *at connect time* and connects to
the checked address itself, so DNS rebinding cannot slip past; this module only decides.

Deny wins over allow; an empty allow list allows every network not denied. IPv4-mapped IPv6
addresses (``::ffff:a.b.c.d``) are judged as the IPv4 address they carry, and an IPv6 zone id
(``fe80::1%eth0``) is ignored.

The lists come from SYNC_WEBHOOK_ALLOW_NETWORKS / SYNC_WEBHOOK_DENY_NETWORKS, whose defaults are declared
once, with the settings (app/settings.py): deny link-local (cloud metadata), "this network",
unspecified, multicast and reserved ranges; loopback and private networks stay allowed so that a
development receiver on localhost works.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        if any(ip in n for n in self.deny if n.version == ip.version):
            return False
        return not self.allow or any(ip in n for n in self.allow if n.version == ip.version)

    def permitted(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses ``host`` resolved to that may be reached, in order; raises
        DestinationBlockedError when there is none (the message names them all)."""
        addresses = list(dict.fromkeys(addresses))
        allowed = [a for a in addresses if self.permits(a)]
        if not allowed:
            raise DestinationBlockedError(f"{host} resolves to {', '.join(addresses)}: not an allowed network")
        return allowed

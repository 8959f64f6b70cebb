"""Peer discovery: the addresses behind the ``host:port`` entries of ``QUDAG_PEERS``.

An entry's host is an IP literal (used as it is), or a name that may resolve to
several IPv6 and IPv4 addresses: ``qudag-node2.internal``, ``<app>.internal`` on
Fly, a compose service name, ``localhost``. :class:`Resolver` asks DNS for AAAA and
A records at once (dnspython, since the standard library cannot ask a given server
for AAAA and A); :class:`Discovery` re-resolves every name each interval, remembers
each name's last good addresses in the :class:`AddressBook` (the store) and falls
back to them while DNS fails, so a restart during a DNS outage still finds its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from qudag_node.config import ip_literal, parse_dns_server, parse_peer_entry
from qudag_node.logs import get_logger

log = get_logger("qudag.discovery")

#: A peer address: IP text without brackets, and port.
Address = tuple[str, int]


#: Failures of the system's DNS after which the operating system's own resolver
#: (``/etc/hosts``, then its DNS) gets a try. A timeout is not among them: the
#: system resolver would most likely wait for the same silent server.
_SYSTEM_FALLBACK = frozenset({"nxdomain", "no_answer", "no_nameservers", "no_resolv_conf"})

#: Which failure a name reports when its AAAA and A queries fail differently: a
#: failure to reach DNS says more than an answer that there is nothing.
_REASON_ORDER = ("timeout", "no_nameservers", "error", "bad_name", "nxdomain", "no_answer")


class AddressBook(Protocol):
    """Where the last good addresses of each name are kept across restarts."""

    async def last_good_addresses(self, host: str) -> list[str]:
        """The addresses ``host`` last resolved to, or [] if it never did."""
        ...

    async def save_good_addresses(self, host: str, addresses: Sequence[str], now: float) -> None:
        """Remember what ``host`` resolved to at ``now``."""
        ...


class ResolveError(Exception):
    """A name resolved to no address; ``reason`` says why.

    Reasons: ``nxdomain`` (no such name), ``no_answer`` (the name has no A or AAAA
    records), ``timeout``, ``no_nameservers`` (every server failed, e.g. SERVFAIL),
    ``no_resolv_conf`` (the system configuration is unreadable or names no server),
    ``bad_name`` (not a valid DNS name), ``error`` (anything else).
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve {host!r}: {reason}")
        self.host = host
        self.reason = reason


def _ordered(addresses: Iterable[str]) -> list[str]:
    """Distinct addresses, normalised: IPv6 first, each family in numeric order."""
    ips = {ipaddress.ip_address(a) for a in addresses}
    return [str(ip) for ip in sorted(ips, key=lambda ip: (ip.version == 4, ip))]


class Resolver:
    """Resolves a peer host to its addresses.

    With ``servers`` (``ip``, ``ip:port`` or ``[v6]:port``) only those are asked.
    Without, the system's DNS configuration (``/etc/resolv.conf``) is used, and when
    DNS knows nothing of a name (or cannot be configured) the operating system's
    resolver gets a try, so names from ``/etc/hosts`` work too. ``timeout`` bounds
    each step in seconds.
    """

    def __init__(self, servers: Sequence[str] = (), timeout: float = 2.0) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"resolver timeout must be a positive number, not {timeout!r}")
        self.timeout = timeout
        self.servers = tuple(parse_dns_server(s) for s in servers)
        self._dns: dns.asyncresolver.Resolver | None = None
        if self.servers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.servers]
            self._dns.timeout = timeout / len(self.servers)  # leave time for the next ones

    async def resolve(self, host: str) -> list[str]:
        """The addresses of ``host``: IPv6 first, each family sorted, no duplicates.

        An IP literal is returned as it is, without DNS. Raises :class:`ResolveError`
        when nothing resolves.
        """
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        if self.servers:
            assert self._dns is not None
            return await self._query(self._dns, host, search=False)
        try:
            return await self._query(self._system_dns(host), host, search=True)
        except ResolveError as e:
            if e.reason not in _SYSTEM_FALLBACK:
                raise
            return await self._getaddrinfo(host, e)

    def _system_dns(self, host: str) -> dns.asyncresolver.Resolver:
        """A resolver of the system's configuration, read once it is readable."""
        if self._dns is None:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ResolveError(host, "no_resolv_conf") from None
            resolver.timeout = min(resolver.timeout, self.timeout / len(resolver.nameservers))
            self._dns = resolver
        return self._dns

    async def _query(
        self, resolver: dns.asyncresolver.Resolver, host: str, search: bool
    ) -> list[str]:
        """AAAA and A at once; the addresses of both, or the more telling failure."""
        try:
            dns.name.from_text(host)
        except dns.exception.DNSException:
            raise ResolveError(host, "bad_name") from None
        results = await asyncio.gather(
            self._family(resolver, host, "AAAA", search), self._family(resolver, host, "A", search)
        )
        found = [a for r in results if isinstance(r, list) for a in r]
        if found:
            return _ordered(found)
        errors = [r for r in results if isinstance(r, ResolveError)]
        if not errors:
            raise ResolveError(host, "no_answer")
        raise min(errors, key=lambda e: _REASON_ORDER.index(e.reason))

    async def _family(
        self, resolver: dns.asyncresolver.Resolver, host: str, rdtype: str, search: bool
    ) -> list[str] | ResolveError:
        """The addresses of one record type ([] for none), or why the query failed."""
        try:
            answer = await resolver.resolve(
                host, rdtype, search=search, raise_on_no_answer=False, lifetime=self.timeout
            )
        except dns.resolver.NXDOMAIN:
            return ResolveError(host, "nxdomain")
        except dns.resolver.NoAnswer:
            return ResolveError(host, "no_answer")
        except dns.exception.Timeout:
            return ResolveError(host, "timeout")
        except dns.resolver.NoNameservers:
            return ResolveError(host, "no_nameservers")
        except dns.exception.DNSException:
            return ResolveError(host, "error")
        return [str(rdata.address) for rdata in answer]

    async def _getaddrinfo(self, host: str, dns_error: ResolveError) -> list[str]:
        """The operating system's answer for ``host``; ``dns_error`` if it has none."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError):
            raise dns_error from None
        found = [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        if not found:
            raise dns_error
        return _ordered(found)


@dataclass(frozen=True, slots=True)
class HostState:
    """What one peer entry resolved to at the last refresh."""

    entry: str
    host: str
    port: int
    addresses: tuple[str, ...]
    source: str  # "literal" | "dns" | "last_good" | "none"
    error: str | None  # the last resolve failure reason, if the last attempt failed


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A name's addresses after one refresh, and where they came from."""

    addresses: tuple[str, ...]
    source: str
    error: str | None


class Discovery:
    """Turns peer entries into candidate addresses, re-resolving names every ``interval``."""

    def __init__(
        self,
        entries: Sequence[str],
        resolver: Resolver,
        book: AddressBook,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"discovery interval must be a positive number, not {interval!r}")
        self._resolver = resolver
        self._book = book
        self._interval = interval
        self._clock = clock
        self._states: dict[str, HostState] = {}
        for entry in entries:
            host, port = parse_peer_entry(entry)
            literal = ip_literal(host)
            addresses, source = ((literal,), "literal") if literal else ((), "none")
            self._states[entry] = HostState(entry, host, port, addresses, source, None)
        self._good: dict[str, tuple[str, ...]] = {}  # last good addresses, as in the book
        self._failing: dict[str, str] = {}  # host -> reason of its current failure
        self._wake = asyncio.Event()

    def hosts(self) -> list[HostState]:
        """The state of every entry, in the order given."""
        return list(self._states.values())

    def refresh_soon(self) -> None:
        """Make :meth:`run` refresh now instead of at the end of its interval."""
        self._wake.set()

    async def refresh(self) -> frozenset[Address]:
        """Resolve every name at once and return every candidate address.

        A name that resolves has its addresses saved when they changed; one that
        does not falls back to its last good addresses.
        """
        names = list(dict.fromkeys(s.host for s in self._states.values() if s.source != "literal"))
        async with asyncio.TaskGroup() as tg:
            lookups = {host: tg.create_task(self._lookup(host)) for host in names}
        outcomes = {host: await self._settle(host, task.result()) for host, task in lookups.items()}
        for entry, state in self._states.items():
            outcome = outcomes.get(state.host)
            if outcome is not None:
                self._states[entry] = HostState(
                    entry, state.host, state.port, outcome.addresses, outcome.source, outcome.error
                )
        return frozenset((a, s.port) for s in self._states.values() for a in s.addresses)

    async def run(self, on_candidates: Callable[[frozenset[Address]], None]) -> None:
        """Refresh, hand the candidates to ``on_candidates``, wait ``interval`` seconds
        (or until :meth:`refresh_soon`), and again, until cancelled. An error of the
        address book ends it with that error."""
        while True:
            self._wake.clear()  # a refresh_soon() during the refresh asks for another
            on_candidates(await self.refresh())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def _lookup(self, host: str) -> list[str] | ResolveError:
        """The resolver's answer for ``host``, or its failure."""
        try:
            return await self._resolver.resolve(host)
        except ResolveError as e:
            return e

    async def _last_good(self, host: str) -> tuple[str, ...]:
        """``host``'s last good addresses (read from the book the first time)."""
        if host not in self._good:
            self._good[host] = tuple(await self._book.last_good_addresses(host))
        return self._good[host]

    async def _settle(self, host: str, result: list[str] | ResolveError) -> _Outcome:
        """Record one lookup: save new addresses, or fall back to the last good ones."""
        previous = await self._last_good(host)
        if isinstance(result, ResolveError):
            level = log.debug if self._failing.get(host) == result.reason else log.warning
            level(
                "peer_resolve_failed",
                host=host,
                reason=result.reason,
                using_last_good=len(previous),
            )
            self._failing[host] = result.reason
            return _Outcome(previous, "last_good" if previous else "none", result.reason)
        current = tuple(result)
        if current != previous:
            await self._book.save_good_addresses(host, current, self._clock())
            self._good[host] = current
            log.info("peer_addresses_changed", host=host, old=list(previous), new=list(current))
        if self._failing.pop(host, None) is not None:
            log.info("peer_resolve_recovered", host=host, addresses=list(current))
        return _Outcome(current, "dns", None)

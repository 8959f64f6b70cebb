"""Peer discovery against a real DNS server on loopback and a real SQLite store."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
from structlog.testing import capture_logs

from qudag_node.config import parse_dns_server, parse_peer_entry
from qudag_node.core.crypto import Signer
from qudag_node.core.genesis import Genesis
from qudag_node.discovery import (
    Address,
    Discovery,
    HostState,
    ResolveError,
    Resolver,
)
from qudag_node.store import Store
from tests.dnsserver import DnsServer, DnsServerProcess, write_records

SIGNER = Signer(bytes(range(32)))
GENESIS = Genesis.solo("test", "node1", SIGNER.public_key)
DEADLINE = 10.0

NODE2 = "qudag-node2.internal"
TEST = "qudag-test.internal"
RECORDS = {
    NODE2: ["10.0.0.2", "fdaa:0:1::2"],
    TEST: ["fdaa:0:1::c", "fdaa:0:1::a", "fdaa:0:1::b"],
    "empty.internal": [],
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    """A DNS server on 127.0.0.1 holding RECORDS."""
    dns_server = DnsServer(RECORDS)
    await dns_server.start()
    yield dns_server
    await dns_server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real store in tmp_path, the address book."""
    db = await Store.open(tmp_path, GENESIS)
    yield db
    await db.close()


def resolver_of(server: DnsServer, timeout: float = 2.0) -> Resolver:
    """A resolver that asks only ``server``."""
    return Resolver([f"127.0.0.1:{server.port}"], timeout=timeout)


def state(discovery: Discovery, entry: str) -> HostState:
    """The state of one entry."""
    (found,) = [s for s in discovery.hosts() if s.entry == entry]
    return found


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    """The captured log lines of one event."""
    return [line for line in logs if line["event"] == name]


# ------------------------------------------------------------------ resolution


async def test_names_resolve_to_all_their_addresses_ipv6_first(
    server: DnsServer, store: Store
) -> None:
    discovery = Discovery(
        [f"{NODE2}:7000", f"{TEST}:7100"],
        resolver_of(server),
        store,
        interval=60,
        clock=lambda: 5.0,
    )
    candidates = await discovery.refresh()
    assert candidates == {
        ("fdaa:0:1::2", 7000),
        ("10.0.0.2", 7000),
        ("fdaa:0:1::a", 7100),
        ("fdaa:0:1::b", 7100),
        ("fdaa:0:1::c", 7100),
    }
    node2 = state(discovery, f"{NODE2}:7000")
    assert (node2.host, node2.port) == (NODE2, 7000)
    assert node2.addresses == ("fdaa:0:1::2", "10.0.0.2")
    assert (node2.source, node2.error) == ("dns", None)
    assert state(discovery, f"{TEST}:7100").addresses == (
        "fdaa:0:1::a",
        "fdaa:0:1::b",
        "fdaa:0:1::c",
    )
    assert await store.last_good_addresses(NODE2) == ["fdaa:0:1::2", "10.0.0.2"]
    assert await store.last_good_addresses(TEST) == ["fdaa:0:1::a", "fdaa:0:1::b", "fdaa:0:1::c"]
    for name in (NODE2, TEST):
        assert (server.count(name, "A"), server.count(name, "AAAA")) == (1, 1)


async def test_names_are_case_insensitive_and_may_end_with_a_dot(server: DnsServer) -> None:
    resolver = resolver_of(server)
    assert await resolver.resolve("QUDAG-Node2.Internal.") == ["fdaa:0:1::2", "10.0.0.2"]
    assert server.count(NODE2) == 2


async def test_a_name_with_one_family_only_needs_no_other(server: DnsServer) -> None:
    server.records["v4.internal"] = ["10.0.0.9", "10.0.0.7", "10.0.0.9"]
    assert await resolver_of(server).resolve("v4.internal") == ["10.0.0.7", "10.0.0.9"]


async def test_a_changed_record_replaces_the_old_address(server: DnsServer, store: Store) -> None:
    discovery = Discovery([f"{NODE2}:7000"], resolver_of(server), store, interval=60)
    assert ("10.0.0.2", 7000) in await discovery.refresh()
    server.records[NODE2] = ["fdaa:0:1::2", "10.0.0.3"]
    with capture_logs() as logs:
        candidates = await discovery.refresh()
    assert candidates == {("fdaa:0:1::2", 7000), ("10.0.0.3", 7000)}
    assert await store.last_good_addresses(NODE2) == ["fdaa:0:1::2", "10.0.0.3"]
    (changed,) = events(logs, "peer_addresses_changed")
    assert changed["host"] == NODE2
    assert changed["old"] == ["fdaa:0:1::2", "10.0.0.2"]
    assert changed["new"] == ["fdaa:0:1::2", "10.0.0.3"]
    with capture_logs() as logs:
        await discovery.refresh()
    assert events(logs, "peer_addresses_changed") == []


async def test_dns_failures_fall_back_to_the_last_good_addresses(
    server: DnsServer, tmp_path: Path
) -> None:
    entries = [f"{NODE2}:7000"]
    good = frozenset({("fdaa:0:1::2", 7000), ("10.0.0.2", 7000)})
    store = await Store.open(tmp_path, GENESIS)
    try:
        discovery = Discovery(entries, resolver_of(server, timeout=0.3), store, interval=60)
        assert await discovery.refresh() == good

        server.mode = "servfail"
        with capture_logs() as logs:
            assert await discovery.refresh() == good
        node2 = state(discovery, entries[0])
        assert (node2.source, node2.error) == ("last_good", "no_nameservers")
        (failed,) = events(logs, "peer_resolve_failed")
        assert failed["host"] == NODE2
        assert (failed["reason"], failed["using_last_good"]) == ("no_nameservers", 2)

        server.mode = "drop"
        before = server.total_queries
        assert await discovery.refresh() == good
        assert server.total_queries > before
        node2 = state(discovery, entries[0])
        assert (node2.source, node2.error) == ("last_good", "timeout")

        await server.stop()
        assert await discovery.refresh() == good
        assert state(discovery, entries[0]).source == "last_good"
    finally:
        await store.close()

    reopened = await Store.open(tmp_path, GENESIS)
    try:
        again = Discovery(entries, resolver_of(server, timeout=0.3), reopened, interval=60)
        assert await again.refresh() == good
        node2 = state(again, entries[0])
        assert (node2.addresses, node2.source) == (("fdaa:0:1::2", "10.0.0.2"), "last_good")
        assert node2.error is not None
    finally:
        await reopened.close()


async def test_recovery_after_a_failure_is_logged_once(server: DnsServer, store: Store) -> None:
    discovery = Discovery([f"{NODE2}:7000"], resolver_of(server), store, interval=60)
    server.mode = "servfail"
    with capture_logs() as logs:
        await discovery.refresh()
        await discovery.refresh()
    warnings = [e for e in events(logs, "peer_resolve_failed") if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["using_last_good"] == 0
    server.mode = "answer"
    with capture_logs() as logs:
        await discovery.refresh()
    assert [e["host"] for e in events(logs, "peer_resolve_recovered")] == [NODE2]
    assert state(discovery, f"{NODE2}:7000").error is None


async def test_an_unknown_name_gives_no_candidates_and_does_not_stop_the_others(
    server: DnsServer, store: Store
) -> None:
    entries = ["qudag-ghost.internal:7000", f"{NODE2}:7001", "empty.internal:7002"]
    discovery = Discovery(entries, resolver_of(server), store, interval=60)
    assert await discovery.refresh() == {("fdaa:0:1::2", 7001), ("10.0.0.2", 7001)}
    ghost = state(discovery, entries[0])
    assert (ghost.addresses, ghost.source, ghost.error) == ((), "none", "nxdomain")
    empty = state(discovery, entries[2])
    assert (empty.addresses, empty.source, empty.error) == ((), "none", "no_answer")
    assert state(discovery, entries[1]).source == "dns"
    assert await store.last_good_addresses("qudag-ghost.internal") == []
    with pytest.raises(ResolveError) as info:
        await resolver_of(server).resolve("qudag-ghost.internal")
    assert info.value.reason == "nxdomain"
    assert "qudag-ghost.internal" in str(info.value)


async def test_ip_literals_never_ask_dns(server: DnsServer, store: Store) -> None:
    entries = ["127.0.0.1:7000", "[::1]:7001", "[fdaa:0:0:0::5]:7002"]
    discovery = Discovery(entries, resolver_of(server), store, interval=60)
    assert await discovery.refresh() == {("127.0.0.1", 7000), ("::1", 7001), ("fdaa::5", 7002)}
    assert [s.source for s in discovery.hosts()] == ["literal"] * 3
    assert await resolver_of(server).resolve("[::1]") == ["::1"]
    assert server.total_queries == 0
    assert await store.last_good_addresses("127.0.0.1") == []


async def test_one_slow_name_does_not_hold_up_the_others(server: DnsServer, store: Store) -> None:
    timeout = 0.5
    slow = [f"slow{i}.internal" for i in range(4)]
    server.silent.update(slow)
    entries = [f"{name}:7000" for name in slow] + [f"{NODE2}:7000"]
    discovery = Discovery(entries, resolver_of(server, timeout=timeout), store, interval=60)
    started = time.monotonic()
    candidates = await discovery.refresh()
    elapsed = time.monotonic() - started
    assert candidates == {("fdaa:0:1::2", 7000), ("10.0.0.2", 7000)}
    assert [state(discovery, e).error for e in entries[:4]] == ["timeout"] * 4
    assert all(server.count(name) >= 2 for name in slow)
    # one after another the four would take 4 * timeout; together about one timeout
    assert elapsed < 3 * timeout


async def test_entries_of_one_host_share_one_lookup(server: DnsServer, store: Store) -> None:
    discovery = Discovery([f"{NODE2}:7000", f"{NODE2}:7001"], resolver_of(server), store, 60)
    candidates = await discovery.refresh()
    assert {port for _, port in candidates} == {7000, 7001}
    assert len(candidates) == 4
    assert server.count(NODE2) == 2  # one AAAA, one A


async def test_a_dead_server_is_skipped_for_the_next(server: DnsServer) -> None:
    dead = DnsServer()
    dead_port = await dead.start()
    await dead.stop()
    resolver = Resolver([f"127.0.0.1:{dead_port}", f"127.0.0.1:{server.port}"], timeout=2.0)
    assert await resolver.resolve(NODE2) == ["fdaa:0:1::2", "10.0.0.2"]


async def test_the_system_configuration_resolves_localhost() -> None:
    addresses = await Resolver().resolve("localhost")
    assert "127.0.0.1" in addresses


# ------------------------------------------------------------------ the loop


async def test_run_resolves_again_every_interval(server: DnsServer, store: Store) -> None:
    discovery = Discovery([f"{NODE2}:7000"], resolver_of(server), store, interval=0.05)
    seen: asyncio.Queue[frozenset[Address]] = asyncio.Queue()
    task = asyncio.create_task(discovery.run(seen.put_nowait))
    try:
        for _ in range(3):
            candidates = await asyncio.wait_for(seen.get(), DEADLINE)
            assert candidates == {("fdaa:0:1::2", 7000), ("10.0.0.2", 7000)}
        assert server.count(NODE2, "AAAA") >= 3
        assert server.count(NODE2, "A") >= 3
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_refresh_soon_does_not_wait_for_the_interval(server: DnsServer, store: Store) -> None:
    discovery = Discovery([f"{NODE2}:7000"], resolver_of(server), store, interval=3600)
    seen: asyncio.Queue[frozenset[Address]] = asyncio.Queue()
    task = asyncio.create_task(discovery.run(seen.put_nowait))
    try:
        assert ("10.0.0.2", 7000) in await asyncio.wait_for(seen.get(), DEADLINE)
        server.records[NODE2] = ["10.0.0.4"]
        discovery.refresh_soon()
        assert await asyncio.wait_for(seen.get(), DEADLINE) == {("10.0.0.4", 7000)}
        assert seen.empty()
        assert server.count(NODE2, "A") == 2
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("10.0.0.1", ("10.0.0.1", 53)),
        ("10.0.0.1:5353", ("10.0.0.1", 5353)),
        ("fdaa::3", ("fdaa::3", 53)),
        ("[fdaa::3]", ("fdaa::3", 53)),
        ("[fdaa::3]:5353", ("fdaa::3", 5353)),
        ("[fdaa::3]:", ("fdaa::3", 53)),
        (" 127.0.0.11 ", ("127.0.0.11", 53)),
    ],
)
def test_dns_server_entries(entry: str, parsed: tuple[str, int]) -> None:
    assert parse_dns_server(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    ["", "dns.internal", "10.0.0.1:0", "10.0.0.1:x", "[fdaa::3]x", "[fdaa::3]:x", "[fdaa::3"],
)
def test_bad_dns_server_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="DNS server"):
        Resolver([entry])


def test_peer_entries() -> None:
    assert parse_peer_entry("qudag-node2.internal:7000") == ("qudag-node2.internal", 7000)
    assert parse_peer_entry("[::1]:7001") == ("::1", 7001)
    for bad in ("qudag-node2.internal", ":7000", "host:70000", "host:"):
        with pytest.raises(ValueError, match="host:port"):
            parse_peer_entry(bad)


async def test_bad_settings_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Resolver(timeout=0)
    with pytest.raises(ValueError, match="interval"):
        Discovery([], Resolver(), store, interval=0)
    with pytest.raises(ValueError, match="host:port"):
        Discovery(["nohost"], Resolver(), store, interval=1)


async def test_an_invalid_name_is_a_bad_name(server: DnsServer) -> None:
    with pytest.raises(ResolveError) as info:
        await resolver_of(server).resolve("bad..name")
    assert info.value.reason == "bad_name"
    assert server.total_queries == 0


# ------------------------------------------------------------------ the test server


async def test_the_server_answers_over_tcp_too(server: DnsServer) -> None:
    assert server.port is not None
    query = dns.message.make_query(TEST, "AAAA")
    response = await dns.asyncquery.tcp(query, "127.0.0.1", timeout=DEADLINE, port=server.port)
    assert sorted(r.address for r in response.answer[0]) == [
        "fdaa:0:1::a",
        "fdaa:0:1::b",
        "fdaa:0:1::c",
    ]
    missing = await dns.asyncquery.tcp(
        dns.message.make_query("nobody.internal", "A"),
        "127.0.0.1",
        timeout=DEADLINE,
        port=server.port,
    )
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_the_server_as_a_process_follows_its_records_file(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    write_records(path, {NODE2: ["10.0.0.2"]})
    process = DnsServerProcess(path)
    port = process.start()
    try:
        resolver = Resolver([f"127.0.0.1:{port}"], timeout=2.0)
        assert await resolver.resolve(NODE2) == ["10.0.0.2"]
        write_records(path, {NODE2: ["fdaa::2", "10.0.0.3"]})
        assert await resolver.resolve(NODE2) == ["fdaa::2", "10.0.0.3"]
        write_records(path, {NODE2: ["10.0.0.3"]}, mode="servfail")
        with pytest.raises(ResolveError) as info:
            await resolver.resolve(NODE2)
        assert info.value.reason == "no_nameservers"
    finally:
        assert process.stop() == 0


def test_the_server_process_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    write_records(path, {})
    process = DnsServerProcess(path)
    process.start()
    assert process.proc is not None
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(DEADLINE) == 0
    assert process.stop() == 0

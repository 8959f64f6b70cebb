"""Peer links under real network faults: four nodes in Linux network namespaces.

One topology for the module (:mod:`tests.netns`): four validators, each in a namespace
of its own with its own IPv6 address, all on ports 8080 and 7000, finding each other
as ``nodeN.internal`` through dnsmasq. The scenarios run in sequence against it; after
each, the ``net`` fixture undoes its faults and waits until every node is linked again.
Partitions are silent drops (nftables), so a link learns of them only by what it no
longer receives. Needs root, iproute2, nftables and dnsmasq; skips without them
unless ``QUDAG_REQUIRE_TOOLS`` is set. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.netns import (
    TOKEN,
    ConnectionCounter,
    Host,
    Topology,
    netem_missing,
    require_namespaces,
    run,
    seed,
)
from tests.network import quantile
from tests.nodeproc import submit_json, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.xdist_group("netns")

#: Short, so that the bounds stated in sync intervals are tested in reasonable time.
SYNC_INTERVAL = 5.0
SHUTDOWN_TIMEOUT = 10.0
#: Issue 15: a moved host is linked again within 2 x DAG_SYNC_INTERVAL + 10 s ...
RELINK_BOUND = 2 * SYNC_INTERVAL + 10
#: ... a validator cut off silently for 120 s holds the others' log within 20 s of the
#: heal ...
PARTITION = 120.0
CATCH_UP_BOUND = 20.0
#: ... and no pair of peers shakes hands more than 30 times in any minute.
HANDSHAKES_PER_MINUTE = 30
#: How long a scenario keeps measuring past its bound, to report the figure it missed.
MEASURE_PAST = 30.0


def figure(text: str) -> None:
    """Print one measured figure, found in the output by its prefix."""
    print(f"\nnetfaults: {text}", flush=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, ConnectionCounter]]:
    """Four linked validators in namespaces, for the whole module, and the counter of
    their connections (started before the first node)."""
    require_namespaces()
    env = {
        "DAG_SYNC_INTERVAL": str(SYNC_INTERVAL),
        "QUDAG_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    started = time.monotonic()
    with (
        Topology(tmp_path_factory.mktemp("netfaults"), env=env) as topo,
        ConnectionCounter(topo) as counter,
    ):
        for name in topo.names:
            topo.start(name)
        wait_until(topo.meshed, 60, "four nodes linked through their .internal names")
        figure(f"topology built and linked in {time.monotonic() - started:.1f} s")
        yield topo, counter


@pytest.fixture
def counter(lab: tuple[Topology, ConnectionCounter]) -> ConnectionCounter:
    """Connections between the hosts, read every few seconds."""
    return lab[1]


@pytest.fixture
def net(lab: tuple[Topology, ConnectionCounter]) -> Iterator[Topology]:
    """The topology; afterwards every fault is undone and every node running and linked
    (nodes that cannot link again by themselves are restarted, and that is printed)."""
    topo = lab[0]
    yield topo
    for name in topo.names:
        topo.heal(name)
        if not topo.hosts[name].running():
            topo.start(name)
    try:
        wait_until(topo.meshed, RELINK_BOUND, "every node linked again")
    except AssertionError:
        stuck = [n for n in topo.names if not topo.meshed([n])]
        figure(f"not linked again within {RELINK_BOUND:.0f} s: restarting {stuck}")
        for name in topo.names:
            topo.kill(name)
        for name in topo.names:
            topo.start(name)
        wait_until(topo.meshed, 60, "every node linked again after a restart")


def leftovers(topo: Topology) -> list[str]:
    """What of ``topo`` is still there: namespaces, links, /etc/netns dirs, processes."""
    namespaces = set(run("ip", "netns", "list").split())
    links = run("ip", "-o", "link", "show").split()
    out = [n for n in (topo.dns_netns, *(h.netns for h in topo.hosts.values())) if n in namespaces]
    out += [word for word in links if word.startswith(topo.tag)]
    out += [str(p) for p in Path("/etc/netns").glob(f"{topo.tag}-*")]
    out += [h.name for h in topo.hosts.values() if h.running()]
    return out


def test_a_topology_leaves_nothing_behind_after_a_failure(tmp_path: Path) -> None:
    require_namespaces()
    topo = Topology(tmp_path)
    built: list[str] = []

    def failing_test() -> None:
        with topo:
            topo.start("node1")
            topo.isolate("node1")
            built.extend(leftovers(topo))
            raise RuntimeError("a failing test")

    with pytest.raises(RuntimeError, match="a failing test"):
        failing_test()
    assert "node1" in built  # its process was running
    assert leftovers(topo) == []


def test_a_topology_that_fails_half_way_undoes_what_it_built(tmp_path: Path) -> None:
    require_namespaces()
    topo = Topology(tmp_path)
    blocker = topo.hosts["node3"].netns  # taken: building stops there
    run("ip", "netns", "add", blocker)
    try:
        with pytest.raises(RuntimeError, match=blocker), topo:
            pytest.fail("built despite the taken name")
        assert leftovers(topo) == [blocker]
    finally:
        run("ip", "netns", "del", blocker)


def link_state(watcher: Host, peer: str) -> str:
    """How ``watcher`` sees its link to ``peer``: connected, stale, or down."""
    states = {v["state"] for v in watcher.peers() if v.get("name") == peer}
    for state in ("connected", "stale"):
        if state in states:
            return state
    return "down"


def can_finalize(host: Host) -> bool:
    """What a validator's ``/api/v1/status`` says: linked to a quorum (itself included)."""
    quorum = host.get("/api/v1/status")["p2p"].get("quorum")
    return isinstance(quorum, dict) and quorum.get("can_finalize") is True


def batch(tag: str, n: int, count: int = 20) -> list[bytes]:
    """``count`` distinct transactions."""
    return [f"{tag} {n} {k}".encode() for k in range(count)]


def converged(topo: Topology, at_least: int) -> tuple[int, str] | None:
    """The common log head of every node if they agree and it has ``at_least`` entries."""
    heads = set(topo.heads().values())
    if len(heads) == 1 and (head := next(iter(heads)))[0] >= at_least:
        return head
    return None


def test_a_validator_cut_off_silently_for_120_s_catches_up_within_20_s(net: Topology) -> None:
    cut, others = "node4", ["node1", "node2", "node3"]
    hosts = net.hosts
    before = hosts["node1"].log_head()[0]
    net.isolate(cut)
    started = time.monotonic()
    stale: dict[str, float] = {}  # who stopped showing the link as connected, when
    down: dict[str, float] = {}  # who stopped showing it at all, when
    cannot_finalize: dict[str, float] = {}  # who said so in /api/v1/status, when
    submitted = 0
    while (elapsed := round(time.monotonic() - started, 1)) < PARTITION:
        # Three of four validators are a quorum: they go on finalizing. Each call
        # returns once its batch is final, which paces the loop.
        code, body = submit_json(hosts["node1"].url, batch("partition", submitted), wait=True)
        assert (code, body.get("status")) == (200, "final"), (code, body)
        submitted += 1
        views = {w: link_state(hosts[w], cut) for w in others}
        own = {link_state(hosts[cut], o) for o in others}  # the cut node: all three links
        views[cut] = "down" if own == {"down"} else "stale" if "connected" not in own else ""
        for who, state in views.items():
            if state in ("stale", "down"):
                stale.setdefault(who, elapsed)
            if state == "down":
                down.setdefault(who, elapsed)
            if not can_finalize(hosts[who]):
                cannot_finalize.setdefault(who, elapsed)
    head = hosts["node1"].log_head()
    frozen = hosts[cut].log_head()
    closes = {
        str(r.get("reason"))
        for r in net.records("node1")
        if r.get("event") == "peer_disconnected" and r.get("peer") == cut
    }
    net.heal(cut)
    healed = time.monotonic()
    caught_up: float | None = None
    try:
        wait_until(
            lambda: converged(net, head[0]) is not None,
            CATCH_UP_BOUND + MEASURE_PAST,
            f"{cut} holding the others' log after the heal",
        )
        caught_up = time.monotonic() - healed
    except AssertionError:
        pass
    figure(
        f"silent partition of {PARTITION:.0f} s: log {before} -> {head[0]} entries meanwhile;"
        f" {cut} held the same log hash {caught_up and round(caught_up, 1)} s after the heal"
        f" (None: not within {CATCH_UP_BOUND + MEASURE_PAST:.0f} s);"
        f" link shown not connected after {stale} s, closed after {down} s (as {closes}"
        f" at node1), cannot finalize in /api/v1/status after {cannot_finalize} s"
        f" (per node; absent: not within {PARTITION:.0f} s)"
    )
    assert frozen[0] < head[0], "the cut validator finalized without a quorum"
    missed = f"{cut} caught up {caught_up} s after the heal; the bound is {CATCH_UP_BOUND} s"
    assert caught_up is not None, missed
    assert caught_up <= CATCH_UP_BOUND, missed
    assert set(down) == {*others, cut}, (
        f"a silent link was still open after {PARTITION} s: closed by {down}"
    )
    assert "idle_timeout" in closes, closes
    assert set(cannot_finalize) == {cut}, (
        f"expected only {cut} to say it cannot finalize, not {cannot_finalize}"
    )
    wait_until(lambda: can_finalize(hosts[cut]), CATCH_UP_BOUND, f"{cut} able to finalize")


def test_a_vanished_host_back_at_a_new_address_is_relinked_in_time(
    net: Topology, counter: ConnectionCounter
) -> None:
    name = "node3"
    since, started = datetime.now(UTC), time.monotonic()
    net.vanish(name)  # no FIN, no RST: its peers keep their links to the old address
    old = net.hosts[name].address
    new = net.move(name)
    host = net.start(name)
    assert host.started_at is not None
    relinked: float | None = None
    try:
        wait_until(net.meshed, RELINK_BOUND + MEASURE_PAST, f"{name} linked again at {new}")
        relinked = time.monotonic() - host.started_at
    except AssertionError:
        pass
    figure(
        f"{name} moved {old} -> {new}: every node linked to it at the new address"
        f" {relinked and round(relinked, 1)} s after its start (None: not within"
        f" {RELINK_BOUND + MEASURE_PAST:.0f} s); meanwhile, most per pair in a minute:"
        f" connections taken {counter.most_per_minute('accepted', started)}, attempts"
        f" {counter.most_per_minute('attempts', started)}, handshakes logged"
        f" {net.handshakes_per_minute(since)}"
    )
    missed = f"{name} relinked after {relinked} s; the bound is {RELINK_BOUND} s"
    assert relinked is not None, missed
    assert relinked <= RELINK_BOUND, missed


def links_silent(host: Host, seconds: float) -> bool:
    """Whether ``host`` heard nothing on any link for ``seconds``."""
    return all(
        v["last_seen_seconds"] >= seconds
        for v in host.peers()
        if v["state"] in ("connected", "stale") and v.get("last_seen_seconds") is not None
    )


def test_sigterm_during_a_partition_stops_the_node_in_time(net: Topology) -> None:
    name = "node2"
    host = net.hosts[name]
    net.isolate(name)
    # Work for the links that cannot be delivered: its own proposals, and the others'.
    for n, target in enumerate((host, net.hosts["node1"])):
        code, _ = submit_json(target.url, batch("during sigterm", n))
        assert code == 202
    wait_until(
        lambda: links_silent(host, 2 * SYNC_INTERVAL),
        2 * SYNC_INTERVAL + 20,
        f"{name} hearing nothing for two sync intervals",
    )
    linked_seconds, linked_code = net.terminate(name, SHUTDOWN_TIMEOUT + MEASURE_PAST)
    # Started while cut off: dialing addresses that never answer.
    net.start(name)
    dialing_seconds, dialing_code = net.terminate(name, SHUTDOWN_TIMEOUT + MEASURE_PAST)
    figure(
        f"SIGTERM during a partition: exit {linked_code} after {linked_seconds:.2f} s with"
        f" silent links, exit {dialing_code} after {dialing_seconds:.2f} s while dialing"
        f" (None: still running after {SHUTDOWN_TIMEOUT + MEASURE_PAST:.0f} s, killed);"
        f" QUDAG_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT:.0f}"
    )
    for what, seconds, exit_code in (
        ("with silent links", linked_seconds, linked_code),
        ("while dialing", dialing_seconds, dialing_code),
    ):
        assert exit_code == 0, f"SIGTERM {what}: exit code {exit_code} after {seconds:.1f} s"
        assert seconds <= SHUTDOWN_TIMEOUT, f"SIGTERM {what}: exited after {seconds:.1f} s"


def test_a_validator_restarted_on_an_empty_disk_catches_up(net: Topology) -> None:
    name = "node2"
    host = net.hosts[name]
    code, body = submit_json(net.hosts["node1"].url, batch("before wipe", 0), wait=True)
    assert (code, body.get("status")) == (200, "final")
    head = net.hosts["node1"].log_head()
    assert head[0] > 0
    net.kill(name)
    assert host.node is not None
    shutil.rmtree(host.node.data_dir)
    net.start(name)
    assert host.started_at is not None
    wait_until(lambda: converged(net, head[0]) is not None, 120, f"{name} catching up")
    seconds = time.monotonic() - host.started_at
    figure(
        f"{name} on an empty disk: held the others' log of {head[0]} entries"
        f" {seconds:.1f} s after its start"
    )
    assert host.log_head()[0] >= head[0]
    assert (Path(host.node.data_dir) / "qudag.db").exists()
    # And it takes part again: a batch submitted to it becomes final everywhere.
    code, body = submit_json(host.url, batch("after wipe", 0), wait=True)
    assert (code, body.get("status")) == (200, "final")
    wait_until(lambda: converged(net, head[0] + 20) is not None, 30, "the batch everywhere")


def test_finality_latency_with_40_ms_of_delay(net: Topology) -> None:
    require_tool("tc")
    missing = netem_missing()
    if missing is not None:
        pytest.skip(f"no 40 ms +/- 10 ms delay run: {missing}")
    net.delay(40, 10)
    try:
        latencies = []
        for n in range(60):
            target = net.hosts[net.names[n % len(net.names)]]
            started = time.monotonic()
            code, body = submit_json(target.url, batch("delayed", n, 10), wait=True)
            assert (code, body.get("status")) == (200, "final"), (code, body)
            latencies.append(time.monotonic() - started)
    finally:
        net.no_delay()
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    figure(f"40 ms +/- 10 ms delay: finality p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert p50 >= 0.040  # a batch needs at least one delayed message to become final


def test_a_peer_host_up_before_its_node_is_redialed_with_backoff(
    net: Topology, counter: ConnectionCounter
) -> None:
    """As on Fly when a Machine restarts: its links went stale, then its host answers
    again (RST) before its node listens. Redials must back off meanwhile, both while the
    stale links last and once they are closed."""
    name, others = "node2", ["node1", "node3", "node4"]
    net.isolate(name)
    wait_until(
        lambda: all(link_state(net.hosts[w], name) == "stale" for w in others),
        2 * SYNC_INTERVAL + 20,
        f"{name}'s links stale at every peer",
    )
    net.kill(name)  # unseen: its FIN and RST are dropped too
    net.heal(name)
    healed = time.monotonic()
    wait_until(
        lambda: all(link_state(net.hosts[w], name) == "down" for w in others),
        3 * SYNC_INTERVAL + 20,
        f"the links to {name} closed",
    )
    closed = time.monotonic() - healed
    # Then as long again as a moved peer has to be linked again, with nothing listening.
    wait_until(
        lambda: counter.samples[-1][0] > healed + RELINK_BOUND, RELINK_BOUND + 20, "a reading"
    )
    attempts = counter.most_per_minute("attempts", healed)
    figure(
        f"{name}'s host up, its node down, its links stale: every link to it closed"
        f" {closed:.1f} s after the heal; connection attempts per pair in the"
        f" {RELINK_BOUND:.0f} s after the heal: {attempts}"
    )
    worst = max(attempts, key=lambda pair: attempts[pair])
    assert attempts[worst] <= HANDSHAKES_PER_MINUTE, (
        f"{worst}: {attempts[worst]} connection attempts within a minute"
    )


def silent_to(watcher: Host, peer: str, seconds: float) -> bool:
    """Whether ``watcher`` has heard nothing from ``peer`` for ``seconds`` (or has no link)."""
    return all(
        v["last_seen_seconds"] is None or v["last_seen_seconds"] >= seconds
        for v in watcher.peers()
        if v.get("name") == peer and v["state"] in ("connected", "stale")
    )


def test_no_pair_shakes_hands_more_than_30_times_a_minute(
    net: Topology, counter: ConnectionCounter
) -> None:
    """Over every scenario above (run this module whole). Each connection a node takes on
    its peer port (its SYN-ACK, counted by nftables in the namespaces) starts one
    handshake, so these counts bound the handshakes from above whatever the nodes log."""
    accepted = counter.most_per_minute("accepted")
    figure(
        f"most per pair in any minute of the run: connections taken {accepted},"
        f" attempts {counter.most_per_minute('attempts')},"
        f" handshakes logged {net.handshakes_per_minute()}"
    )
    assert counter.error is None, counter.error
    assert all(count >= 1 for count in accepted.values()), "a pair never connected"
    worst = max(accepted, key=lambda pair: accepted[pair])
    assert accepted[worst] <= HANDSHAKES_PER_MINUTE, (
        f"{worst}: {accepted[worst]} connections taken, each a handshake, in one minute"
    )


def test_no_secret_in_any_log(net: Topology) -> None:
    secrets = {TOKEN: "the peer token"} | {seed(n).hex(): f"{n}'s key" for n in net.names}
    for name in net.names:
        text = (net.root / f"{name}.log").read_text(errors="replace")
        assert len(text) > 0
        for secret, what in secrets.items():
            assert secret not in text, f"{what} in {name}'s log"

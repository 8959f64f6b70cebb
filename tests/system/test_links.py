"""Peer links of real node processes through the relay: a silent partition turns links
stale and closes them, the quorum view shows it from outside, and SIGTERM always stops a
node within QUDAG_SHUTDOWN_TIMEOUT, during redial storms and partitions alike.

Every wait has a deadline; the only fixed pauses are how long a fault lasts before
the next step, which is what these tests vary.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dnsserver import DnsServerProcess, write_records
from tests.network import Load, Member, Network, network
from tests.nodeproc import NodeProcess, request, wait_until

#: DAG_SYNC_INTERVAL of these networks: links turn stale after 2 s, close after 3 s.
INTERVAL = 1.0
STALE_AFTER = max(1.5 * INTERVAL, INTERVAL + 1)
IDLE_TIMEOUT = max(3 * INTERVAL, INTERVAL + 2)
SHUTDOWN_TIMEOUT = 5.0


def quorum(member: Member) -> dict[str, Any]:
    """``p2p.quorum`` of ``member``'s status."""
    doc: dict[str, Any] = member.status()["p2p"]["quorum"]
    return doc


def peer_states(member: Member) -> dict[str, str]:
    """Name -> state of each linked peer of ``member``."""
    code, body = request("GET", member.url + "/api/v1/peers", timeout=10)
    assert code == 200
    return {p["name"]: p["state"] for p in body["peers"] if p["state"] in {"connected", "stale"}}


def records(member: Member, event: str) -> list[dict[str, Any]]:
    return [r for r in member.process.records() if r.get("event") == event]


def start_three(net: Network, host: Callable[[str], str] = lambda _peer: "127.0.0.1") -> None:
    """v1, v2 and v3 of four validators: each is linked to a quorum (three) exactly."""
    for name in ("v1", "v2", "v3"):
        others = [p for p in ("v1", "v2", "v3") if p != name]
        net.start(name, ready=False, peers=others, host=host)
    for name in ("v1", "v2", "v3"):
        member = net.members[name]

        def linked(m: Member = member) -> bool:
            return bool(quorum(m)["can_finalize"])

        wait_until(linked, 60, f"{name} linked to a quorum")


def test_a_silent_partition_is_seen_stale_then_closed_and_the_quorum_shows_it(
    tmp_path: Path,
) -> None:
    with network(tmp_path, DAG_SYNC_INTERVAL=str(INTERVAL)) as net:
        start_three(net)
        v1, v2 = net.members["v1"], net.members["v2"]
        before = quorum(v1)
        assert before["validators_linked"] == 3
        assert before["needed"] == 3
        net.relay.stall("v2")  # packets dropped: no FIN, no RST
        stalled = time.monotonic()
        wait_until(lambda: peer_states(v1).get("v2") == "stale", 10, "v2 stale at v1")
        seen_stale = time.monotonic() - stalled
        cut_off = quorum(v1)
        assert cut_off["can_finalize"] is False  # stale links do not count
        assert cut_off["validators_linked"] == 2
        assert v1.metric("qudag_quorum_linked") == 0
        wait_until(
            lambda: v1.metric("qudag_peer_links_closed_total", {"reason": "idle_timeout"}) >= 1,
            10,
            "v1 closing its silent link to v2",
        )
        closed = time.monotonic() - stalled
        [idle] = [r for r in records(v1, "peer_idle_timeout") if r["peer"] == "v2"]
        assert IDLE_TIMEOUT <= float(idle["silent_seconds"]) < IDLE_TIMEOUT + 1.0
        assert any(r["peer"] == "v2" for r in records(v1, "peer_silent"))
        wait_until(lambda: not quorum(v2)["can_finalize"], 10, "v2 seeing itself cut off")
        net.relay.heal("v2")
        healed = time.monotonic()
        again: dict[str, Any] = {}

        def relinked_to_quorum() -> bool:
            # one read: a second one may already see a link the dialers' tie-break closes
            again.update(quorum(v1))
            return bool(again["can_finalize"])

        wait_until(relinked_to_quorum, 30, "v1 linked to a quorum again")
        relinked = time.monotonic() - healed
        assert again["validators_linked"] == 3
        assert again["since"] > before["since"]
        assert again["for_seconds"] <= time.monotonic() - healed + 1
        assert v1.metric("qudag_quorum_linked") == 1
        net.wait_converged(["v1", "v2", "v3"])
    print(
        f"\nsilent partition (DAG_SYNC_INTERVAL {INTERVAL:g} s): stale after {seen_stale:.1f} s,"
        f" closed after {closed:.1f} s (silent {float(idle['silent_seconds']):.2f} s),"
        f" quorum again {relinked:.1f} s after the heal"
    )


def test_a_validator_back_at_a_new_address_is_linked_again_within_the_bound(
    tmp_path: Path,
) -> None:
    """v2's host vanishes without a word (its links stall, the process is killed) and
    v2 comes back, with its disk, at a new address under the same name and ports. Its
    peers still hold their dead links to the old address, yet link the new one within
    2 x DAG_SYNC_INTERVAL + 10 s."""
    records = tmp_path / "dns.json"
    names = {f"v{i}.internal": ["127.0.0.1"] for i in (1, 2, 3)}
    write_records(records, names)
    dns = DnsServerProcess(records)
    dns_port = dns.start()
    try:
        with network(
            tmp_path, DAG_SYNC_INTERVAL=str(INTERVAL), QUDAG_DNS_SERVERS=f"127.0.0.1:{dns_port}"
        ) as net:
            start_three(net, host=lambda peer: f"{peer}.internal")
            v1, v2, v3 = (net.members[n] for n in ("v1", "v2", "v3"))
            net.relay.stall("v2")  # no FIN, no RST from the vanished host
            v2.process.kill()
            vanished = time.monotonic()
            dead = {m.name: link_address(m, "v2") for m in (v1, v3)}
            # the same ports at v2's new address lead to the new process
            for member in (v1, v3):
                net.relay.listen(member.name, "v2-moved", "127.0.0.2", peer_port(member, "v2"))
            peers = ",".join(
                f"{p}.internal:{net.relay.listen('v2-moved', p)}" for p in ("v1", "v3")
            )
            moved = NodeProcess(
                v2.process.data_dir,
                tmp_path / "v2-moved.log",
                {**v2.process.extra_env, "QUDAG_PEERS": peers},
            )
            moved.start(ready=False)
            code, doc = request("GET", moved.url + "/api/v1/status", timeout=10)
            assert code == 200
            net.relay.target("v2-moved", int(doc["p2p"]["port"]))
            write_records(records, {**names, "v2.internal": ["127.0.0.2"]})
            back = time.monotonic()
            bound = 2 * INTERVAL + 10

            def relinked(member: Member) -> bool:
                address = link_address(member, "v2")  # a new connection, and a live one
                fresh = address is not None and address != dead[member.name]
                live = peer_states(member).get("v2") == "connected"
                return fresh and live and quorum(member)["validators_linked"] == 3

            wait_until(lambda: relinked(v1) and relinked(v3), bound, "v2 linked again")
            took = time.monotonic() - back
            assert took <= bound
            assert moved.stop() == 0
    finally:
        dns.stop()
    print(
        f"\nmoved validator: linked again {took:.1f} s after its return"
        f" ({time.monotonic() - vanished:.0f} s after it vanished), bound {bound:g} s"
    )


def link_address(member: Member, peer: str) -> str | None:
    """The address of ``member``'s link to ``peer`` (another for each connection)."""
    code, body = request("GET", member.url + "/api/v1/peers", timeout=10)
    assert code == 200
    for p in body["peers"]:
        if p["name"] == peer and p["state"] in {"connected", "stale"}:
            return str(p["address"])
    return None


def peer_port(member: Member, peer: str) -> int:
    """The port in ``member``'s QUDAG_PEERS entry for ``peer``."""
    for entry in member.process.extra_env["QUDAG_PEERS"].split(","):
        host, _, port = entry.rpartition(":")
        if host.startswith(f"{peer}."):
            return int(port)
    raise AssertionError(f"{member.name} has no entry for {peer}")


def test_a_validator_partitioned_silently_holds_the_same_log_soon_after_the_heal(
    tmp_path: Path,
) -> None:
    """Four validators; v2 is cut off silently (its links stall: no FIN, no RST) for
    twelve sync intervals while the other three finalize under load. After the heal v2
    holds the same log hash as the others within 20 s."""
    partition = 12 * INTERVAL
    with network(tmp_path, DAG_SYNC_INTERVAL=str(INTERVAL)) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        others = [net.members[n] for n in ("v1", "v3", "v4")]
        v2 = net.members["v2"]
        with Load(lambda: others, threads=3, batch=20) as load:
            wait_until(lambda: others[0].log_head()[0] >= 100, 60, "finalizing")
            net.relay.stall("v2")
            stalled = time.monotonic()
            frozen = v2.log_head()
            wait_until(lambda: not quorum(v2)["can_finalize"], 10, "v2 seeing itself cut off")
            while time.monotonic() - stalled < partition:  # the partition's length
                assert v2.log_head()[0] <= frozen[0] + 50, "v2 cannot finalize alone"
                time.sleep(0.5)
            grown = others[0].log_head()[0]
            assert grown > frozen[0], "the other three went on"
            net.relay.heal("v2")
            healed = time.monotonic()
        assert load.result.errors == []
        head = net.wait_converged(net.validators, at_least=grown, timeout=20)
        caught_up = time.monotonic() - healed
        assert v2.log_head() == head
    print(
        f"\nsilent partition of {partition:g} s (DAG_SYNC_INTERVAL {INTERVAL:g} s): the same"
        f" log hash {caught_up:.1f} s after the heal ({head[0]} entries), bound 20 s"
    )


class Flapper:
    """Cuts and heals one node's links over and over from a thread: a redial storm."""

    def __init__(self, net: Network, name: str, seed: int) -> None:
        self._net, self._name = net, name
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._net.relay.heal(self._name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._net.relay.cut(self._name)
            self._stop.wait(self._random.uniform(0.02, 0.2))
            self._net.relay.heal(self._name)
            self._stop.wait(self._random.uniform(0.02, 0.3))


def test_sigterm_stops_a_node_within_the_shutdown_timeout_during_storms_and_partitions(
    tmp_path: Path,
) -> None:
    runs = 8
    chooser = random.Random(15)
    with network(
        tmp_path, DAG_SYNC_INTERVAL=str(INTERVAL), QUDAG_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)
    ) as net:
        start_three(net)
        v3 = net.members["v3"]
        took = []
        for run in range(runs):
            if run:
                net.restart("v3", ready=False)
                wait_until(lambda: v3.status()["p2p"]["peers"] >= 1, 30, "v3 linked again")
            during = chooser.uniform(0.2, 2.0)
            if run % 2 == 0:
                with Flapper(net, "v3", run):
                    time.sleep(during)  # the storm's length before the signal
                    took.append(stop(v3))
            else:
                net.relay.stall("v3")
                time.sleep(during)  # the partition's length before the signal
                took.append(stop(v3))
                net.relay.heal("v3")
        assert all(t <= SHUTDOWN_TIMEOUT for t in took), took
    print(
        f"\nSIGTERM during {runs} storms and partitions: stopped in"
        f" {min(took):.2f}..{max(took):.2f} s (timeout {SHUTDOWN_TIMEOUT:g} s)"
    )


def stop(member: Member) -> float:
    """SIGTERM ``member``; the seconds until it exited, which must be cleanly (0)."""
    sent = time.monotonic()
    member.process.signal(signal.SIGTERM)
    code = member.process.wait(SHUTDOWN_TIMEOUT + 30)
    seconds = time.monotonic() - sent
    assert code == 0, member.process.logs()[-3000:]
    assert not records(member, "shutdown_timed_out")
    return seconds


@pytest.mark.parametrize("cancelled", [False, True])
def test_the_shutdown_watchdog_ends_a_process_whose_shutdown_hangs(cancelled: bool) -> None:
    """The last resort behind the bound: a process whose shutdown outlasts the timeout
    is ended with exit code 1 and a log line; one that finishes in time is left alone."""
    script = (
        "import time\n"
        "from qudag_node.logs import configure_logging\n"
        "from qudag_node.root import ShutdownWatchdog\n"
        "configure_logging('info', 'json')\n"
        "watchdog = ShutdownWatchdog(0.5)\n"
        "watchdog.start()\n"
        f"if {cancelled}:\n"
        "    watchdog.cancel()\n"
        f"time.sleep({1.0 if cancelled else 20.0})  # a shutdown step past the timeout\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    took = time.monotonic() - started
    if cancelled:
        assert done.returncode == 0, done.stderr
        assert "shutdown_timed_out" not in done.stdout
    else:
        assert done.returncode == 1, done.stderr
        [line] = [json.loads(x) for x in done.stdout.splitlines() if "shutdown_timed_out" in x]
        assert (line["level"], line["seconds"]) == ("error", 0.5)
        assert took < 10.0, "ended by the watchdog, long before the hang would end"

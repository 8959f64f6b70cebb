"""Four validator processes on loopback form one network: load, crashes, partitions,
and a late observer. Every wait has a deadline; no step sleeps for a fixed time."""

from __future__ import annotations

import time
from pathlib import Path

from tests.dnsserver import DnsServerProcess, write_records
from tests.network import TOKEN, Load, Member, Network, network, quantile, seed
from tests.nodeproc import request, submit_json, wait_until


def validators(net: Network) -> list[Member]:
    return [m for m in net.running() if m.name in net.validators]


def grows(member: Member, by: int, timeout: float = 60) -> None:
    """Wait until ``member``'s log has grown by ``by`` entries."""
    start = member.log_head()[0]
    wait_until(lambda: member.log_head()[0] >= start + by, timeout, f"{member.name} finalizing")


def records(member: Member, event: str) -> list[dict[str, object]]:
    return [r for r in member.process.records() if r.get("event") == event]


def test_four_validators_converge_under_load(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        sent_before = sum(
            m.metric("qudag_peer_bytes_total", {"direction": "sent"}) for m in validators(net)
        )
        length_before = net.wait_converged()[0]
        started = time.monotonic()
        with Load(lambda: validators(net), threads=4, batch=50) as load:
            wait_until(lambda: load.result.transactions >= 4000, 90, "4,000 final transactions")
        result = load.result
        length, _ = net.wait_converged(at_least=length_before + result.transactions)
        seconds = time.monotonic() - started
        final = length - length_before
        sent = sum(
            m.metric("qudag_peer_bytes_total", {"direction": "sent"}) for m in validators(net)
        )
        assert result.errors == []
        assert final == result.transactions  # each acknowledged once, none lost or doubled
        for m in validators(net):
            peers = m.status()["p2p"]["peers"]
            assert peers == 3, (m.name, peers)
            logs = m.process.logs()
            assert TOKEN not in logs  # secrets never reach the logs
            assert seed(m.name).hex() not in logs
        p50, p99 = quantile(result.latencies, 0.5), quantile(result.latencies, 0.99)
        print(
            f"\nfour validators: {final} transactions final in {seconds:.1f} s"
            f" ({final / seconds:.0f} tx/s), batch latency p50 {p50:.3f} s p99 {p99:.3f} s,"
            f" {(sent - sent_before) / final:.0f} bytes sent per final transaction"
        )


def test_a_killed_validator_is_not_missed_and_catches_up_after_restart(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        targets = ["v1", "v2", "v3"]
        with Load(lambda: [net.members[n] for n in targets], threads=3, batch=50) as load:
            grows(net.members["v1"], 500)
            net.members["v4"].process.kill()  # SIGKILL, mid-load
            v1 = net.members["v1"]
            grows(v1, 1500)  # f = 1: three validators keep finalizing
            gap_rounds = v1.status()["dag"]["highest_round"]
            assert gap_rounds > 0
            restarted = net.restart("v4", ready=False)
            wait_until(lambda: bool(records(restarted, "caught_up")), 90, "v4 caught up")
            grows(restarted, 500)
        assert load.result.errors == []
        head = net.wait_converged(at_least=load.result.transactions)
        assert restarted.log_head() == head
        [started] = records(restarted, "catch_up_started")
        assert int(str(started["gap"])) > 4
        assert records(restarted, "catching_up") or records(restarted, "caught_up")
        assert net.is_ready("v4")


def test_an_isolated_validator_rejoins_when_healed(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        with Load(lambda: [net.members[n] for n in ("v1", "v3", "v4")], threads=3) as load:
            grows(net.members["v1"], 300)
            net.relay.cut("v2")
            v2 = net.members["v2"]
            wait_until(lambda: v2.status()["p2p"]["peers"] == 0, 30, "v2 cut off")
            frozen = v2.log_head()
            grows(net.members["v3"], 1000)  # the other three go on
            assert v2.log_head()[0] <= frozen[0] + 200  # v2 cannot finalize alone
            net.relay.heal("v2")
            wait_until(lambda: v2.status()["p2p"]["peers"] == 3, 60, "v2 linked again")
            grows(v2, 1000)
        assert load.result.errors == []
        net.wait_converged(at_least=load.result.transactions)


def test_a_late_observer_finds_peers_by_name_and_catches_up(tmp_path: Path) -> None:
    dns_records = tmp_path / "dns.json"
    write_records(
        dns_records, {f"{v}.internal": ["::1", "127.0.0.1"] for v in ("v1", "v2", "v3", "v4")}
    )
    dns = DnsServerProcess(dns_records)
    dns_port = dns.start()
    try:
        with network(tmp_path) as net:
            for name in net.validators:
                net.start(name, ready=False)
            wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
            with Load(lambda: validators(net), threads=4) as load:
                grows(net.members["v1"], 2000)
            net.extra_env["QUDAG_DNS_SERVERS"] = f"127.0.0.1:{dns_port}"
            observer = net.start("o1", ready=False, host=lambda peer: f"{peer}.internal")
            head = net.wait_converged(at_least=load.result.transactions)
            assert observer.log_head() == head
            assert observer.status()["node"]["role"] == "observer"
            wait_until(lambda: net.is_ready("o1"), 30, "the observer ready")
            peers = request("GET", observer.url + "/api/v1/peers")[1]["peers"]
            linked = sorted(p["name"] for p in peers if p["state"] == "connected")
            assert linked == ["v1", "v2", "v3", "v4"]
            assert all(p["role"] == "validator" for p in peers if p["state"] == "connected")
            # a client of the observer: forwarded, final at every node
            code, body = submit_json(observer.url, [b"through the observer"], wait=True)
            assert (code, body["status"]) == (200, "final")
            net.wait_converged(at_least=head[0] + 1)
    finally:
        dns.stop()

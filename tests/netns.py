"""Four hosts in Linux network namespaces, for tests of real network faults.

:class:`Topology` builds, as root, with iproute2, nftables and dnsmasq:

- a bridge in the test's own namespace holding the first address of a random ULA
  prefix (``fdXX:XXXX:XXXX:1::1``), through which the test reaches each node's API;
- one namespace per host (``node1`` .. ``node4``), linked to the bridge by a veth
  pair, each with an IPv6 address of its own in that prefix;
- one more namespace running dnsmasq on ``...::53``, which answers ``nodeN.internal``
  with each host's current address; each host's ``/etc/netns/NAME/resolv.conf``
  (bind-mounted by ``ip netns exec``) names it, so the nodes resolve their peers as on
  Fly, through the system's DNS configuration;
- one real node process per host (``python -m qudag_node run`` inside the namespace)
  on ports 8080 and 7000, every host's node with the same ports.

Faults are nftables tables inside a host's namespace: :meth:`Topology.isolate` drops
every packet between a host and the other nodes (silently: no RST, no ICMP error;
neighbour discovery still works), :meth:`Topology.vanish` drops every packet of a host,
:meth:`Topology.move` gives a host a new address under the same name. Every address
is one the topology made; nothing leaves the bridge. :meth:`Topology.close` undoes
every step that was done, in reverse order, even after a failure half-way.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import pytest

from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.genesis_file import genesis_to_json
from tests.nodeproc import NodeProcess, json_records, metric, request, wait_until
from tests.tools import require_tool, tools_required

API_PORT = 8080
P2P_PORT = 7000
#: A fresh 256-bit token per run, as hex (64 characters).
TOKEN = secrets.token_hex(32)
NETWORK_ID = "qudag-netns-test"
#: Log events that each mark one handshake between two nodes (one end's view of it).
HANDSHAKE_EVENTS = frozenset(
    {"peer_connected", "peer_relinked", "duplicate_link_closed", "handshake_failed"}
)
_COMMAND_TIMEOUT = 30.0
#: Tables this module adds to a host's nftables ruleset.
_CUT, _GONE, _OLD, _COUNT = "qudag_cut", "qudag_gone", "qudag_old", "qudag_count"
#: Seconds between two readings of the connection counters.
COUNT_EVERY = 2.0
#: What the counters count: connections that reach a peer port, and those a node took.
COUNTED = ("attempts", "accepted")


def run(*command: str, netns: str | None = None, stdin: str | None = None) -> str:
    """Run ``command`` (inside ``netns`` if given); its output, or an error with its stderr."""
    argv = ["ip", "netns", "exec", netns, *command] if netns else list(command)
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _skip_or_fail(reason: str) -> None:
    if tools_required():
        pytest.fail(f"QUDAG_REQUIRE_TOOLS is set but {reason}")
    pytest.skip(reason)


def require_namespaces() -> None:
    """Skip the test (or fail it under ``QUDAG_REQUIRE_TOOLS``) unless this process can
    build namespaces: root, iproute2, nftables and dnsmasq, and a kernel that lets it."""
    if os.geteuid() != 0:
        _skip_or_fail("network namespaces need root (run the tests as root)")
    for tool in ("ip", "nft", "dnsmasq"):
        require_tool(tool)
    name = f"qprobe{os.getpid()}"
    try:
        run("ip", "netns", "add", name)
    except RuntimeError as e:
        _skip_or_fail(f"cannot create a network namespace here: {e}")
    try:
        run("nft", "add", "table", "inet", "probe", netns=name)
    except RuntimeError as e:
        _skip_or_fail(f"nftables does not work in a network namespace here: {e}")
    finally:
        run("ip", "netns", "del", name)


def netem_missing() -> str | None:
    """Why the kernel cannot delay packets with netem (``sch_netem``), or None if it can."""
    name = f"qnetem{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "set", "lo", "up", netns=name)
        run("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", netns=name)
    except RuntimeError as e:
        return f"the kernel has no netem qdisc (sch_netem): {e}"
    finally:
        run("ip", "netns", "del", name)
    return None


#: The hosts' network signs in the scheme of new networks.
SCHEME = Scheme.MLDSA65_ED25519


def seed(name: str) -> bytes:
    """A fixed private key per host, so a restart (even on an empty disk) keeps it."""
    size = PRIVATE_KEY_SIZES[SCHEME]
    return f"netns {name}".encode().ljust(size, b".")[:size]


class NsNode(NodeProcess):
    """A node process inside a host's namespace, reached at that host's address."""

    def __init__(self, host: Host, data_dir: Path, log_path: Path, env: Mapping[str, str]) -> None:
        command = ("ip", "netns", "exec", host.netns, sys.executable, "-m", "qudag_node", "run")
        super().__init__(data_dir, log_path, env, command)
        self.host = host

    @property
    def url(self) -> str:
        """Base URL of the API at the host's current address."""
        return f"http://[{self.host.address}]:{API_PORT}"


@dataclass
class Host:
    """One namespace and its node; ``address`` changes when the host moves."""

    name: str
    netns: str
    address: str
    #: Every address the host ever had, to tell whose a logged address is.
    addresses: list[str] = field(default_factory=list)
    node: NsNode | None = None
    started_at: float | None = None  # monotonic time of the latest start

    @property
    def url(self) -> str:
        """Base URL of its node's API."""
        return f"http://[{self.address}]:{API_PORT}"

    def running(self) -> bool:
        """Whether its node process is alive."""
        return (
            self.node is not None and self.node.proc is not None and self.node.proc.poll() is None
        )

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET ``path`` of its API as JSON; fails unless the answer is 200."""
        code, body = request("GET", self.url + path, timeout=timeout)
        assert code == 200, (self.name, path, code, body)
        return body

    def log_head(self) -> tuple[int, str]:
        """(length, hash) of its finalized log."""
        doc = self.get("/api/v1/status")["log"]
        return int(doc["length"]), str(doc["hash"])

    def peers(self) -> list[dict[str, Any]]:
        """Its ``/api/v1/peers`` entries."""
        return list(self.get("/api/v1/peers")["peers"])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        return metric(self.url, name, labels)


def address_host(address: str) -> str:
    """The IP of ``[ip]:port`` or ``ip:port``, normalised."""
    text = address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
    return str(ipaddress.ip_address(text))


class Topology:
    """Hosts ``node1``..``nodeN`` in namespaces on one bridge, names from dnsmasq.

    Use as a context manager; :meth:`start` then runs the nodes. Each node's log is
    ``root/nodeN.log`` (every run appended), its data ``root/nodeN``.
    """

    def __init__(self, root: Path, size: int = 4, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.tag = f"qn{os.getpid() % 100000}"
        # A random ULA prefix (RFC 4193): nothing here can reach anything real.
        gid = secrets.token_hex(5)
        self.prefix = f"fd{gid[:2]}:{int(gid[2:6], 16):x}:{int(gid[6:10], 16):x}:1"
        self.bridge = f"{self.tag}br"
        self.gateway = f"{self.prefix}::1"  # the test's own address on the bridge
        self.dns_address = f"{self.prefix}::53"
        self.dns_netns = f"{self.tag}-dns"
        self.env = dict(env or {})
        self.hosts = {
            f"node{i}": Host(f"node{i}", f"{self.tag}-node{i}", self._address(i, 0))
            for i in range(1, size + 1)
        }
        self.names = list(self.hosts)
        for host in self.hosts.values():
            host.addresses.append(host.address)
        self._moves: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._hosts_file = root / "dns-hosts"
        self.genesis_path = root / "genesis.json"

    def _address(self, index: int, move: int) -> str:
        return str(ipaddress.ip_address(f"{self.prefix}::{move + 1}:{index}"))

    # ----------------------------------------------------------- building

    def __enter__(self) -> Topology:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _did(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def _build(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self._did("bridge", lambda: run("ip", "link", "del", self.bridge))
        run("ip", "addr", "add", f"{self.gateway}/64", "dev", self.bridge, "nodad")
        run("ip", "link", "set", self.bridge, "up")
        self._namespace(self.dns_netns, "d", self.dns_address)
        for i, host in enumerate(self.hosts.values(), 1):
            self._namespace(host.netns, str(i), host.address)
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True)
            self._did(f"/etc/netns/{host.netns}", functools.partial(_remove_tree, etc))
            # A short timeout: the nodes bound each resolution themselves.
            (etc / "resolv.conf").write_text(
                f"nameserver {self.dns_address}\noptions timeout:1 attempts:2\n"
            )
            # Connections to the peer port: every attempt that reaches it (after any
            # drop rule, so a SYN lost to a partition is not counted), by source, and
            # every one a listener took (its SYN-ACK), by destination.
            syn, syn_ack = "tcp flags & (syn | ack) == syn", "tcp flags & (syn | ack) == syn | ack"
            self._nft(
                host.name,
                _COUNT,
                [
                    "input { type filter hook input priority 10; policy accept; "
                    f"tcp dport {P2P_PORT} {syn} update @attempts {{ ip6 saddr counter }}; }}",
                    "output { type filter hook output priority 10; policy accept; "
                    f"tcp sport {P2P_PORT} {syn_ack} update @accepted {{ ip6 daddr counter }}; }}",
                ],
                sets=[
                    f"{kind} {{ type ipv6_addr; flags dynamic; size 65535; counter; }}"
                    for kind in COUNTED
                ],
            )
        self._write_hosts()
        self._start_dnsmasq()
        validators = tuple(Validator(n, Signer(seed(n)).public_key) for n in self.names)
        self.genesis_path.write_text(genesis_to_json(Genesis(NETWORK_ID, validators, SCHEME)))

    def _namespace(self, netns: str, suffix: str, address: str) -> None:
        run("ip", "netns", "add", netns)
        self._did(f"namespace {netns}", lambda: run("ip", "netns", "del", netns))
        outside = f"{self.tag}v{suffix}"
        # The namespace's end is created inside it. Deleting either end deletes both,
        # even while closing sockets still keep the namespace itself alive.
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._did(f"veth {outside}", lambda: run("ip", "link", "del", outside))
        run("ip", "link", "set", outside, "master", self.bridge, "up")
        run("ip", "link", "set", "lo", "up", netns=netns)
        run("ip", "link", "set", "eth0", "up", netns=netns)
        run("ip", "addr", "add", f"{address}/64", "dev", "eth0", "nodad", netns=netns)

    def _write_hosts(self) -> None:
        lines = [f"{h.address} {h.name}.internal\n" for h in self.hosts.values()]
        staged = self._hosts_file.with_suffix(".tmp")
        staged.write_text("".join(lines))
        staged.replace(self._hosts_file)

    def _start_dnsmasq(self) -> None:
        log = self.root / "dnsmasq.log"
        with log.open("ab") as out:
            self._dnsmasq = subprocess.Popen(
                [
                    "ip", "netns", "exec", self.dns_netns, "dnsmasq",
                    "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", f"--addn-hosts={self._hosts_file}", "--local=/internal/",
                    f"--listen-address={self.dns_address}", "--bind-interfaces",
                    "--port=53", "--user=root", "--pid-file=", "--local-ttl=1",
                    "--log-facility=-",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._did("dnsmasq", self._stop_dnsmasq)
        first = next(iter(self.hosts.values()))
        wait_until(lambda: self.resolve(first.name) == [first.address], 10, "dnsmasq answering")

    def _stop_dnsmasq(self) -> None:
        if self._dnsmasq is not None and self._dnsmasq.poll() is None:
            self._dnsmasq.kill()
            self._dnsmasq.wait(10)

    def resolve(self, name: str) -> list[str]:
        """What dnsmasq answers for ``name.internal`` (AAAA), asked from the bridge."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.dns_address]
        resolver.lifetime = 1.0
        try:
            answer = resolver.resolve(f"{name}.internal", "AAAA", search=False)
        except dns.exception.DNSException:
            return []
        return sorted(str(ipaddress.ip_address(r.address)) for r in answer)

    def close(self) -> None:
        """Stop every process and undo every step, newest first; raise what failed."""
        for host in self.hosts.values():
            if host.node is not None:
                host.node.kill()
        failures = []
        try:
            self._let_sockets_close()
        except Exception as e:  # go on: the rest must go too
            failures.append(f"closing sockets: {e}")
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # go on: the rest must go too
                failures.append(f"{what}: {e}")
        if failures:
            raise RuntimeError("teardown failed: " + "; ".join(failures))

    def _let_sockets_close(self) -> None:
        """Lift every fault and give the killed nodes' connections a moment to finish
        closing: a namespace lives on, unnamed, until its last socket has closed."""
        built = set(run("ip", "netns", "list").split())
        names = [h.name for h in self.hosts.values() if h.netns in built]
        for name in names:
            self.heal(name)
            self._drop_table(name, _OLD)

        def closed() -> bool:
            return all(
                line.startswith("TIME-WAIT")
                for name in names
                for line in run("ss", "-Htan", netns=self.hosts[name].netns).splitlines()
            )

        with contextlib.suppress(AssertionError):  # unclosed ones time out on their own
            wait_until(closed, 5, "the killed nodes' connections closed")

    # -------------------------------------------------------------- nodes

    def start(self, name: str, ready: bool = False) -> Host:
        """Start ``name``'s node (its data dir kept from a previous run, if any)."""
        host = self.hosts[name]
        if host.node is None:
            env = {
                "NODE_ID": name,
                "NODE_PRIVATE_KEY": seed(name).hex(),
                "QUDAG_GENESIS": str(self.genesis_path),
                "PEER_AUTH_TOKEN": TOKEN,
                "QUDAG_PEERS": ",".join(
                    f"{other}.internal:{P2P_PORT}" for other in self.names if other != name
                ),
                "QUDAG_API_PORT": str(API_PORT),
                "QUDAG_P2P_PORT": str(P2P_PORT),
                **self.env,
            }
            host.node = NsNode(host, self.root / name, self.root / f"{name}.log", env)
        host.started_at = time.monotonic()
        host.node.start(ready=ready)
        return host

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s node."""
        node = self.hosts[name].node
        if node is not None:
            node.kill()

    def terminate(self, name: str, timeout: float) -> tuple[float, int | None]:
        """SIGTERM ``name``'s node and wait up to ``timeout`` s: (seconds, exit code), the
        code None (and the process killed) if it had not exited by then."""
        node = self.hosts[name].node
        assert node is not None
        assert node.proc is not None
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        try:
            code: int | None = node.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            node.kill()
        return time.monotonic() - started, code

    # -------------------------------------------------------------- faults

    def _nft(self, name: str, table: str, chains: Iterable[str], sets: Iterable[str] = ()) -> None:
        body = "".join(f"  set {s}\n" for s in sets)
        body += "".join(f"  chain {c}\n" for c in chains)
        run(
            "nft",
            "-f",
            "-",
            netns=self.hosts[name].netns,
            stdin=f"table inet {table} {{\n{body}}}\n",
        )

    def _drop_table(self, name: str, table: str) -> None:
        netns = self.hosts[name].netns
        if f"table inet {table}" in run("nft", "list", "tables", netns=netns):
            run("nft", "delete", "table", "inet", table, netns=netns)

    def isolate(self, name: str) -> None:
        """Drop, silently, every packet between ``name`` and the other nodes (the test's
        own address and DNS stay reachable; neighbour discovery goes on)."""
        kept = f"{{ {self.gateway}, {self.dns_address} }}"
        others = f"ip6 saddr {self.prefix}::/64 ip6 saddr != {kept}"
        out = f"ip6 daddr {self.prefix}::/64 ip6 daddr != {kept}"
        self._nft(
            name,
            _CUT,
            [
                "input { type filter hook input priority 0; "
                f"{others} meta l4proto != ipv6-icmp drop; }}",
                "output { type filter hook output priority 0; "
                f"{out} meta l4proto != ipv6-icmp drop; }}",
            ],
        )

    def heal(self, name: str) -> None:
        """Undo :meth:`isolate` and :meth:`vanish` for ``name``."""
        self._drop_table(name, _CUT)
        self._drop_table(name, _GONE)

    def vanish(self, name: str) -> None:
        """Drop every packet in and out of ``name``, then SIGKILL its node: to the others
        the host is gone without a FIN or an RST."""
        self._nft(
            name,
            _GONE,
            [
                "input { type filter hook input priority -300; policy drop; }",
                "output { type filter hook output priority -300; policy drop; }",
            ],
        )
        self.kill(name)

    def move(self, name: str) -> str:
        """Give vanished ``name`` a new address under the same name and let its packets
        through again; packets to the old address stay dropped. Returns the address
        once dnsmasq answers it."""
        host = self.hosts[name]
        self._moves[name] += 1
        new = self._address(self.names.index(name) + 1, self._moves[name])
        old = host.address
        run("ip", "addr", "del", f"{old}/64", "dev", "eth0", netns=host.netns)
        run("ip", "addr", "add", f"{new}/64", "dev", "eth0", "nodad", netns=host.netns)
        self._drop_table(name, _OLD)
        self._nft(
            name,
            _OLD,
            [
                f"gone_in {{ type filter hook prerouting priority -300; ip6 daddr {old} drop; }}",
                f"gone_out {{ type filter hook output priority -300; ip6 saddr {old} drop; }}",
            ],
        )
        self._drop_table(name, _GONE)
        host.address = new
        host.addresses.append(new)
        self._write_hosts()
        assert self._dnsmasq is not None
        self._dnsmasq.send_signal(signal.SIGHUP)  # re-reads the hosts file
        wait_until(lambda: self.resolve(name) == [new], 10, f"{name}.internal -> {new}")
        return new

    def delay(self, milliseconds: int, jitter: int) -> None:
        """Delay every packet a host sends by ``milliseconds`` +/- ``jitter`` (netem)."""
        for host in self.hosts.values():
            run(
                "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                "delay", f"{milliseconds}ms", f"{jitter}ms", netns=host.netns,
            )  # fmt: skip

    def no_delay(self) -> None:
        """Undo :meth:`delay`."""
        for host in self.hosts.values():
            if "netem" in run("tc", "qdisc", "show", "dev", "eth0", netns=host.netns):
                run("tc", "qdisc", "del", "dev", "eth0", "root", netns=host.netns)

    # -------------------------------------------------------------- checks

    def owner(self, address: str) -> str | None:
        """Which host ever had the IP of ``address`` (``[ip]:port``)."""
        try:
            return self.owner_of_ip(address_host(address))
        except ValueError:
            return None

    def owner_of_ip(self, text: str) -> str | None:
        """Which host ever had the IP ``text``."""
        ip = str(ipaddress.ip_address(text))
        for host in self.hosts.values():
            if ip in host.addresses:
                return host.name
        return None

    def linked(self, name: str) -> set[str]:
        """The peers ``name`` shows as connected at their current address."""
        out = set()
        for view in self.hosts[name].peers():
            peer = view.get("name")
            if view["state"] != "connected" or peer not in self.hosts:
                continue
            if address_host(view["address"]) == self.hosts[peer].address:
                out.add(peer)
        return out

    def meshed(self, names: Iterable[str] | None = None) -> bool:
        """Every named (default: every) host linked to every other at its current address."""
        names = list(names or self.names)
        try:
            return all(self.linked(n) >= set(self.names) - {n} for n in names)
        except AssertionError:  # an API not answering yet
            return False

    def heads(self, names: Iterable[str] | None = None) -> dict[str, tuple[int, str]]:
        """Each named host's log head."""
        return {n: self.hosts[n].log_head() for n in (names or self.names)}

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log record of every run of ``name``'s node."""
        path = self.root / f"{name}.log"
        if not path.exists():
            return []
        return json_records(path.read_text(errors="replace"))

    def connections(self, kind: str) -> dict[tuple[str, str], int]:
        """Connections to each host's peer port so far, ``attempts`` that reached it or
        ones it ``accepted``: (from, to) -> count."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for host in self.hosts.values():
            listing = run("nft", "-j", "list", "set", "inet", _COUNT, kind, netns=host.netns)
            for item in json.loads(listing)["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    source = self.owner_of_ip(str(elem["elem"]["val"]))
                    if source is not None:
                        out[(source, host.name)] += int(elem["elem"]["counter"]["packets"])
        return out

    def handshakes(self, since: datetime | None = None) -> dict[tuple[str, str], list[datetime]]:
        """When each host logged a handshake with each other host: (host, peer) -> times.

        A handshake shows as ``peer_connected`` or ``handshake_failed``; the peer is the
        record's ``peer`` or the host its address belongs to.
        """
        out: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for name in self.names:
            for record in self.records(name):
                if record.get("event") not in HANDSHAKE_EVENTS:
                    continue
                at = datetime.fromisoformat(str(record["timestamp"]))
                if since is not None and at < since:
                    continue
                peer = record.get("peer")
                if peer not in self.hosts:
                    peer = self.owner(str(record.get("address", "")))
                if peer is not None and peer != name:
                    out[(name, str(peer))].append(at)
        return out

    def handshakes_per_minute(self, since: datetime | None = None) -> dict[str, int]:
        """The most handshakes of each pair of hosts in any 60 s: per pair, the larger of
        its two ends' counts (each end logs the handshakes it completed or failed)."""
        seen = self.handshakes(since)
        out = {}
        for i, a in enumerate(self.names):
            for b in self.names[i + 1 :]:
                out[f"{a}-{b}"] = max(
                    most_in_window(seen.get((a, b), []), 60.0),
                    most_in_window(seen.get((b, a), []), 60.0),
                )
        return out


class ConnectionCounter:
    """Reads :meth:`Topology.connections` every :data:`COUNT_EVERY` seconds in a thread
    of its own, to tell the most connections between two hosts in any minute. Each
    reading is also appended to ``connections.jsonl`` in the topology's directory."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._stop = threading.Event()
        self._lock = threading.Lock()
        #: (monotonic time, {kind: {pair of hosts: connections so far}})
        self.samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        self.error: str | None = None
        self._journal = topology.root / "connections.jsonl"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        names = self._topology.names
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        while True:
            sample = {}
            try:
                for kind in COUNTED:
                    counts = self._topology.connections(kind)
                    sample[kind] = {
                        f"{a}-{b}": counts.get((a, b), 0) + counts.get((b, a), 0) for a, b in pairs
                    }
            except Exception as e:  # reported by the test that reads the figures
                self.error = f"{type(e).__name__}: {e}"
                return
            with self._lock:
                self.samples.append((time.monotonic(), sample))
            with self._journal.open("a") as out:
                out.write(json.dumps({"time": time.time(), **sample}) + "\n")
            if self._stop.wait(COUNT_EVERY):
                return

    def most_per_minute(self, kind: str = "accepted", since: float = 0.0) -> dict[str, int]:
        """Per pair of hosts, the most connections of ``kind`` (either way) within 60 s,
        from ``since`` (monotonic) on: each reading minus the last one at least 60 s
        older, or the last one before ``since`` (so no figure spans less than 60 s but
        the first minute's)."""
        with self._lock:
            before = [(t, c[kind]) for t, c in self.samples if t < since][-1:]  # baseline
            samples = before + [(t, c[kind]) for t, c in self.samples if t >= since]
        out: dict[str, int] = defaultdict(int)
        first = 0
        for at, counts in samples:
            while first + 1 < len(samples) and samples[first + 1][0] <= at - 60.0:
                first += 1
            for pair, count in counts.items():
                out[pair] = max(out[pair], count - samples[first][1][pair])
        return dict(out)


def most_in_window(times: list[datetime], seconds: float) -> int:
    """The most of ``times`` within any ``seconds``-long window."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while (at - ordered[first]).total_seconds() >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()

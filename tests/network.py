"""A network of real node processes on loopback whose links all pass through a relay.

Every node knows each other node by a relay port of its own (``listen SRC DST``), so
the test can cut one node off from all others and heal it again. Every port is
chosen by the kernel (port 0): nodes start with peers that are relay ports, and the
relay learns each node's peer port once the node has started.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.genesis_file import genesis_to_json
from tests.nodeproc import NodeProcess, metric, request, submit_json, wait_until
from tests.relay import Relay

TOKEN = "3b8e0f61c5a9d2474e1b6c08f3a5d7e92c4b1a6f80d3e5c7b9a2f4d6e8c01357"  # noqa: S105 - a test value
NETWORK_ID = "qudag-process-test"


def seed(name: str, scheme: Scheme = Scheme.MLDSA65_ED25519) -> bytes:
    """A fixed private key of ``scheme`` per node name, so restarts keep their identity."""
    size = PRIVATE_KEY_SIZES[scheme]
    return name.encode().ljust(size, b".")[:size]


@dataclass
class Member:
    """One node of the network."""

    name: str
    process: NodeProcess
    peers: list[str]

    @property
    def url(self) -> str:
        return self.process.url

    def status(self) -> dict[str, Any]:
        code, body = request("GET", self.url + "/api/v1/status", timeout=10)
        assert code == 200, (code, body)
        assert isinstance(body, dict)
        return body

    def log_head(self) -> tuple[int, str]:
        """(length, hash) of its finalized log."""
        doc = self.status()["log"]
        return int(doc["length"]), str(doc["hash"])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        return metric(self.url, name, labels)


@dataclass
class Network:
    """Validators ``v1..vN`` (and observers added later), linked through one relay."""

    root: Path
    relay: Relay
    genesis_path: Path
    validators: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    scheme: Scheme = Scheme.MLDSA65_ED25519

    # ------------------------------------------------------------- nodes

    def start(
        self,
        name: str,
        ready: bool = True,
        peers: Sequence[str] = (),
        host: Callable[[str], str] = lambda _peer: "127.0.0.1",
    ) -> Member:
        """Start ``name`` (a validator or an observer) linked to ``peers`` (default:
        every validator but itself) through relay ports of its own; ``host`` names
        each peer's host in ``QUDAG_PEERS`` (a DNS name, say)."""
        peers = list(peers) or [v for v in self.validators if v != name]
        addresses = [f"{host(p)}:{self.relay.listen(name, p)}" for p in peers]
        return self._launch(name, peers, ",".join(addresses), ready)

    def _launch(self, name: str, peers: list[str], peer_setting: str, ready: bool) -> Member:
        env = {
            "NODE_ID": name,
            "NODE_PRIVATE_KEY": seed(name, self.scheme).hex(),
            "QUDAG_GENESIS": str(self.genesis_path),
            "PEER_AUTH_TOKEN": TOKEN,
            "QUDAG_PEERS": peer_setting,
            "DAG_SYNC_INTERVAL": "1",
            **self.extra_env,
        }
        process = NodeProcess(self.root / name, self.root / f"{name}.log", env)
        member = Member(name, process, peers)
        self.members[name] = member
        process.start(ready=False)
        self.relay.target(name, int(member.status()["p2p"]["port"]))
        if ready:
            wait_until(lambda: self.is_ready(name), 60, f"{name} ready")
        return member

    def restart(self, name: str, ready: bool = True) -> Member:
        """Start a stopped or killed member again with the same key and data."""
        member = self.members[name]
        member.process.start(ready=False)
        self.relay.target(name, int(member.status()["p2p"]["port"]))
        if ready:
            wait_until(lambda: self.is_ready(name), 60, f"{name} ready")
        return member

    def is_ready(self, name: str) -> bool:
        code, _ = request("GET", self.members[name].url + "/ready", timeout=10)
        return code == 200

    def running(self) -> list[Member]:
        return [
            m for m in self.members.values() if m.process.proc and m.process.proc.poll() is None
        ]

    def stop_all(self) -> None:
        for member in self.members.values():
            member.process.stop()

    # ----------------------------------------------------------- checks

    def heads(self, names: Sequence[str] | None = None) -> dict[str, tuple[int, str]]:
        members = [self.members[n] for n in names] if names else self.running()
        return {m.name: m.log_head() for m in members}

    def converged(self, names: Sequence[str] | None = None, at_least: int = 0) -> bool:
        """All named (default: running) members hold the same log of ``at_least`` entries."""
        heads = set(self.heads(names).values())
        return len(heads) == 1 and next(iter(heads))[0] >= at_least

    def wait_converged(
        self, names: Sequence[str] | None = None, at_least: int = 0, timeout: float = 60
    ) -> tuple[int, str]:
        wait_until(
            lambda: self.converged(names, at_least),
            timeout,
            f"the same log of at least {at_least} entries on {names or 'every running node'}",
        )
        [head] = set(self.heads(names).values())
        return head


@contextmanager
def network(
    root: Path, size: int = 4, scheme: Scheme = Scheme.MLDSA65_ED25519, **extra_env: str
) -> Iterator[Network]:
    """A genesis of validators v1..v{size} signing in ``scheme`` (the default of new
    networks unless told) and a relay; every process ends on exit."""
    validators = [f"v{i + 1}" for i in range(size)]
    genesis = Genesis(
        NETWORK_ID,
        tuple(Validator(n, Signer(seed(n, scheme)).public_key) for n in validators),
        scheme,
    )
    path = root / "genesis.json"
    path.write_text(genesis_to_json(genesis))
    with Relay() as relay:
        net = Network(root, relay, path, validators, dict(extra_env), scheme=scheme)
        try:
            yield net
        finally:
            for member in net.members.values():
                member.process.kill()


@dataclass
class LoadResult:
    """What a load generator saw: transactions finalized and each batch's latency."""

    transactions: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Load:
    """Threads that submit batches with ``wait=final`` to members in turn, steadily."""

    def __init__(
        self,
        targets: Callable[[], list[Member]],
        threads: int = 4,
        batch: int = 50,
        size: int = 256,
        pause: float = 0.05,
    ) -> None:
        self._targets = targets
        self._batch = batch
        self._size = size
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.result = LoadResult()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)
        ]
        self._counter = 0

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self.result

    def _next_batch(self) -> list[bytes]:
        with self._lock:
            self._counter += 1
            n = self._counter
        return [
            f"load {n} {k} ".encode().ljust(self._size, b"x")[: self._size]
            for k in range(self._batch)
        ]

    def _run(self, k: int) -> None:
        turn = k
        while not self._stop.is_set():
            members = self._targets()
            if not members:
                self._stop.wait(0.1)
                continue
            member = members[turn % len(members)]
            turn += 1
            started = time.monotonic()
            code, body = submit_json(member.url, self._next_batch(), wait=True)
            elapsed = time.monotonic() - started
            with self._lock:
                if code == 200 and isinstance(body, dict) and body.get("status") == "final":
                    self.result.transactions += self._batch
                    self.result.latencies.append(elapsed)
                else:
                    self.result.errors.append(f"{member.name}: {code} {json.dumps(body)[:200]}")
            self._stop.wait(self._pause)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

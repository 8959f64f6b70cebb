"""Deterministic simulation of a QuDAG network: N engines, one manual clock, one seed.

Every message goes through the real codec and the real engine. The network is a
priority queue of deliveries; a seeded :class:`random.Random` decides each delay,
loss, duplication and, through the delays, the order of arrival. A scenario adds
faults: partitions that heal, a validator that crashes and restarts from its store
(an in-memory :class:`~tests.core.simstore.MemoryStore`), a silent validator, an
equivocating validator, a validator that signs wrong checkpoints, and an observer that
forwards its clients' transactions.

Each step of a node feeds its engine one input, then runs the node's own
:class:`~qudag_node.pump.Pump` over the node's in-memory store: the facts are
persisted, orphaned transactions read back and requeued, forwarded ones admitted,
then the messages sent and fetches answered. The memory store answers without
suspending, so :func:`run_now` drives each pump step to its end synchronously. The
one clock gives the engines both their monotonic and their wall-clock time; the
engines share one verifier, so each signature is checked once per run.

Replay one run (``--scheme mldsa65-ed25519`` for a network of composite keys)::

    .venv/bin/python -m tests.core.sim --seed 17 --validators 4
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import random
import statistics
import sys
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, assert_never

from qudag_node.core.checkpoint import CertifiedCheckpoint, Checkpoint, check_certified
from qudag_node.core.crypto import (
    PRIVATE_KEY_SIZES,
    SCHEME_LABELS,
    Purpose,
    Scheme,
    SequentialVerifier,
    Signer,
    log_hash_start,
    tx_ids,
)
from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    EquivocationDetected,
    LeaderCommitted,
    MessageRejected,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.evidence import decode_equivocation
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.messages import (
    CheckpointSignatureMessage,
    MessageType,
    ProposalMessage,
    encode_message,
)
from qudag_node.core.params import Params
from qudag_node.core.retention import Retention
from qudag_node.core.types import PeerId, TxId, VertexId
from qudag_node.core.vertex import decode_vertex, make_vertex
from qudag_node.pump import Pump, PumpStep, deliver
from tests.core.simjoin import (
    CheckpointTracker,
    Joined,
    certified_latest,
    forged,
    join,
    joined_store,
    joined_tracker,
)
from tests.core.simstore import MemoryStore
from tests.core.support import moment

#: Engine parameters of simulated nodes: production defaults, shorter idle heartbeat.
SIM_PARAMS = Params(
    min_round_interval=0.05,
    heartbeat_interval=2.0,
    leader_timeout=1.0,
    retry_interval=0.5,
    gc_depth=20,
    checkpoint_interval=4,
)
#: How long simulated nodes keep final data (pruned at each checkpoint they certify): a
#: crashed validator (away up to 8.5 s) or a partitioned one (up to 5 s) still finds what
#: it missed at its peers, as on a real network whose retention is longer than its
#: outages. A node that falls behind its peers' retention while running needs the sync
#: machine's state sync, which the simulation runs for the joiner only.
SIM_RETENTION = Retention(rounds=8)


#: The name of the node that joins late by state sync (an observer).
JOINER = PeerId("joiner")
#: Seconds a validator joiner is away between losing its store and rejoining.
REJOIN_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Faults:
    """The fault mix of one run (times in simulated seconds)."""

    loss: float = 0.0
    duplication: float = 0.0
    partition: tuple[float, float] | None = None  # (start, heal)
    crash: tuple[float, float] | None = None  # (down, back up) for one validator
    silent: bool = False  # one validator never speaks
    equivocator: bool = False  # one validator signs two vertices per round
    wrong_checkpoint: bool = False  # one validator signs another digest for each checkpoint
    #: whom the equivocator sends its second vertex: one honest validator (so the first
    #: can still be certified) or every other one (so neither can be)
    twin_to: str = "one"
    observer: bool = True  # an observer that forwards its clients' transactions
    #: when an observer that had nothing starts and joins by state sync (None: none)
    joiner: float | None = None
    #: the joiner is the last validator instead: its store is wiped at ``joiner`` and
    #: it rejoins a second later by state sync (only when no validator misbehaves)
    joiner_validator: bool = False


def random_faults(rng: random.Random) -> Faults:
    """A fault mix drawn from ``rng``: at most one validator misbehaves (within f, n >= 4)."""
    byzantine = rng.choice(["none", "silent", "equivocator", "crash", "wrong_checkpoint"])
    start = rng.uniform(0.5, 4.0)
    return Faults(
        loss=rng.choice([0.0, 0.02, 0.1]),
        duplication=rng.choice([0.0, 0.05]),
        partition=(start, start + rng.uniform(0.5, 5.0)) if rng.random() < 0.5 else None,
        crash=(rng.uniform(0.5, 4.0), rng.uniform(4.5, 9.0)) if byzantine == "crash" else None,
        silent=byzantine == "silent",
        equivocator=byzantine == "equivocator",
        wrong_checkpoint=byzantine == "wrong_checkpoint",
        twin_to=rng.choice(["one", "half"]),
        observer=rng.random() < 0.5,
        joiner=(joiner := rng.uniform(2.0, 8.0) if rng.random() < 0.3 else None),
        joiner_validator=joiner is not None and byzantine == "none" and rng.random() < 0.5,
    )


def run_now(step: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that must finish without suspending (a pump step over the
    memory store, whose answers are there at once)."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise AssertionError("a simulated pump step suspended")


@dataclass(slots=True)
class SimNode:
    """One simulated node: its pump (and the engine it drives), its durable store, and
    its fault."""

    name: PeerId
    signer: Signer
    pump: Pump[None]
    store: MemoryStore
    up: bool = True
    timer: float = 0.0  # what engine.get_timer() said after the last step
    silent: bool = False
    equivocator: bool = False
    wrong_checkpoint: bool = False
    rejected: list[MessageRejected] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        """The engine the node's pump drives."""
        return self.pump.engine


class _Durable:
    """The group commit of a simulated node: a step is durable once put; then its
    messages go out on the simulated network and its fetches are answered."""

    def __init__(self, sim: Simulation, name: PeerId) -> None:
        self._sim = sim
        self._name = name

    async def put(self, step: PumpStep[None]) -> None:
        node = self._sim.nodes[self._name]
        node.store.persist(step.facts)
        self._sim.observe(node, step)
        await deliver(step, node.store, self)

    async def flush(self) -> None:
        """Every step is durable once put: nothing to wait for."""

    def send(self, peer: PeerId, data: bytes) -> bool:
        """The node's link to ``peer``: the simulated network."""
        self._sim.send_from(self._sim.nodes[self._name], peer, data)
        return True


@dataclass(slots=True)
class RunResult:
    """What one run showed."""

    seed: int
    validators: int
    scheme: Scheme
    faults: Faults
    safe: bool
    live: bool
    detail: str
    end_time: float
    latencies: list[float]
    log_length: int
    log_hash: bytes
    equivocations: int
    messages: int
    #: the highest checkpoint number an honest node certified
    checkpoints: int = 0
    #: most vertices one honest node's retention pruned
    pruned_vertices: int = 0
    #: nodes that joined from a certified checkpoint
    state_synced: int = 0
    #: signatures of a wrong checkpoint honest nodes refused (``bad_checkpoint``)
    refused_checkpoints: int = 0


class Simulation:
    """N validators (plus an optional observer) on a seeded, faulty network, signing in
    ``scheme`` (each key made from the seed's random bytes, as many as its private key
    has)."""

    def __init__(
        self,
        seed: int,
        validators: int,
        faults: Faults,
        txs: int = 40,
        scheme: Scheme = Scheme.ED25519,
        retention: Retention = SIM_RETENTION,
    ) -> None:
        self.seed = seed
        self.retention = retention  # archive: the nodes keep everything
        self.rng = random.Random(seed)
        self.faults = faults
        self.now = 0.0
        self._queue: list[tuple[float, int, PeerId, PeerId, bytes]] = []
        self._outbox: list[tuple[PeerId, PeerId, bytes]] = []  # this step's sends
        self._sequence = 0
        self.messages = 0
        key_size = PRIVATE_KEY_SIZES[scheme]
        signers = [Signer(self.rng.randbytes(key_size)) for _ in range(validators)]
        self.genesis = Genesis(
            "qudag-sim",
            tuple(Validator(f"v{i}", s.public_key) for i, s in enumerate(signers)),
            scheme,
        )
        self.params = SIM_PARAMS
        self.verifier = SequentialVerifier()  # one for every engine: each checks once
        self.nodes: dict[PeerId, SimNode] = {}
        self.trackers: dict[PeerId, CheckpointTracker] = {}
        for i, s in enumerate(signers):
            self._add_node(PeerId(f"v{i}"), s)
        if faults.observer:
            self._add_node(PeerId("observer"), Signer(self.rng.randbytes(key_size)))
        if faults.joiner is not None and not faults.joiner_validator:
            self._add_node(JOINER, Signer(self.rng.randbytes(key_size)))
            self.nodes[JOINER].up = False  # until it joins: what it is sent is lost
        self.signers = dict(enumerate(signers))
        names = sorted(self.nodes)
        self.faulty = PeerId(f"v{validators - 1}")  # the one that misbehaves, if any
        self.nodes[self.faulty].silent = faults.silent
        self.nodes[self.faulty].equivocator = faults.equivocator
        self.nodes[self.faulty].wrong_checkpoint = faults.wrong_checkpoint
        self.joiner = self.faulty if faults.joiner_validator else JOINER
        self._wiped = False  # the validator joiner's store is gone, until it rejoins
        #: validators that rejoined by state sync, and the round each must hold first
        self._catch_up_to: dict[PeerId, int] = {}
        self._signed_before = 0  # the last round the validator joiner signed before
        self.state_synced: list[PeerId] = []  # the nodes that joined from a checkpoint
        for a in names:
            for b in names:
                if a != b:
                    self.nodes[a].engine.peer_connected(b, self.nodes[b].signer.node_id)
        self.submitted: dict[TxId, tuple[PeerId, float]] = {}
        self.final_at: dict[TxId, float] = {}
        self._client_plan = sorted(
            (self.rng.uniform(0.0, 6.0), self.rng.randbytes(self.rng.randint(1, 200)))
            for _ in range(txs)
        )

    def _add_node(self, name: PeerId, signer: Signer) -> None:
        store = MemoryStore(log_hash_start(self.genesis.hash))
        self.trackers[name] = CheckpointTracker(
            self.genesis, self.params, 0, log_hash_start(self.genesis.hash)
        )
        pump: Pump[None] = Pump(
            Engine(self.genesis, self.params, signer, verifier=self.verifier),
            store,
            _Durable(self, name),
        )
        self.nodes[name] = SimNode(name, signer, pump, store)

    # ------------------------------------------------------------- network

    def _cut(self, a: PeerId, b: PeerId, at: float) -> bool:
        """True while ``a`` and ``b`` are on different sides of the partition."""
        p = self.faults.partition
        if p is None or not p[0] <= at < p[1]:
            return False
        side = {PeerId("v0"), PeerId("v1")}
        return (a in side) != (b in side)

    def _send(self, src: PeerId, dst: PeerId, data: bytes) -> None:
        """Queue a message of the current step (see :meth:`_transmit`)."""
        self._outbox.append((src, dst, data))

    def _transmit(self) -> None:
        """Put the step's messages on the network in a canonical order (by destination,
        then bytes), so that the random draws of loss, duplication and delay do not
        depend on the order in which a pump hands a step's messages over."""
        outbox, self._outbox = sorted(self._outbox), []
        for src, dst, data in outbox:
            self._deliver(src, dst, data)

    def _deliver(self, src: PeerId, dst: PeerId, data: bytes) -> None:
        if self.nodes[src].silent or self._cut(src, dst, self.now):
            return
        copies = 2 if self.rng.random() < self.faults.duplication else 1
        for _ in range(copies):
            if self.rng.random() < self.faults.loss:
                continue
            delay = 0.005 + self.rng.expovariate(1 / 0.03)
            self._sequence += 1
            heapq.heappush(self._queue, (self.now + delay, self._sequence, dst, src, data))

    def send_from(self, node: SimNode, dst: PeerId, data: bytes) -> None:
        """What ``node``'s pump sends ``dst`` (an equivocator twins its proposals; a
        wrong-checkpoint validator signs another digest than the one it computed)."""
        if node.equivocator and data[0] == MessageType.PROPOSAL:
            data = self._twin(node, data, dst)
        if node.wrong_checkpoint and data[0] == MessageType.CHECKPOINT_SIGNATURE:
            data = self._wrong_signature(node, data)
        self._send(node.name, dst, data)

    def _wrong_signature(self, node: SimNode, data: bytes) -> bytes:
        """A valid signature, by ``node``, of a checkpoint with another log hash."""
        number = int.from_bytes(data[1:9], "big")
        theirs = node.store.checkpoints.get(number)
        if theirs is None:  # pruned from its store: any other digest will do
            digest = bytes(b ^ 0xFF for b in data[9:41])
        else:
            digest = dataclasses.replace(theirs, log_hash=bytes(32)).digest
        signature = node.signer.sign(Purpose.CHECKPOINT, digest)
        voter = int.from_bytes(data[41:43], "big")
        return encode_message(CheckpointSignatureMessage(number, digest, voter, signature))

    def _twin(self, node: SimNode, data: bytes, dst: PeerId) -> bytes:
        """The equivocator sends some of its peers a different vertex for the round."""
        if dst in ("observer", JOINER):
            return data
        index = int(dst.removeprefix("v"))
        if (self.faults.twin_to == "one" and index != 1) or index % 2 == 0:
            return data
        v = decode_vertex(data[1:], self.params)
        twin = make_vertex(
            node.signer,
            self.genesis.hash,
            v.round,
            v.header.timestamp_ms + 1,
            v.parents,
            [b"twin"],
            tx_ids([b"twin"]),
        )
        return encode_message(ProposalMessage(twin))

    # -------------------------------------------------------------- stepping

    def _step(self, node: SimNode) -> None:
        """The node's pump takes what the engine's input produced to the store and the
        network; then the network gets the step's messages."""
        run_now(node.pump.step(moment(self.now)))
        self._transmit()
        timer = node.engine.get_timer()
        node.timer = float("inf") if timer is None else timer
        self._caught_up(node)

    def observe(self, node: SimNode, step: PumpStep[None]) -> None:
        """Note what a durable step of ``node`` shows: transactions final, messages
        rejected."""
        node.rejected += step.notices
        for fact in step.facts:
            match fact:
                case CheckpointCertified():
                    node.store.prune(self.retention, self.params.gc_depth)
                case LeaderCommitted(entries=entries):
                    self.trackers[node.name].on_commit(fact, node.store)
                    for entry in entries:
                        origin = self.submitted.get(entry.tx_id)
                        if origin is not None and origin[0] == node.name:
                            self.final_at.setdefault(entry.tx_id, self.now)
                case (
                    TransactionsAdmitted()
                    | VertexStored()
                    | VertexCertified()
                    | EquivocationDetected()
                    | CheckpointMade()
                ):
                    pass
                case _:
                    assert_never(fact)

    def _crash_and_restart(self) -> None:
        crash = self.faults.crash
        if crash is None:
            return
        node = self.nodes[self.faulty]
        if node.up and crash[0] <= self.now < crash[1]:
            node.up = False  # the process dies: memory is lost, the store stays
        elif not node.up and self.now >= crash[1]:
            snapshot = node.store.snapshot(node.signer.node_id, self.params.gc_depth)
            node.pump.engine = Engine(
                self.genesis, self.params, node.signer, snapshot, verifier=self.verifier
            )
            self._start(node)

    def _start(self, node: SimNode) -> None:
        """``node`` runs again, linked to every other."""
        node.up = True
        for other in self.nodes.values():
            if other is not node:
                node.engine.peer_connected(other.name, other.signer.node_id)
        node.engine.handle_timer(moment(self.now))
        self._step(node)

    def _hold_proposals(self, node: SimNode, signed_before: int) -> None:
        """A validator that lost what it signed proposes again only once it holds the
        others' highest round and two above every one it may have signed (a vertex of
        it may still be on its way): it proposes at the round after the last it holds a
        quorum of, which may be one below its highest."""
        self._catch_up_to[node.name] = max(
            signed_before + 2,
            *(n.engine.statistics().highest_round for n in self.nodes.values() if n.up),
        )
        node.engine.set_catching_up(True, moment(self.now))

    def _join_due(self) -> None:
        """At its time, the joiner state-syncs from a validator's latest certified
        checkpoint (or, before there is one, starts from nothing and replays). A
        validator joiner first loses its process and its store, and rejoins a second
        later; it proposes nothing before it has seen the others' highest round."""
        at = self.faults.joiner
        node = self.nodes.get(self.joiner)
        if at is None or node is None or self.now < at:
            return
        if self.faults.joiner_validator and not self._wiped:
            if node.up:
                node.up, self._wiped = False, True
                self._signed_before = node.engine.statistics().round
            return
        if node.up or (self.faults.joiner_validator and self.now < at + REJOIN_AFTER):
            return
        if not self._sync_from_checkpoint(node) and self.faults.joiner_validator:
            self._restart_empty(node)
        if self.faults.joiner_validator:
            self._hold_proposals(node, self._signed_before)
        self._start(node)

    def _sync_from_checkpoint(self, node: SimNode) -> bool:
        """State-sync ``node`` from a validator's latest certified checkpoint; False
        when no checkpoint is certified yet."""
        validators = {
            i: self.trackers[PeerId(f"v{i}")]
            for i in self.signers
            if not self.nodes[PeerId(f"v{i}")].silent and PeerId(f"v{i}") != node.name
        }
        served = certified_latest(self.genesis, self.signers, validators)
        if served is not None:
            self._refuse_forged(served)
            number = served[0].checkpoint.number
            source = next(
                n
                for n in sorted(self.nodes.values(), key=lambda n: n.name)
                if n.up and n.name != node.name and number in self.trackers[n.name].made
            )
            joined = join(
                self.genesis,
                self.params,
                self.verifier,
                source.name,
                served,
                source.store,
                self.now,
            )
            assert joined is not None, f"seed {self.seed}: the join did not complete"
            self._restart_joined(node, joined)
            self.state_synced.append(node.name)
        return served is not None

    def _refuse_forged(self, served: tuple[CertifiedCheckpoint, tuple[VertexId, ...]]) -> None:
        """An equivocating validator first serves the joiner a checkpoint with a wrong
        log hash that it signed: the join from it must not complete."""
        faulty = self.nodes[self.faulty]
        if not faulty.equivocator or not faulty.up:
            return
        index = int(self.faulty.removeprefix("v"))
        lie = forged(served, index, faulty.signer)
        joined = join(
            self.genesis, self.params, self.verifier, faulty.name, lie, faulty.store, self.now
        )
        assert joined is None, f"seed {self.seed}: a forged checkpoint was accepted"

    def _restart_joined(self, node: SimNode, joined: Joined) -> None:
        """The joiner's store and engine start at the checkpoint it joined from."""
        store = joined_store(log_hash_start(self.genesis.hash), joined)
        node.store = store
        node.pump = Pump(
            Engine(self.genesis, self.params, node.signer, joined.snapshot, verifier=self.verifier),
            store,
            _Durable(self, node.name),
        )
        self.trackers[node.name] = joined_tracker(self.genesis, self.params, joined)

    def _restart_empty(self, node: SimNode) -> None:
        """A wiped validator with no checkpoint to join from starts from nothing."""
        start = log_hash_start(self.genesis.hash)
        node.store = MemoryStore(start)
        node.pump = Pump(
            Engine(self.genesis, self.params, node.signer, verifier=self.verifier),
            node.store,
            _Durable(self, node.name),
        )
        self.trackers[node.name] = CheckpointTracker(self.genesis, self.params, 0, start)

    def _caught_up(self, node: SimNode) -> None:
        """A rejoined validator proposes again once it holds the round the others had
        reached when it came back (so that it cannot sign a round twice)."""
        target = self._catch_up_to.get(node.name)
        if target is None:
            return
        if node.engine.statistics().highest_round >= target:
            del self._catch_up_to[node.name]
            node.engine.set_catching_up(False, moment(self.now))
            self._step(node)

    def _submit_due(self) -> None:
        clients = [n.name for n in self.honest() if n.name != self.joiner]
        while self._client_plan and self._client_plan[0][0] <= self.now:
            _, tx = self._client_plan.pop(0)
            node = self.nodes[self.rng.choice(clients)]
            if not node.up:
                continue
            ids = tx_ids([tx])
            try:
                result = node.engine.submit_transactions(ids, [tx], moment(self.now))
            except InputRejected:
                continue
            self._step(node)  # persisted: now the client has its acknowledgement
            for i in result.admitted:
                self.submitted.setdefault(i, (node.name, self.now))

    def run(self, deadline: float = 120.0) -> RunResult:
        """Run until every submitted transaction is final on every honest node, or the
        deadline; then check safety and liveness."""
        settle = 0.0
        if self.faults.partition:
            settle = max(settle, self.faults.partition[1])
        if self.faults.crash:
            settle = max(settle, self.faults.crash[1])
        if self.faults.joiner is not None:
            settle = max(settle, self.faults.joiner + REJOIN_AFTER)
        while self.now < deadline:
            next_timer = min(
                ((n.timer, n.name) for n in self.nodes.values() if n.up),
                default=(float("inf"), PeerId("")),
            )
            next_message = self._queue[0][0] if self._queue else float("inf")
            next_client = self._client_plan[0][0] if self._client_plan else float("inf")
            next_fault = self._next_fault_time()
            self.now = max(self.now, min(next_timer[0], next_message, next_client, next_fault))
            if self.now == float("inf"):
                break
            self._crash_and_restart()
            self._join_due()
            self._submit_due()
            if next_message <= self.now and self._queue:
                _, _, dst, src, data = heapq.heappop(self._queue)
                node = self.nodes[dst]
                self.messages += 1
                if node.up and not self._cut(src, dst, self.now):
                    node.engine.receive_message(src, data, moment(self.now))
                    self._step(node)
            elif next_timer[0] <= self.now:
                node = self.nodes[next_timer[1]]
                node.engine.handle_timer(moment(self.now))
                self._step(node)
            if self.now > settle and self._all_final():
                break
        return self._result()

    def _checked_evidence(self) -> int:
        """Most evidence records kept by one honest node; each must prove the faulty
        validator's equivocation to anyone holding the genesis."""
        faulty = self.nodes[self.faulty].signer.node_id
        for node in self.honest():
            for evidence in node.store.evidence:
                proof = decode_equivocation(evidence.encode(), self.genesis)
                assert proof.author == faulty, f"seed {self.seed}: evidence against an honest node"
        return max(len(n.store.evidence) for n in self.honest())

    def _next_fault_time(self) -> float:
        at = self.faults.joiner
        joining = (at, at + REJOIN_AFTER) if at is not None else None
        times = [
            t
            for window in (self.faults.partition, self.faults.crash, joining)
            if window is not None
            for t in window
            if t > self.now
        ]
        return min(times, default=float("inf"))

    def honest(self) -> list[SimNode]:
        """Nodes that follow the protocol (a crashed-and-restarted one included)."""
        return [
            n for n in self.nodes.values() if not (n.silent or n.equivocator or n.wrong_checkpoint)
        ]

    def _all_final(self) -> bool:
        if self._client_plan:
            return False
        wanted = set(self.submitted)
        joined = [n for n in self.honest() if n.name == self.joiner or n.name in self.state_synced]
        others = [n for n in self.honest() if n not in joined]
        if not all(n.up and wanted <= final_ids(n) for n in others):
            return False
        # a joiner holds no entry before its checkpoint: it must reach the others' end
        end = max(log_length(n) for n in others)
        return all(n.up and log_length(n) >= end for n in joined)

    def _check_trackers(self) -> tuple[bool, str]:
        """The checkpoints an honest engine certified are those its tracker computed
        independently of the engine (the ones a joiner is served)."""
        for node in self.honest():
            tracker = self.trackers.get(node.name)
            if tracker is None:
                continue
            for number in node.store.certificates.keys() & tracker.made.keys():
                if node.store.checkpoints[number] != tracker.made[number][0]:
                    return False, f"checkpoint {number} of {node.name} is not its tracker's"
        return True, ""

    def _result(self) -> RunResult:
        safe, detail = check_prefixes(self.honest())
        if safe:
            safe, detail = check_checkpoints(self.honest(), self.genesis)
        if safe:
            safe, detail = self._check_trackers()
        live = self._all_final()
        if safe and not live:
            missing = [
                f"{n.name}: {len(set(self.submitted) - final_ids(n))} not final"
                for n in self.honest()
            ]
            detail = "; ".join(missing)
        latencies = [
            self.final_at[i] - at for i, (_, at) in self.submitted.items() if i in self.final_at
        ]
        longest = max(self.honest(), key=log_length)
        return RunResult(
            seed=self.seed,
            validators=self.genesis.n,
            scheme=self.genesis.scheme,
            faults=self.faults,
            safe=safe,
            live=live,
            detail=detail,
            end_time=self.now,
            latencies=latencies,
            log_length=log_length(longest),
            log_hash=longest.store.log_hash,
            equivocations=self._checked_evidence(),
            messages=self.messages,
            checkpoints=max(max(n.store.certificates, default=0) for n in self.honest()),
            pruned_vertices=max(n.store.pruned_vertices for n in self.honest()),
            state_synced=len(self.state_synced),
            refused_checkpoints=sum(
                r.reason is Reason.BAD_CHECKPOINT for n in self.honest() for r in n.rejected
            ),
        )


def log_length(node: SimNode) -> int:
    """The length of a node's finalized log (entries held, and those before its base)."""
    return node.store.log_base + len(node.store.log)


def check_prefixes(nodes: Iterable[SimNode]) -> tuple[bool, str]:
    """Safety: of any two finalized logs, one is a prefix of the other: the running
    hash is the same at every position both hold (a node that joined from a
    checkpoint holds its base and what follows)."""
    held = sorted(((n.name, _hashes(n.store)) for n in nodes), key=lambda x: len(x[1]))
    for (name_a, a), (name_b, b) in itertools.combinations(held, 2):
        differ = sorted(seq for seq in a.keys() & b.keys() if a[seq] != b[seq])
        if differ:
            return False, f"logs of {name_a} and {name_b} differ at seq {differ[0]}"
    return True, ""


def final_ids(node: SimNode) -> set[TxId]:
    """The transactions final on ``node``: in its log, or pruned from it."""
    return {e.tx_id for e in node.store.log} | node.store.pruned_final


def check_checkpoints(nodes: Iterable[SimNode], genesis: Genesis) -> tuple[bool, str]:
    """Safety of checkpoints: every certified checkpoint verifies against the genesis
    alone, and all nodes that certified a number certified the same checkpoint."""
    seen: dict[int, tuple[PeerId, Checkpoint]] = {}
    for node in nodes:
        for number, certificate in sorted(node.store.certificates.items()):
            checkpoint = node.store.checkpoints[number]
            try:
                check_certified(
                    CertifiedCheckpoint(checkpoint, certificate), genesis, SequentialVerifier()
                )
            except InputRejected as e:
                return False, f"checkpoint {number} of {node.name} does not verify: {e.message}"
            first = seen.setdefault(number, (node.name, checkpoint))
            if first[1] != checkpoint:
                return False, f"checkpoints {number} of {first[0]} and {node.name} differ"
    return True, ""


def _hashes(store: MemoryStore) -> dict[int, bytes]:
    """The running hash at each position a store holds (its base included)."""
    hashes: dict[int, bytes] = {e.seq: e.hash for e in store.log}
    if store.base_hash is not None:
        hashes[store.log_base] = store.base_hash
    return hashes


def run_seed(seed: int, validators: int, scheme: Scheme = Scheme.ED25519) -> RunResult:
    """One run: the seed picks the fault mix, the keys and every random choice. A seed
    has the same fault mix in either scheme (its keys, and so the run, differ)."""
    faults = random_faults(random.Random(seed * 7919 + validators))
    return Simulation(seed, validators, faults, scheme=scheme).run()


def fault_kinds(faults: Faults) -> list[str]:
    """The names of the faults a run had."""
    kinds = [
        name
        for name, on in (
            ("loss", faults.loss > 0),
            ("duplication", faults.duplication > 0),
            ("partition", faults.partition is not None),
            ("crash", faults.crash is not None),
            ("silent", faults.silent),
            ("equivocator", faults.equivocator),
            ("equivocator twin to one", faults.equivocator and faults.twin_to == "one"),
            ("wrong checkpoint", faults.wrong_checkpoint),
            ("observer", faults.observer),
            ("joiner", faults.joiner is not None),
            ("joiner validator", faults.joiner_validator),
        )
        if on
    ]
    return kinds or ["none"]


def summarize(results: list[RunResult]) -> str:
    """Runs, failures, fault mix, and finality latency in simulated seconds."""
    kinds = Counter(k for r in results for k in fault_kinds(r.faults))
    lines = [
        f"{len(results)} runs (seeds {results[0].seed}-{results[-1].seed},"
        f" n = {results[0].validators}, {results[0].scheme.label}):"
        f" {sum(not r.safe for r in results)} unsafe,"
        f" {sum(not r.live for r in results)} not live",
        "fault mix (runs): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        f"every transaction final everywhere by simulated second: median"
        f" {statistics.median(r.end_time for r in results):.1f},"
        f" slowest {max(r.end_time for r in results):.1f} (deadline 120)",
    ]
    groups = [("all runs", results)] + [
        (f"loss {loss:.0%}", [r for r in results if r.faults.loss == loss])
        for loss in sorted({r.faults.loss for r in results})
    ]
    for name, runs in groups:
        values = sorted(x for r in runs for x in r.latencies)
        if len(values) >= 2:
            q = statistics.quantiles(values, n=100, method="inclusive")
            lines.append(
                f"finality latency, {name} ({len(values)} transactions, simulated s):"
                f" p50 {q[49]:.3f}, p90 {q[89]:.3f}, p99 {q[98]:.3f}, max {values[-1]:.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Replay seeds and print their outcome."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--scheme", choices=SCHEME_LABELS, default=Scheme.ED25519.label)
    args = parser.parse_args(argv)
    scheme = Scheme.from_label(args.scheme)
    results = []
    for seed in range(args.seed, args.seed + args.runs):
        r = run_seed(seed, args.validators, scheme)
        results.append(r)
        if args.runs == 1 or not (r.safe and r.live):
            print(
                f"seed {seed} n={r.validators} {scheme.label} {r.faults}:"
                f" safe={r.safe} live={r.live}"
                f" t={r.end_time:.2f}s log={r.log_length} hash={r.log_hash.hex()[:16]}"
                f" messages={r.messages} evidence={r.equivocations} {r.detail}"
            )
    print(summarize(results))
    return 0 if all(r.safe and r.live for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the engine tests: a solo node on a manual clock and a four-validator network.

The solo node is a one-validator network of itself. Its clock is a float the test
advances: :class:`SoloNode` calls ``handle_timer`` at the times ``get_timer`` names and
records every fact, effect and notice with the time of the call that produced it.

:func:`drain`, :func:`facts` and :func:`messages` each take one part of what an engine
produced (:meth:`~qudag_node.core.engine.Engine.take_output`) and keep the rest for
the others, so that a test can look at what was produced and at what was sent apart.

The four-validator network (n = 4, f = 1) is :data:`C`, a :class:`Committee` of
Ed25519 keys; :data:`CC` is its counterpart of composite ML-DSA-65 + Ed25519 keys. Its
vertices are made by hand and delivered to an engine with :func:`feed`, as messages
from :data:`PEER`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Purpose, Scheme, Signer, tx_id, tx_ids
from qudag_node.core.engine import Engine, Role, Snapshot, SubmitResult
from qudag_node.core.events import (
    Effect,
    Fact,
    LeaderCommitted,
    LogEntry,
    Notice,
    Outgoing,
    StepOutput,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.messages import CertifiedMessage, ProposalMessage, VoteMessage, encode_message
from qudag_node.core.params import Params
from qudag_node.core.types import GenesisHash, Instant, PeerId, VertexId
from qudag_node.core.vertex import Vertex, make_vertex

PARAMS = Params()


def moment(t: float) -> Instant:
    """The time ``t`` of the tests' one clock, as the monotonic and the wall reading."""
    return Instant(t, t)


#: One item of an engine's output, messages aside.
Output = Fact | Effect | Notice

#: What an engine produced that no helper below has taken yet.
_KEPT: WeakKeyDictionary[Engine, StepOutput] = WeakKeyDictionary()


def _take(engine: Engine) -> StepOutput:
    kept = _KEPT.pop(engine, StepOutput())
    new = engine.take_output()
    return StepOutput(
        kept.facts + new.facts,
        kept.effects + new.effects,
        kept.messages + new.messages,
        kept.notices + new.notices,
    )


def drain(engine: Engine) -> list[Output]:
    """The facts, effects and notices produced since the last look: facts first, then
    effects, then notices, each kind in order. Messages are kept for :func:`messages`."""
    out = _take(engine)
    _KEPT[engine] = StepOutput(messages=out.messages)
    return [*out.facts, *out.effects, *out.notices]


def facts(engine: Engine) -> list[Fact]:
    """The facts produced since the last look; the rest is kept for the other helpers."""
    out = _take(engine)
    _KEPT[engine] = dataclasses.replace(out, facts=())
    return list(out.facts)


def messages(engine: Engine) -> list[Outgoing]:
    """The messages queued since the last look; the rest is kept for the other helpers."""
    out = _take(engine)
    _KEPT[engine] = dataclasses.replace(out, messages=())
    return list(out.messages)


# ------------------------------------------------------------------ solo node

#: The key of the solo validator, and its one-validator genesis.
SIGNER = Signer(b"\x01" * 32)
GENESIS = Genesis.solo("qudag-solo", "solo", SIGNER.public_key)
#: The time on a solo node's clock when it starts.
T0 = 1_000.0


@dataclass(frozen=True, slots=True)
class Timed:
    """An output and the clock time of the engine call that produced it."""

    at: float
    event: Output


class SoloNode:
    """An engine, a manual clock, and every event it has produced."""

    def __init__(
        self,
        params: Params = PARAMS,
        snapshot: Snapshot | None = None,
        now: float = T0,
        genesis: Genesis = GENESIS,
        signer: Signer = SIGNER,
    ) -> None:
        self.engine = Engine(genesis, params, signer, snapshot)
        self.now = now
        self.events: list[Timed] = []

    def _drain(self) -> list[Output]:
        new = drain(self.engine)
        self.events.extend(Timed(self.now, e) for e in new)
        return new

    def submit(self, txs: Sequence[bytes]) -> SubmitResult:
        """Submit a client batch at the current time."""
        result = self.engine.submit_transactions(tx_ids(txs), txs, moment(self.now))
        self._drain()
        return result

    def fire(self) -> list[Output]:
        """Move the clock to the engine's timer (never back) and handle it."""
        when = self.engine.get_timer()
        assert when is not None, "a validator always has a timer"
        self.now = max(self.now, when)
        self.engine.handle_timer(moment(self.now))
        return self._drain()

    def run_until(self, deadline: float) -> None:
        """Handle every timer due up to ``deadline``, then set the clock to it."""
        while (when := self.engine.get_timer()) is not None and when <= deadline:
            self.fire()
        self.now = max(self.now, deadline)

    def settle(self, max_steps: int = 1000) -> None:
        """Handle timers until nothing is pending or in flight."""
        for _ in range(max_steps):
            stats = self.engine.statistics()
            if stats.pending == 0 and stats.in_flight == 0:
                return
            self.fire()
        raise AssertionError(f"not settled after {max_steps} timer calls")

    def own_vertices(self) -> list[Timed]:
        """The engine's own VertexStored events (its proposals), with their times."""
        return [t for t in self.events if isinstance(t.event, VertexStored) and t.event.own]

    def entries(self) -> list[LogEntry]:
        """Every finalized log entry so far, in order."""
        return [
            entry
            for t in self.events
            if isinstance(t.event, LeaderCommitted)
            for entry in t.event.entries
        ]


def vertex_of(timed: Timed) -> Vertex:
    """The vertex of a VertexStored event."""
    assert isinstance(timed.event, VertexStored)
    return timed.event.vertex


# ------------------------------------------------------- four-validator network

#: The time at which vertices are delivered, unless a test says otherwise.
NOW = 1_800_000_000.0
#: The timestamp of hand-made vertices: half a second before :data:`NOW`.
TIMESTAMP_MS = int(NOW * 1000) - 500
#: The peer every hand-made vertex comes from.
PEER = PeerId("peer-1")


class Committee:
    """Four validator keys of ``scheme``, their genesis, and a key outside it."""

    def __init__(self, scheme: Scheme = Scheme.ED25519) -> None:
        size = PRIVATE_KEY_SIZES[scheme]
        self.scheme = scheme
        self.signers = [Signer(bytes([0x10 + i]) * size) for i in range(4)]
        self.genesis = Genesis(
            "qudag-rules",
            tuple(Validator(f"v{i}", s.public_key) for i, s in enumerate(self.signers)),
            scheme,
        )
        self.outsider = Signer(b"\x99" * size)

    def vertex(
        self,
        author: int | Signer,
        round_: int,
        parents: Sequence[VertexId] = (),
        txs: Sequence[bytes] = (),
        timestamp_ms: int = TIMESTAMP_MS,
        network: GenesisHash | None = None,
    ) -> Vertex:
        """A signed vertex by validator ``author`` (an index) or by any signer."""
        signer = self.signers[author] if isinstance(author, int) else author
        return make_vertex(
            signer,
            self.genesis.hash if network is None else network,
            round_,
            timestamp_ms,
            parents,
            txs,
            [tx_id(t) for t in txs],
        )

    def certificate(self, vertex: Vertex, voters: Sequence[int] = (0, 1, 2)) -> Certificate:
        """A certificate for ``vertex`` signed by the validators ``voters``."""
        votes = {i: self.signers[i].sign(Purpose.VOTE, vertex.id) for i in voters}
        return make_certificate(self.signers[0].scheme, votes)

    def vote(self, vertex: Vertex, voter: int) -> bytes:
        """The wire bytes of validator ``voter``'s vote for ``vertex``."""
        signer = self.signers[voter]
        signature = signer.sign(Purpose.VOTE, vertex.id)
        return encode_message(VoteMessage(vertex.id, voter, signer.scheme, signature))

    def index(self, round_: int) -> int:
        """The validator index of ``round_``'s leader."""
        leader = self.genesis.index_of(self.genesis.leader(round_))
        assert leader is not None
        return leader

    def observer(self, params: Params = PARAMS, snapshot: Snapshot | None = None) -> Engine:
        """An engine for this network that only follows."""
        engine = Engine(self.genesis, params, self.outsider, snapshot)
        assert engine.role is Role.OBSERVER
        return engine


C = Committee()
#: The same four validators with composite ML-DSA-65 + Ed25519 keys (another network).
CC = Committee(Scheme.MLDSA65_ED25519)
#: One round-1 vertex per validator, each carrying one transaction.
ROUND1 = [C.vertex(i, 1, txs=[f"r1-v{i}".encode()]) for i in range(4)]
#: The ids of :data:`ROUND1`.
R1 = [v.id for v in ROUND1]


def message(vertex: Vertex) -> bytes:
    """The wire bytes of a certified vertex (certified by validators 0, 1 and 2)."""
    return encode_message(CertifiedMessage(vertex, C.certificate(vertex)))


def proposal(vertex: Vertex) -> bytes:
    """The wire bytes of a vertex proposed for votes."""
    return encode_message(ProposalMessage(vertex))


def feed(engine: Engine, *vertices: Vertex, now: float = NOW) -> list[Output]:
    """Deliver certified vertices from :data:`PEER` at ``now``; returns the drained events."""
    for v in vertices:
        engine.receive_message(PEER, message(v), moment(now))
    return drain(engine)


def vote(vertex: Vertex, voter: int) -> bytes:
    """The wire bytes of validator ``voter``'s vote for ``vertex``."""
    return C.vote(vertex, voter)


def added(*vertices: Vertex) -> list[Output]:
    """The events of certified vertices (by 0, 1 and 2) joining the DAG of a node that
    had not stored them: stored, then certified, each."""
    out: list[Output] = []
    for v in vertices:
        out += [VertexStored(v, own=False), VertexCertified(v.id, v.round, C.certificate(v))]
    return out

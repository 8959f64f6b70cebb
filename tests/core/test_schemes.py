"""Networks of either signature scheme: each refuses what was signed in the other
(``wrong_scheme``), and four validators of composite ML-DSA-65 + Ed25519 keys finalize.

:data:`C` is the Ed25519 network of :mod:`tests.core.support`, :data:`CC` its
composite counterpart. Every refusal is checked in both directions.
"""

from __future__ import annotations

import heapq
import itertools
import re

import pytest

from qudag_node.core.crypto import (
    DEFAULT_SCHEME,
    PRIVATE_KEY_SIZES,
    PUBLIC_KEY_SIZES,
    SIGNATURE_SIZES,
    Purpose,
    Scheme,
    SequentialVerifier,
    SignatureCheck,
    Signer,
    node_id,
    tx_ids,
    verify_check,
)
from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import (
    LeaderCommitted,
    LogEntry,
    MessageRejected,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.evidence import Equivocation, SignedHeader, decode_equivocation
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import (
    CertificateMessage,
    CertifiedMessage,
    ProposalMessage,
    VoteMessage,
    encode_message,
)
from qudag_node.core.rules import check_vertex
from qudag_node.core.types import PeerId, TxId
from qudag_node.core.vertex import Vertex
from tests.core.support import (
    CC,
    NOW,
    PARAMS,
    PEER,
    C,
    Committee,
    SoloNode,
    drain,
    moment,
    vertex_of,
)

#: (the network a node is on, the network whose keys signed what it is sent)
DIRECTIONS = [pytest.param(C, CC, id="ed25519-node"), pytest.param(CC, C, id="composite-node")]


def test_the_two_networks_differ_only_in_their_scheme() -> None:
    assert (C.genesis.scheme, CC.genesis.scheme) == (Scheme.ED25519, Scheme.MLDSA65_ED25519)
    assert C.genesis.network_id == CC.genesis.network_id
    assert [v.name for v in C.genesis.validators] == [v.name for v in CC.genesis.validators]
    assert C.genesis.hash != CC.genesis.hash
    assert all(len(v.public_key) == 1984 for v in CC.genesis.validators)
    assert all(len(node) == 32 for node in CC.genesis.ids)


@pytest.mark.parametrize(
    ("scheme", "label", "seed", "key", "signature"),
    [
        (Scheme.ED25519, "ed25519", 32, 32, 64),
        (Scheme.MLDSA65_ED25519, "mldsa65-ed25519", 64, 1984, 3373),
    ],
)
def test_a_keys_size_names_its_scheme(
    scheme: Scheme, label: str, seed: int, key: int, signature: int
) -> None:
    assert (scheme.label, Scheme.from_label(label)) == (label, scheme)
    assert (PRIVATE_KEY_SIZES[scheme], PUBLIC_KEY_SIZES[scheme]) == (seed, key)
    assert SIGNATURE_SIZES[scheme] == signature
    signer = Signer(bytes(range(seed)))
    assert signer.scheme is scheme
    assert signer.seed() == bytes(range(seed))
    assert len(signer.public_key) == key
    assert signer.node_id == node_id(scheme, signer.public_key)
    assert len(signer.node_id) == 32
    assert (bytes(signer.node_id) == bytes(signer.public_key)) is (scheme is Scheme.ED25519)
    assert signer.seed().hex() not in repr(signer)
    assert len(signer.sign(Purpose.VERTEX, b"m")) == signature
    made = Signer.generate(scheme, bytes(range(seed)) + b"more than needed")
    assert made.public_key == signer.public_key
    with pytest.raises(ValueError, match=f"needs {seed} random bytes"):
        Signer.generate(scheme, bytes(seed - 1))


def test_other_sizes_and_names_are_no_scheme() -> None:
    for size in (0, 31, 33, 63, 65, 4032):
        with pytest.raises(ValueError, match=re.escape("32 bytes (ed25519) or 64 bytes")):
            Signer(bytes(size))
    with pytest.raises(ValueError, match="use ed25519 or mldsa65-ed25519"):
        Scheme.from_label("dilithium3")
    assert DEFAULT_SCHEME is Scheme.MLDSA65_ED25519


def test_ed25519_signs_alike_for_every_purpose_and_the_composite_never() -> None:
    # Ed25519 networks sign as before purposes were named; the composite puts the
    # purpose in its context, so a signature for one purpose verifies for no other.
    ed25519, composite = C.signers[0], CC.signers[0]
    assert len({ed25519.sign(p, b"m") for p in Purpose}) == 1
    signature = composite.sign(Purpose.VERTEX, b"m")
    for purpose in Purpose:
        check = SignatureCheck(CC.scheme, purpose, composite.public_key, b"m", signature)
        assert verify_check(check) is (purpose is Purpose.VERTEX)


def only_rejection(engine: Engine) -> MessageRejected:
    """The one event ``engine`` produced: a rejection from :data:`PEER`."""
    [event] = drain(engine)
    assert isinstance(event, MessageRejected), event
    assert event.peer == PEER
    return event


def assert_wrong_scheme(event: MessageRejected, home: Committee, other: Committee) -> None:
    """``event`` refuses a thing signed in ``other``'s scheme, naming both schemes."""
    assert event.reason is Reason.WRONG_SCHEME
    assert other.scheme.label in event.detail
    assert f"not {home.scheme.label}" in event.detail


def foreign_vertex(home: Committee, other: Committee) -> Vertex:
    """A round-1 vertex made with a key of ``other``'s scheme for ``home``'s network."""
    return other.vertex(0, 1, txs=[b"foreign"], network=home.genesis.hash)


@pytest.mark.parametrize(("home", "other"), DIRECTIONS)
def test_a_vertex_of_the_other_scheme_is_refused(home: Committee, other: Committee) -> None:
    engine = home.observer()
    before = engine.statistics()
    vertex = foreign_vertex(home, other)
    for message in (
        ProposalMessage(vertex),
        CertifiedMessage(vertex, other.certificate(vertex)),
        CertifiedMessage(vertex, home.certificate(vertex)),
    ):
        engine.receive_message(PEER, encode_message(message), moment(NOW))
        event = only_rejection(engine)
        assert_wrong_scheme(event, home, other)
    assert engine.statistics() == before
    with pytest.raises(InputRejected) as info:
        check_vertex(vertex, home.genesis, PARAMS, NOW, SequentialVerifier())
    assert info.value.reason is Reason.WRONG_SCHEME


@pytest.mark.parametrize(("home", "other"), DIRECTIONS)
def test_a_certificate_of_the_other_scheme_is_refused(home: Committee, other: Committee) -> None:
    engine = home.observer()
    vertex = home.vertex(0, 1, txs=[b"ours"])
    foreign = other.certificate(vertex)  # the other network's validators voted for it
    engine.receive_message(PEER, encode_message(CertifiedMessage(vertex, foreign)), moment(NOW))
    assert_wrong_scheme(only_rejection(engine), home, other)
    # announced for a vertex the node holds, it is refused the same way
    engine.receive_message(PEER, encode_message(ProposalMessage(vertex)), moment(NOW))
    assert drain(engine) == [VertexStored(vertex, own=False)]
    engine.receive_message(
        PEER, encode_message(CertificateMessage(vertex.id, foreign)), moment(NOW)
    )
    assert_wrong_scheme(only_rejection(engine), home, other)
    assert engine.statistics().dag_window == 0


@pytest.mark.parametrize(("home", "other"), DIRECTIONS)
def test_a_vote_of_the_other_scheme_is_refused(home: Committee, other: Committee) -> None:
    author = Engine(home.genesis, PARAMS, home.signers[0])
    for i in (1, 2, 3):
        author.peer_connected(PeerId(f"p{i}"), home.signers[i].node_id)
    author.submit_transactions(tx_ids([b"mine"]), [b"mine"], moment(NOW))
    [own] = [e.vertex for e in drain(author) if isinstance(e, VertexStored)]
    signature = other.signers[1].sign(Purpose.VOTE, own.id)
    foreign = encode_message(VoteMessage(own.id, 1, other.scheme, signature))
    author.receive_message(PEER, foreign, moment(NOW))
    assert_wrong_scheme(only_rejection(author), home, other)
    # the refused vote counted for nothing: two more votes of the network's own reach
    # the quorum with the author's own, not one
    author.receive_message(PEER, home.vote(own, 1), moment(NOW))
    assert not [e for e in drain(author) if not isinstance(e, MessageRejected)]
    author.receive_message(PEER, home.vote(own, 2), moment(NOW))
    [certified] = drain(author)
    assert isinstance(certified, VertexCertified)
    assert certified.certificate.voters == (0, 1, 2)


@pytest.mark.parametrize(("home", "other"), DIRECTIONS)
def test_evidence_of_the_other_scheme_is_refused(home: Committee, other: Committee) -> None:
    first = other.vertex(2, 1, txs=[b"one"], network=home.genesis.hash)
    second = other.vertex(2, 1, txs=[b"two"], network=home.genesis.hash)
    evidence = Equivocation(
        first.author,
        1,
        SignedHeader(first.header_bytes, first.signature),
        SignedHeader(second.header_bytes, second.signature),
    ).encode()
    with pytest.raises(InputRejected) as info:
        decode_equivocation(evidence, home.genesis)
    assert info.value.reason is Reason.WRONG_SCHEME
    # the same equivocation signed on the node's own network proves itself
    ours = [home.vertex(2, 1, txs=[t]) for t in (b"one", b"two")]
    signed = [SignedHeader(v.header_bytes, v.signature) for v in ours]
    proof = decode_equivocation(
        Equivocation(ours[0].author, 1, signed[0], signed[1]).encode(), home.genesis
    )
    assert proof.author == home.signers[2].node_id


# --------------------------------------------------- a composite network runs

#: One-way delay of every message between the composite validators.
DELAY = 0.02


class Network:
    """The four validators of :data:`CC`, each an engine, linked by a lossless network
    with a fixed delay, on one clock."""

    def __init__(self) -> None:
        self.names = [PeerId(f"v{i}") for i in range(4)]
        self.engines = {
            name: Engine(CC.genesis, PARAMS, signer)
            for name, signer in zip(self.names, CC.signers, strict=True)
        }
        for name, engine in self.engines.items():
            for peer, signer in zip(self.names, CC.signers, strict=True):
                if peer != name:
                    engine.peer_connected(peer, signer.node_id)
        self.now = NOW
        self.logs: dict[PeerId, list[LogEntry]] = {name: [] for name in self.names}
        self.rejected: list[MessageRejected] = []
        self._queue: list[tuple[float, int, PeerId, PeerId, bytes]] = []
        self._order = itertools.count()

    def collect(self, name: PeerId) -> None:
        """Take ``name``'s output: its log entries, rejections and messages."""
        out = self.engines[name].take_output()
        for fact in out.facts:
            if isinstance(fact, LeaderCommitted):
                self.logs[name] += fact.entries
        self.rejected += [n for n in out.notices if isinstance(n, MessageRejected)]
        for peer, data in out.messages:
            heapq.heappush(self._queue, (self.now + DELAY, next(self._order), name, peer, data))

    def step(self) -> None:
        """Deliver the next message or fire the next timer, whichever is due first."""
        timers = [(e.get_timer() or float("inf"), n) for n, e in self.engines.items()]
        when, name = min(timers)
        if self._queue and self._queue[0][0] <= when:
            self.now, _, src, dst, data = heapq.heappop(self._queue)
            self.engines[dst].receive_message(src, data, moment(self.now))
            self.collect(dst)
        else:
            self.now = max(self.now, when)
            self.engines[name].handle_timer(moment(self.now))
            self.collect(name)

    def final_everywhere(self, ids: set[TxId]) -> bool:
        """Whether every validator's log holds ``ids``."""
        return all(ids <= {entry.tx_id for entry in log} for log in self.logs.values())


def test_four_composite_validators_finalize_one_log() -> None:
    net = Network()
    submitted: set[TxId] = set()
    for i, name in enumerate(net.names):
        txs = [f"tx-{i}-{k}".encode() for k in range(2)]
        ids = tx_ids(txs)
        assert net.engines[name].submit_transactions(ids, txs, moment(net.now)).admitted
        submitted.update(ids)
        net.collect(name)
    for _ in range(5_000):
        if net.final_everywhere(submitted):
            break
        net.step()
    assert net.final_everywhere(submitted), {n: len(log) for n, log in net.logs.items()}
    assert net.rejected == []
    logs = list(net.logs.values())
    shortest = min(len(log) for log in logs)
    assert shortest == len(submitted)
    assert all(log[:shortest] == logs[0][:shortest] for log in logs)  # one order, one hash
    assert net.now - NOW < 10.0


def test_a_one_validator_composite_network_finalizes() -> None:
    signer = Signer(b"\x01" * 64)
    genesis = Genesis.solo("qudag-solo", "solo", signer.public_key)
    assert genesis.scheme is Scheme.MLDSA65_ED25519
    node = SoloNode(genesis=genesis, signer=signer)
    txs = [b"one", b"two"]
    assert node.submit(txs).admitted == tuple(tx_ids(txs))
    node.settle()
    assert [entry.tx_id for entry in node.entries()] == tx_ids(txs)
    own = [vertex_of(timed) for timed in node.own_vertices()]
    assert own
    assert all(v.header.scheme is Scheme.MLDSA65_ED25519 for v in own)
    assert all(v.author == signer.node_id for v in own)
    for v in own:
        check_vertex(v, genesis, PARAMS, v.header.timestamp_ms / 1000, SequentialVerifier())

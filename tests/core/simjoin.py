"""Checkpoints and state sync in the simulation.

:class:`CheckpointTracker` follows one node's commits and computes, at every interval
boundary, the checkpoint the shared rule names (``core/checkpoint.py``): the leader,
the log's length and running hash after its history, and the window of ordered
vertices of rounds at or above ``round - gc_depth``. :func:`certified_latest` has the
validators that computed the same checkpoint sign it, as each signs only its own.

:func:`join` takes a node with nothing through state sync the way a real one goes:
the core's :class:`~qudag_node.core.joining.Joining` is told a peer's HOLDINGS, asks
for its checkpoint, checks the CHECKPOINT answer, FETCHes the window, checks each
CERTIFIED answer, and hands over the install; every message travels as bytes through
the real codecs, answered from the peer's store as a real node answers. The joiner's
engine then starts from :func:`~qudag_node.core.resume.snapshot_from_checkpoint`, and
its store holds the window and the log's base, as ``Store.install_checkpoint`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint, Checkpoint, window_root
from qudag_node.core.crypto import Purpose, Signer, Verifier
from qudag_node.core.engine import Snapshot
from qudag_node.core.events import LeaderCommitted
from qudag_node.core.genesis import Genesis
from qudag_node.core.joining import InstallCheckpoint, Joining, JoinOutput, JoinSend
from qudag_node.core.messages import (
    CertifiedMessage,
    FetchMessage,
    decode_message,
    encode_message,
)
from qudag_node.core.params import Params
from qudag_node.core.resume import snapshot_from_checkpoint
from qudag_node.core.syncwire import (
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    Status,
    decode_sync,
    encode_sync,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex
from tests.core.simstore import MemoryStore, _Row


@dataclass(slots=True)
class CheckpointTracker:
    """The checkpoints one node computes, by number, with their windows."""

    genesis: Genesis
    params: Params
    log_length: int
    log_hash: bytes
    committed_round: int = 0
    window: dict[VertexId, int] = field(default_factory=dict)  # ordered id -> round
    made: dict[int, tuple[Checkpoint, tuple[VertexId, ...]]] = field(default_factory=dict)

    def on_commit(self, fact: LeaderCommitted, store: MemoryStore) -> None:
        """The node committed ``fact``'s leader (``store`` holds its vertices)."""
        if fact.entries:
            self.log_length, self.log_hash = fact.entries[-1].seq, fact.entries[-1].hash
        for vid in fact.ordered:
            self.window[vid] = store.vertices[vid].vertex.round
        floor = fact.round - self.params.gc_depth
        self.window = {vid: r for vid, r in self.window.items() if r >= floor}
        interval = self.params.checkpoint_interval
        previous, self.committed_round = self.committed_round, fact.round
        if fact.round // interval <= previous // interval:
            return
        ids = tuple(sorted(self.window))
        checkpoint = Checkpoint(
            self.genesis.hash,
            fact.round // interval,
            fact.round,
            fact.leader,
            store.vertices[fact.leader].vertex.header.timestamp_ms,
            self.log_length,
            self.log_hash,
            len(ids),
            window_root(ids),
        )
        self.made[checkpoint.number] = (checkpoint, ids)


def certified_latest(
    genesis: Genesis, signers: Mapping[int, Signer], trackers: Mapping[int, CheckpointTracker]
) -> tuple[CertifiedCheckpoint, tuple[VertexId, ...]] | None:
    """The latest checkpoint a quorum of validators (index -> signer, and each one's
    tracker) computed alike, signed by them; None before any."""
    numbers = sorted({n for t in trackers.values() for n in t.made}, reverse=True)
    for number in numbers:
        by_digest: dict[bytes, list[int]] = {}
        for index, tracker in trackers.items():
            if number in tracker.made:
                by_digest.setdefault(tracker.made[number][0].digest, []).append(index)
        digest, voters = max(by_digest.items(), key=lambda item: len(item[1]))
        if len(voters) < genesis.quorum:
            continue
        checkpoint, window = trackers[voters[0]].made[number]
        votes = {v: signers[v].sign(Purpose.CHECKPOINT, digest) for v in voters}
        return CertifiedCheckpoint(checkpoint, make_certificate(genesis.scheme, votes)), window
    return None


@dataclass(frozen=True, slots=True)
class Joined:
    """What :func:`join` installed: the engine's snapshot, the checkpoint, and its
    window's vertices."""

    snapshot: Snapshot
    certified: CertifiedCheckpoint
    vertices: tuple[tuple[Vertex, Certificate], ...]


def join(
    genesis: Genesis,
    params: Params,
    verifier: Verifier,
    peer: PeerId,
    served: tuple[CertifiedCheckpoint, tuple[VertexId, ...]],
    peer_store: MemoryStore,
    wall: float,
) -> Joined | None:
    """State-sync an empty node from ``peer``, which serves ``served`` and answers
    FETCHes from ``peer_store``; None if the join did not complete."""
    joining = Joining(genesis, params, verifier, trust=1, enabled=True, fresh=True)
    certified = served[0]
    oldest = min((r.vertex.round for r in peer_store.vertices.values()), default=0)
    holdings = Holdings(oldest, certified.checkpoint.number, certified.checkpoint.round)
    joining.on_holdings(peer, decode_sync(encode_sync(holdings)))  # type: ignore[arg-type]
    empty = Status(0, 0, 0, 0, b"\x00" * 32)
    pending = list(joining.tick(empty, 0.0))
    while pending:
        output = pending.pop(0)
        if isinstance(output, InstallCheckpoint):
            vertices = {v.id: (v, c) for v, c in output.vertices}
            snapshot = snapshot_from_checkpoint(
                output.certified, output.window, vertices, genesis, params, wall, verifier
            )
            joining.installed(0.0)
            return Joined(snapshot, output.certified, output.vertices)
        if not isinstance(output, JoinSend):
            continue
        pending += _answer(joining, peer, output.data, served, peer_store, params, wall)
    return None


def _answer(
    joining: Joining,
    peer: PeerId,
    data: bytes,
    served: tuple[CertifiedCheckpoint, tuple[VertexId, ...]],
    store: MemoryStore,
    params: Params,
    wall: float,
) -> list[JoinOutput]:
    """What the joiner does with ``peer``'s answers to its request ``data``."""
    empty = Status(0, 0, 0, 0, b"\x00" * 32)
    if data[0] == encode_sync(CheckpointRequest(0))[0]:
        offer = decode_sync(encode_sync(CheckpointOffer(*served)))
        assert isinstance(offer, CheckpointOffer)
        return list(joining.on_offer(peer, offer, empty, 0.0))
    fetch = decode_message(data, params)
    assert isinstance(fetch, FetchMessage)
    out: list[JoinOutput] = []
    for vid in fetch.ids:
        row = store.vertices.get(vid)
        if row is None or row.certificate is None:
            continue
        message = decode_message(
            encode_message(CertifiedMessage(row.vertex, row.certificate)), params
        )
        assert isinstance(message, CertifiedMessage)
        out += joining.on_vertex(peer, message.vertex, message.certificate, wall, 0.0)
    return out


def joined_store(log_start: bytes, joined: Joined) -> MemoryStore:
    """The store of a node that joined: the window (ordered, certified), its
    transactions final, the committed round and the log's base at the checkpoint."""
    cp = joined.certified.checkpoint
    store = MemoryStore(log_start, log_base=cp.log_length, base_hash=cp.log_hash)
    for vertex, certificate in joined.vertices:
        store.vertices[vertex.id] = _Row(vertex, certificate, ordered=True)
        for i, tx in zip(vertex.tx_ids, vertex.transactions, strict=True):
            store.transactions.setdefault(i, tx)
    store.committed_round = cp.round
    return store


def joined_tracker(genesis: Genesis, params: Params, joined: Joined) -> CheckpointTracker:
    """The checkpoint tracker of a node that joined: where the checkpoint left off."""
    cp = joined.certified.checkpoint
    window = {v.id: v.round for v, _ in joined.vertices}
    return CheckpointTracker(genesis, params, cp.log_length, cp.log_hash, cp.round, window)


def forged(
    served: tuple[CertifiedCheckpoint, tuple[VertexId, ...]], index: int, signer: Signer
) -> tuple[CertifiedCheckpoint, tuple[VertexId, ...]]:
    """What a Byzantine validator ``index`` serves instead of ``served``: the checkpoint
    with another log hash, signed by itself, the honest votes of the real one beside
    its own (they do not verify over the forged digest)."""
    certified, window = served
    lie = dataclasses.replace(certified.checkpoint, log_hash=bytes(32))
    cert = certified.certificate
    votes = dict(zip(cert.voters, cert.signatures, strict=True))
    votes[index] = signer.sign(Purpose.CHECKPOINT, lie.digest)
    return CertifiedCheckpoint(lie, make_certificate(cert.scheme, votes)), window

"""Certified DAG histories made with the node's own core functions.

A :class:`Committee` holds the keys of a validator set; :func:`certified_rounds` builds,
round by round, one vertex per validator naming every vertex of the round before as a
parent, each certified by a quorum of real Ed25519 votes (its author's signature and
the next validators' votes), exactly as validators make and certify them. Vertices carry
no transactions: an idle network's heartbeat rounds.

:func:`persist_history` writes such a history through :meth:`Store.persist`, as a node
does while catching up (vertex rows, certificates, then every even round's leader
committed with the vertices it orders), which is much faster than running validators for
as many rounds.

:func:`persist_loaded_history` writes a history whose vertices carry transactions, with
its finalized log (positions and running hashes computed by the core's
:class:`~qudag_node.core.finallog.FinalLog`, as the engine computes them) and, at every
checkpoint interval, the certified checkpoint the validators would have signed; copied
into validators' data dirs, it is a network that has finalized that many transactions.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint, Checkpoint, window_root
from qudag_node.core.crypto import (
    PRIVATE_KEY_SIZES,
    Purpose,
    Scheme,
    SignatureCheck,
    Signer,
    log_hash_start,
    tx_ids,
)
from qudag_node.core.dag import DagVertex
from qudag_node.core.events import Fact, LeaderCommitted, VertexCertified, VertexStored
from qudag_node.core.finallog import FinalLog
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.params import Params
from qudag_node.core.types import TxId, VertexId
from qudag_node.core.vertex import Vertex, make_vertex
from qudag_node.store import DB_FILENAME, Store

NETWORK_ID = "qudag-bench"
#: Rounds written in one store transaction.
ROUNDS_PER_COMMIT = 500

Round = list[tuple[Vertex, Certificate]]


@dataclass(frozen=True)
class Committee:
    """The keys of a validator set and its genesis."""

    signers: tuple[Signer, ...]
    genesis: Genesis

    @classmethod
    def generate(cls, size: int, scheme: Scheme = Scheme.ED25519) -> Committee:
        """A validator set of ``size`` fresh keys of ``scheme`` named v1..vN."""
        signers = tuple(Signer(os.urandom(PRIVATE_KEY_SIZES[scheme])) for _ in range(size))
        validators = tuple(Validator(f"v{k + 1}", s.public_key) for k, s in enumerate(signers))
        return cls(signers, Genesis(NETWORK_ID, validators, scheme))

    def validator_list(self) -> str:
        """The set as a QUDAG_VALIDATORS value (name=public key hex, ...)."""
        return ",".join(f"{v.name}={v.public_key.hex()}" for v in self.genesis.validators)


def certified_rounds(committee: Committee, rounds: int, start_ms: int) -> Iterator[Round]:
    """Rounds 1..``rounds``: every validator's vertex with its certificate."""
    signers, genesis = committee.signers, committee.genesis
    n, quorum = genesis.n, genesis.quorum
    parents: list[VertexId] = []
    for r in range(1, rounds + 1):
        made: Round = []
        for k, author in enumerate(signers):
            vertex = make_vertex(author, genesis.hash, r, start_ms + r, parents, (), ())
            votes = {
                j % n: signers[j % n].sign(Purpose.VOTE, vertex.id) for j in range(k, k + quorum)
            }
            made.append((vertex, make_certificate(author.scheme, votes)))
        parents = [v.id for v, _ in made]
        yield made


def _round_events(
    genesis: Genesis, number: int, made: Round, unordered: list[VertexId]
) -> list[Fact]:
    events: list[Fact] = []
    for vertex, certificate in made:
        events += [VertexStored(vertex, own=False), VertexCertified(vertex.id, number, certificate)]
    unordered += [v.id for v, _ in made]
    if number % 2 == 0:
        leader = next(v.id for v, _ in made if v.author == genesis.leader(number))
        events.append(LeaderCommitted(number, leader, tuple(unordered), ()))
        unordered.clear()
    return events


async def persist_history(data_dir: Path, committee: Committee, rounds: int, start_ms: int) -> int:
    """Write a certified history of ``rounds`` rounds into a node database in the
    existing ``data_dir``, every even round's leader committed; returns the vertices
    written."""
    store = await Store.open(data_dir, committee.genesis)
    written = 0
    try:
        events: list[Fact] = []
        unordered: list[VertexId] = []
        for number, made in enumerate(certified_rounds(committee, rounds, start_ms), start=1):
            events += _round_events(committee.genesis, number, made, unordered)
            written += len(made)
            if number % ROUNDS_PER_COMMIT == 0 or number == rounds:
                await store.persist(events)
                events = []
    finally:
        await store.close()
    return written


@dataclass
class _Ordering:
    """The leaders' commits of a loaded history: the log, the window, the checkpoints."""

    committee: Committee
    params: Params
    log: FinalLog
    unordered: list[tuple[Vertex, Certificate]] = field(default_factory=list)
    window: dict[VertexId, int] = field(default_factory=dict)  # ordered id -> round
    checkpoints: list[tuple[CertifiedCheckpoint, bytes]] = field(default_factory=list)

    def round_events(self, number: int, made: Round) -> list[Fact]:
        """The facts of round ``number``: its vertices stored and certified, and on an
        even round its leader committed with its causal history (every vertex not
        ordered yet below it: each vertex names the whole round before), with the log
        entries the engine would append and, past an interval, the checkpoint."""
        events: list[Fact] = []
        for vertex, certificate in made:
            events += [
                VertexStored(vertex, own=False),
                VertexCertified(vertex.id, number, certificate),
            ]
        if number % 2:
            self.unordered += made
            return events
        genesis = self.committee.genesis
        leader = next((v, c) for v, c in made if v.author == genesis.leader(number))
        ordered = sorted([*self.unordered, leader], key=lambda vc: (vc[0].round, vc[0].author))
        self.unordered = [vc for vc in made if vc is not leader]
        entries = self.log.append(
            [
                (
                    DagVertex(
                        v.id, v.round, v.author, v.parents, len(v.tx_ids), v.header.timestamp_ms
                    ),
                    v.tx_ids,
                )
                for v, _ in ordered
            ]
        )
        events.append(
            LeaderCommitted(number, leader[0].id, tuple(v.id for v, _ in ordered), entries, ())
        )
        floor = number - self.params.gc_depth
        self.log.prune_below(floor)
        self.window.update((v.id, v.round) for v, _ in ordered)
        self.window = {vid: r for vid, r in self.window.items() if r >= floor}
        interval = self.params.checkpoint_interval
        if number // interval > (number - 2) // interval:
            self.checkpoints.append(self._checkpoint(number, leader[0]))
        return events

    def _checkpoint(self, number: int, leader: Vertex) -> tuple[CertifiedCheckpoint, bytes]:
        ids = sorted(self.window)
        checkpoint = Checkpoint(
            self.committee.genesis.hash,
            number // self.params.checkpoint_interval,
            number,
            leader.id,
            leader.header.timestamp_ms,
            self.log.length,
            self.log.hash,
            len(ids),
            window_root(ids),
        )
        votes = {
            k: s.sign(Purpose.CHECKPOINT, checkpoint.digest)
            for k, s in enumerate(self.committee.signers)
        }
        certificate = make_certificate(self.committee.genesis.scheme, votes)
        return CertifiedCheckpoint(checkpoint, certificate), b"".join(ids)


def loaded_rounds(
    committee: Committee, rounds: int, per_vertex: int, tx_size: int, start_ms: int
) -> Iterator[Round]:
    """Rounds 1..``rounds`` as :func:`certified_rounds`, each vertex carrying
    ``per_vertex`` distinct transactions of ``tx_size`` bytes."""
    signers, genesis = committee.signers, committee.genesis
    n, quorum = genesis.n, genesis.quorum
    parents: list[VertexId] = []
    serial = 0
    for r in range(1, rounds + 1):
        made: Round = []
        for k, author in enumerate(signers):
            txs = [
                (serial + j).to_bytes(8, "big").ljust(tx_size, b"\x5a") for j in range(per_vertex)
            ]
            serial += per_vertex
            ids: list[TxId] = tx_ids(txs)
            vertex = make_vertex(author, genesis.hash, r, start_ms + r, parents, txs, ids)
            votes = {
                j % n: signers[j % n].sign(Purpose.VOTE, vertex.id) for j in range(k, k + quorum)
            }
            made.append((vertex, make_certificate(author.scheme, votes)))
        parents = [v.id for v, _ in made]
        yield made


async def persist_loaded_history(
    data_dir: Path,
    committee: Committee,
    params: Params,
    rounds: int,
    per_vertex: int,
    tx_size: int,
    start_ms: int,
) -> tuple[int, int]:
    """Write a history of ``rounds`` rounds whose vertices carry ``per_vertex``
    transactions each, finalized by every even round's leader, with a certified
    checkpoint every ``params.checkpoint_interval`` rounds, into a node database in
    the existing ``data_dir``; returns the log's length and the checkpoints written."""
    genesis = committee.genesis
    ordering = _Ordering(committee, params, FinalLog(0, log_hash_start(genesis.hash)))
    store = await Store.open(data_dir, genesis)
    try:
        events: list[Fact] = []
        loaded = loaded_rounds(committee, rounds, per_vertex, tx_size, start_ms)
        for number, made in enumerate(loaded, start=1):
            events += ordering.round_events(number, made)
            if number % 50 == 0 or number == rounds:
                await store.persist(events)
                events = []
    finally:
        await store.close()
    _write_checkpoints(data_dir / DB_FILENAME, ordering.checkpoints)
    return ordering.log.length, len(ordering.checkpoints)


def _write_checkpoints(database: Path, made: Sequence[tuple[CertifiedCheckpoint, bytes]]) -> None:
    """Record certified checkpoints (the table of the node's schema)."""
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.executemany(
            "INSERT INTO checkpoints"
            " (number, round, log_length, timestamp_ms, body, window, certificate)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    c.checkpoint.number,
                    c.checkpoint.round,
                    c.checkpoint.log_length,
                    c.checkpoint.timestamp_ms,
                    c.checkpoint.encode(),
                    window,
                    c.certificate.encode(),
                )
                for c, window in made
            ],
        )


def distinct_signatures(committee: Committee, rounds: Sequence[Round]) -> list[SignatureCheck]:
    """Every distinct signature check a node makes to take ``rounds`` in: each vertex's
    author signature and its certificate's votes (on an Ed25519 network the author's
    vote is the same bytes as its vertex signature, and counts once)."""
    genesis = committee.genesis
    seen: dict[tuple[bytes, bytes, bytes], SignatureCheck] = {}
    for made in rounds:
        for vertex, certificate in made:
            check = genesis.signature_check(
                vertex.author, Purpose.VERTEX, vertex.id, vertex.signature
            )
            assert check is not None
            votes = (
                genesis.vote_check(voter, vertex.id, signature)
                for voter, signature in zip(certificate.voters, certificate.signatures, strict=True)
            )
            for c in (check, *votes):
                assert c is not None
                key = (c.public_key, c.message, c.signature)
                seen.setdefault(key, c)
    return list(seen.values())

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
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Purpose, Scheme, SignatureCheck, Signer
from qudag_node.core.events import Fact, LeaderCommitted, VertexCertified, VertexStored
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import VertexId
from qudag_node.core.vertex import Vertex, make_vertex
from qudag_node.store import Store

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

"""Votes and certificates of availability.

A validator *votes* for a vertex by signing its id; it votes for at most one vertex
per (round, author), and only once it holds the vertex, its payload and all of its
parents. A *certificate* is a quorum of such votes (n - f distinct validators). Two
quorums share at least one honest validator, so no two different vertices of one
(round, author) can both be certified: every honest node that holds a certified
vertex for a slot holds the same one. Only certified vertices enter the DAG.

Layout (integers big-endian)::

    certificate = scheme:u8  count:u16  (voter:u16  signature) * count

``voter`` is the validator's index in the genesis, strictly ascending. The vertex id
the votes sign travels beside the certificate, not inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from qudag_node.core import codec
from qudag_node.core.crypto import SIGNATURE_SIZES, Scheme, SignatureCheck, Verifier
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import VertexId


@dataclass(frozen=True, slots=True)
class Certificate:
    """A quorum of votes for one vertex."""

    scheme: Scheme
    voters: tuple[int, ...]
    signatures: tuple[bytes, ...]

    def encode(self) -> bytes:
        """Canonical certificate bytes."""
        parts = [codec.u8(self.scheme), codec.u16(len(self.voters))]
        for voter, signature in zip(self.voters, self.signatures, strict=True):
            parts += [codec.u16(voter), signature]
        return b"".join(parts)


def make_certificate(scheme: Scheme, votes: Mapping[int, bytes]) -> Certificate:
    """A certificate from verified votes, keyed by voter index."""
    voters = tuple(sorted(votes))
    return Certificate(scheme, voters, tuple(votes[v] for v in voters))


def read_certificate(r: codec.Reader) -> Certificate:
    """Read and structurally check a certificate."""
    scheme = r.u8("certificate scheme")
    if scheme not in SIGNATURE_SIZES:
        raise InputRejected(Reason.UNKNOWN_SCHEME, f"signature scheme {scheme}")
    size = SIGNATURE_SIZES[Scheme(scheme)]
    voters: list[int] = []
    signatures: list[bytes] = []
    for _ in range(r.u16("vote count")):
        voters.append(r.u16("voter"))
        signatures.append(r.fixed(size, "vote signature"))
    if any(a >= b for a, b in pairwise(voters)):
        raise InputRejected(Reason.NON_CANONICAL, "voters must be strictly ascending")
    return Certificate(Scheme(scheme), tuple(voters), tuple(signatures))


def decode_certificate(data: bytes) -> Certificate:
    """Parse exactly one certificate (as kept in the store)."""
    r = codec.Reader(data)
    cert = read_certificate(r)
    r.finish("certificate")
    return cert


def check_certificate(
    cert: Certificate, vertex: VertexId, genesis: Genesis, verifier: Verifier
) -> None:
    """Require a quorum of distinct validators' valid votes for ``vertex``, checked by
    ``verifier`` once per certificate (a certificate met again is one lookup)."""
    if cert.scheme is not genesis.scheme:
        raise InputRejected(
            Reason.WRONG_SCHEME,
            f"votes signed with {cert.scheme.label}, not {genesis.scheme.label}",
        )
    if len(cert.voters) < genesis.quorum:
        raise InputRejected(
            Reason.BAD_CERTIFICATE, f"{len(cert.voters)} votes, quorum is {genesis.quorum}"
        )
    checks = vote_checks(cert, vertex, genesis)
    if len(checks) < len(cert.voters):
        raise InputRejected(Reason.BAD_CERTIFICATE, f"voter {cert.voters[-1]} is no validator")
    if verifier.verify_all(checks):
        return
    for voter, ok in zip(cert.voters, verifier.verify_many(checks), strict=True):
        if not ok:
            raise InputRejected(Reason.BAD_CERTIFICATE, f"vote of validator {voter} is invalid")


def vote_checks(cert: Certificate, vertex: VertexId, genesis: Genesis) -> list[SignatureCheck]:
    """The checks of ``cert``'s votes for ``vertex`` (those of validators only)."""
    checks = (
        genesis.vote_check(voter, vertex, signature)
        for voter, signature in zip(cert.voters, cert.signatures, strict=True)
    )
    return [check for check in checks if check is not None]

"""Evidence of equivocation: two signed vertices of one validator for one round.

Anyone holding the genesis can check it: both headers name the same author and
round, their ids differ, and the author's signature over each id verifies.

Layout (integers big-endian)::

    evidence = (header_len:u32  header  signature) * 2
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core import codec
from qudag_node.core.crypto import SIGNATURE_SIZES, Purpose, verify_check, vertex_id
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import NodeId, VertexId
from qudag_node.core.vertex import decode_header_bytes


@dataclass(frozen=True, slots=True)
class SignedHeader:
    """A vertex header and its author's signature: enough to prove authorship."""

    header: bytes
    signature: bytes

    @property
    def id(self) -> VertexId:
        """The vertex id the signature covers."""
        return vertex_id(self.header)


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two different signed vertices of ``author`` for ``round``."""

    author: NodeId
    round: int
    first: SignedHeader
    second: SignedHeader

    def encode(self) -> bytes:
        """Canonical evidence bytes."""
        parts: list[bytes] = []
        for signed in (self.first, self.second):
            parts += [codec.u32(len(signed.header)), signed.header, signed.signature]
        return b"".join(parts)


def decode_equivocation(data: bytes, genesis: Genesis) -> Equivocation:
    """Parse evidence and check that it proves equivocation in ``genesis``'s network."""
    r = codec.Reader(data)
    signed: list[SignedHeader] = []
    for _ in range(2):
        header_bytes = r.fixed(r.u32("header length"), "header")
        header = decode_header_bytes(header_bytes)
        signed.append(SignedHeader(header_bytes, r.fixed(SIGNATURE_SIZES[header.scheme], "sig")))
    r.finish("evidence")
    first, second = (decode_header_bytes(s.header) for s in signed)
    if (first.author, first.round) != (second.author, second.round) or signed[0].id == signed[1].id:
        raise InputRejected(Reason.NON_CANONICAL, "not two vertices of one author and round")
    if first.network != genesis.hash or second.network != genesis.hash:
        raise InputRejected(Reason.WRONG_NETWORK, "evidence from another network")
    if first.scheme is not genesis.scheme or second.scheme is not genesis.scheme:
        raise InputRejected(Reason.WRONG_SCHEME, f"evidence not signed with {genesis.scheme.label}")
    for s in signed:
        check = genesis.signature_check(first.author, Purpose.VERTEX, s.id, s.signature)
        if check is None:
            raise InputRejected(Reason.UNKNOWN_AUTHOR, "evidence against a non-validator")
        if not verify_check(check):
            raise InputRejected(Reason.BAD_SIGNATURE, "evidence signature does not verify")
    return Equivocation(first.author, first.round, signed[0], signed[1])

"""Certified checkpoints: a signed summary of the finalized state from which a node can
continue the DAG without its history.

After committing a leader whose round enters a new interval of
``Params.checkpoint_interval`` rounds, every node computes the same
:class:`Checkpoint`: the leader, the log's length and running hash, and the *window*
(the ids of the ordered vertices of rounds at or above ``round - gc_depth``, the only
ordered vertices later leaders can still see). Each validator signs the checkpoint's
digest; ``n - f`` such signatures from distinct validators (a :class:`Certificate`
whose votes sign the digest for :attr:`Purpose.CHECKPOINT`) make it *certified*. Two
quorums share an honest validator, and an honest validator signs only the checkpoint it
computed itself, so a certified checkpoint is the one every honest node computes.

Layout (integers big-endian)::

    checkpoint = version:u8  genesis:32  number:u64  round:u64  leader:32
                 timestamp_ms:u64  log_length:u64  log_hash:32  window_count:u32
                 window_root:32
    digest     = BLAKE2b-256(checkpoint, person "qudag:checkpoint")
    window_root = BLAKE2b-256(id_1 || ... || id_k, person "qudag:window"), ids sorted
    certified  = checkpoint  certificate        (certificate: see certificate.py)

``number`` is ``round // checkpoint_interval``; ``timestamp_ms`` is the leader
vertex's signed timestamp (what retention by age is measured against).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

from qudag_node.core import codec
from qudag_node.core.certificate import Certificate, read_certificate
from qudag_node.core.crypto import Purpose, SignatureCheck, Verifier
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import HASH_SIZE, GenesisHash, VertexId

CHECKPOINT_VERSION = 1
_DIGEST = b"qudag:checkpoint"
_WINDOW = b"qudag:window"
#: Size of an encoded checkpoint.
CHECKPOINT_SIZE = 1 + 32 + 8 + 8 + 32 + 8 + 8 + 32 + 4 + 32


def window_root(ids: Iterable[VertexId]) -> bytes:
    """The commitment to a window: the hash of its vertex ids, sorted."""
    return blake2b(b"".join(sorted(ids)), digest_size=HASH_SIZE, person=_WINDOW).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What every node holds right after committing the leader of ``round``."""

    genesis: GenesisHash
    number: int
    round: int
    leader: VertexId
    timestamp_ms: int
    log_length: int
    log_hash: bytes
    window_count: int
    window_root: bytes

    def encode(self) -> bytes:
        """Canonical checkpoint bytes."""
        return b"".join(
            (
                codec.u8(CHECKPOINT_VERSION),
                self.genesis,
                codec.u64(self.number),
                codec.u64(self.round),
                self.leader,
                codec.u64(self.timestamp_ms),
                codec.u64(self.log_length),
                self.log_hash,
                codec.u32(self.window_count),
                self.window_root,
            )
        )

    @property
    def digest(self) -> bytes:
        """What validators sign (for :attr:`Purpose.CHECKPOINT`)."""
        return blake2b(self.encode(), digest_size=HASH_SIZE, person=_DIGEST).digest()

    def holds_window(self, ids: Iterable[VertexId]) -> bool:
        """Whether ``ids`` are exactly this checkpoint's window."""
        listed = set(ids)
        return len(listed) == self.window_count and window_root(listed) == self.window_root


def read_checkpoint(r: codec.Reader) -> Checkpoint:
    """Read and structurally check a checkpoint."""
    if r.u8("checkpoint version") != CHECKPOINT_VERSION:
        raise InputRejected(Reason.BAD_VERSION, "unknown checkpoint version")
    return Checkpoint(
        GenesisHash(r.fixed(HASH_SIZE, "checkpoint genesis")),
        r.u64("checkpoint number"),
        r.u64("checkpoint round"),
        VertexId(r.fixed(HASH_SIZE, "checkpoint leader")),
        r.u64("checkpoint timestamp"),
        r.u64("checkpoint log length"),
        r.fixed(HASH_SIZE, "checkpoint log hash"),
        r.u32("checkpoint window count"),
        r.fixed(HASH_SIZE, "checkpoint window root"),
    )


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Parse exactly one checkpoint."""
    r = codec.Reader(data)
    checkpoint = read_checkpoint(r)
    r.finish("checkpoint")
    return checkpoint


@dataclass(frozen=True, slots=True)
class CertifiedCheckpoint:
    """A checkpoint and a quorum of validators' signatures over its digest."""

    checkpoint: Checkpoint
    certificate: Certificate

    def encode(self) -> bytes:
        """Canonical bytes: the checkpoint, then the certificate."""
        return self.checkpoint.encode() + self.certificate.encode()


def read_certified(r: codec.Reader) -> CertifiedCheckpoint:
    """Read and structurally check a certified checkpoint."""
    return CertifiedCheckpoint(read_checkpoint(r), read_certificate(r))


def decode_certified(data: bytes) -> CertifiedCheckpoint:
    """Parse exactly one certified checkpoint."""
    r = codec.Reader(data)
    certified = read_certified(r)
    r.finish("certified checkpoint")
    return certified


def signature_check(
    genesis: Genesis, voter: int, checkpoint: Checkpoint, signature: bytes
) -> SignatureCheck | None:
    """How validator ``voter``'s signature of ``checkpoint`` is checked (None when
    there is no such validator)."""
    return genesis.vote_check(voter, checkpoint.digest, signature, Purpose.CHECKPOINT)


def check_certified(certified: CertifiedCheckpoint, genesis: Genesis, verifier: Verifier) -> None:
    """Require ``certified`` to be a checkpoint of this network signed by a quorum of
    distinct validators; raises :class:`InputRejected` (``wrong_network``,
    ``wrong_scheme``, ``bad_checkpoint``) otherwise."""
    checkpoint, cert = certified.checkpoint, certified.certificate
    if checkpoint.genesis != genesis.hash:
        raise InputRejected(Reason.WRONG_NETWORK, "checkpoint of another network")
    if cert.scheme is not genesis.scheme:
        raise InputRejected(
            Reason.WRONG_SCHEME,
            f"checkpoint signed with {cert.scheme.label}, not {genesis.scheme.label}",
        )
    if len(cert.voters) < genesis.quorum:
        raise InputRejected(
            Reason.BAD_CHECKPOINT, f"{len(cert.voters)} signatures, quorum is {genesis.quorum}"
        )
    checks = [
        check
        for voter, signature in zip(cert.voters, cert.signatures, strict=True)
        if (check := signature_check(genesis, voter, checkpoint, signature)) is not None
    ]
    if len(checks) < len(cert.voters):
        raise InputRejected(Reason.BAD_CHECKPOINT, f"voter {cert.voters[-1]} is no validator")
    if not all(verifier.verify_many(checks)):
        raise InputRejected(Reason.BAD_CHECKPOINT, "a checkpoint signature is invalid")

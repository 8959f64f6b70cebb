"""Hashes and signatures.

All hashes are BLAKE2b-256 (``hashlib``, implemented in C) with a distinct
personalisation string per use, so that a transaction id can never be mistaken for a
vertex id or a log hash. Hot paths take whole batches: one list comprehension of C
calls for ids, one C call over the joined ids for a batch root.

Signatures are named by a :class:`Scheme` byte carried in every vertex header, so a
post-quantum scheme can be added without a format break. Today only Ed25519
(PyNaCl/libsodium) is defined.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from hashlib import blake2b

import nacl.exceptions
import nacl.signing

from qudag_node.core.types import HASH_SIZE, GenesisHash, PublicKey, TxId, VertexId

_TX = b"qudag:tx"
_VERTEX = b"qudag:vertex"
_BATCH = b"qudag:batch"
_LOG = b"qudag:log"
_GENESIS = b"qudag:genesis"


class Scheme(enum.IntEnum):
    """Signature schemes a vertex header can name."""

    ED25519 = 1


SIGNATURE_SIZES = {Scheme.ED25519: 64}
PRIVATE_KEY_SIZE = 32


def tx_id(data: bytes) -> TxId:
    """The id of one transaction."""
    return TxId(blake2b(data, digest_size=HASH_SIZE, person=_TX).digest())


def tx_ids(batch: Sequence[bytes]) -> list[TxId]:
    """The ids of a batch of transactions, in order."""
    return [TxId(blake2b(t, digest_size=HASH_SIZE, person=_TX).digest()) for t in batch]


def batch_root(ids_blob: bytes) -> bytes:
    """Commitment to an ordered batch, given its ids concatenated (32 bytes each)."""
    return blake2b(ids_blob, digest_size=HASH_SIZE, person=_BATCH).digest()


def vertex_id(header: bytes) -> VertexId:
    """The id of a vertex: the hash of its canonical header bytes."""
    return VertexId(blake2b(header, digest_size=HASH_SIZE, person=_VERTEX).digest())


def genesis_hash(encoded: bytes) -> GenesisHash:
    """The hash of an encoded genesis."""
    return GenesisHash(blake2b(encoded, digest_size=HASH_SIZE, person=_GENESIS).digest())


def log_hash_start(genesis: GenesisHash) -> bytes:
    """The running log hash before the first entry: bound to the network."""
    return blake2b(genesis, digest_size=HASH_SIZE, person=_LOG).digest()


def extend_log_hash(previous: bytes, ids: Sequence[TxId]) -> list[bytes]:
    """Running hashes after appending each id: ``h[i] = H(h[i-1] || id[i])``."""
    out: list[bytes] = []
    h = previous
    for i in ids:
        h = blake2b(h + i, digest_size=HASH_SIZE, person=_LOG).digest()
        out.append(h)
    return out


class Signer:
    """A node's private key. Its repr never shows the key."""

    __slots__ = ("_key", "public_key", "scheme")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != PRIVATE_KEY_SIZE:
            raise ValueError(f"a private key is {PRIVATE_KEY_SIZE} bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = PublicKey(bytes(self._key.verify_key))
        self.scheme = Scheme.ED25519

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; returns the bare signature."""
        return self._key.sign(message).signature

    def seed(self) -> bytes:
        """The private key bytes (to store it; never log them)."""
        return bytes(self._key)

    def __repr__(self) -> str:
        return f"Signer(public_key={self.public_key.hex()})"


def verify(scheme: Scheme, public_key: PublicKey, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``message``.

    Results are remembered for the last few thousand checks: one certificate's votes
    arrive again with every re-announcement and fetch answer.
    """
    if scheme is not Scheme.ED25519:
        return False
    return _verify_ed25519(public_key, message, signature)


@functools.lru_cache(maxsize=4096)
def _verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True

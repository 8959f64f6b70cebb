"""Hashes and signatures.

All hashes are BLAKE2b-256 (``hashlib``, implemented in C) with a distinct
personalisation string per use, so that a transaction id can never be mistaken for a
vertex id or a log hash. Hot paths take whole batches: one list comprehension of C
calls for ids, one C call over the joined ids for a batch root.

Signatures are named by a :class:`Scheme` byte carried in every vertex header, so a
post-quantum scheme can be added without a format break. Today only Ed25519
(PyNaCl/libsodium) is defined.

The engine's signature checks go through the :class:`Verifier` it was given, which
remembers recent results in its own :class:`VerifiedCache`: the engine hands it the
checks of a whole batch at once (perhaps spread over several threads), and the rules
that check one signature at a time then find the results there. The core keeps no
cache of its own; :func:`verify` checks without remembering anything.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b
from itertools import starmap
from typing import Protocol

import nacl.bindings
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


#: One Ed25519 signature check: (public key, signed message, signature).
SignatureCheck = tuple[PublicKey, bytes, bytes]

_ED25519_KEY_SIZE = 32


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Not cached and safe to call from any thread (libsodium runs without the GIL).
    """
    if len(public_key) != _ED25519_KEY_SIZE or len(signature) != SIGNATURE_SIZES[Scheme.ED25519]:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def verify_each(checks: Iterable[SignatureCheck]) -> list[bool]:
    """:func:`verify_ed25519` of every check, in order."""
    return list(starmap(verify_ed25519, checks))


#: How many results a verifier remembers unless told otherwise.
CACHE_SIZE = 8192

#: Checks a batch of signatures without a cache (one after the other, or spread out).
BatchCheck = Callable[[Sequence[SignatureCheck]], list[bool]]


def verify(scheme: Scheme, public_key: PublicKey, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``message``; nothing is
    remembered (the engine's checks go through its :class:`Verifier`)."""
    return scheme is Scheme.ED25519 and verify_ed25519(public_key, message, signature)


class VerifiedCache:
    """The results of the last ``size`` distinct signature checks (least recently used
    go first). ``misses`` counts the checks :meth:`verify` made itself."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.misses = 0
        self._results: OrderedDict[SignatureCheck, bool] = OrderedDict()

    def get(self, check: SignatureCheck) -> bool | None:
        """The remembered result of ``check``, or None."""
        result = self._results.get(check)
        if result is not None:
            self._results.move_to_end(check)
        return result

    def remember(self, checks: Iterable[SignatureCheck], results: Iterable[bool]) -> None:
        """Record results computed elsewhere (they must be :func:`verify_ed25519`'s)."""
        cache = self._results
        for check, result in zip(checks, results, strict=True):
            cache[check] = result
            cache.move_to_end(check)
        while len(cache) > self.size:
            cache.popitem(last=False)

    def verify(
        self, scheme: Scheme, public_key: PublicKey, message: bytes, signature: bytes
    ) -> bool:
        """:func:`verify`, answered from the cache when the check is remembered."""
        if scheme is not Scheme.ED25519:
            return False
        check = (public_key, message, signature)
        result = self.get(check)
        if result is None:
            result = verify_ed25519(public_key, message, signature)
            self.misses += 1
            self.remember((check,), (result,))
        return result

    def verify_many(self, checks: Sequence[SignatureCheck], compute: BatchCheck) -> list[bool]:
        """Whether each check verifies, in order: the remembered results, and those of
        ``compute`` called once with the distinct checks not remembered (then remembered)."""
        results: dict[SignatureCheck, bool] = {}
        fresh: list[SignatureCheck] = []
        for check in dict.fromkeys(checks):
            known = self.get(check)
            if known is None:
                fresh.append(check)
            else:
                results[check] = known
        if fresh:
            computed = compute(fresh)
            results.update(zip(fresh, computed, strict=True))
            self.remember(fresh, computed)
        return [results[check] for check in checks]


class Verifier(Protocol):
    """Checks the engine's signatures and remembers the last :attr:`cache_size`
    results; the engine's caller chooses how (one verifier per engine, or one shared
    on purpose, as a simulation of many engines in one process may)."""

    @property
    def cache_size(self) -> int:
        """How many results are remembered."""
        ...

    def verify(
        self, scheme: Scheme, public_key: PublicKey, message: bytes, signature: bytes
    ) -> bool:
        """True when ``signature`` is ``public_key``'s signature of ``message``."""
        ...

    def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Whether each check's signature verifies, in the order of ``checks``; the
        results are remembered for :meth:`verify`."""
        ...


class SequentialVerifier:
    """The plain verifier: one check after the other, on the calling thread."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.cache = VerifiedCache(cache_size)

    @property
    def cache_size(self) -> int:
        """How many results are remembered."""
        return self.cache.size

    def verify(
        self, scheme: Scheme, public_key: PublicKey, message: bytes, signature: bytes
    ) -> bool:
        """True when ``signature`` is ``public_key``'s signature of ``message``."""
        return self.cache.verify(scheme, public_key, message, signature)

    def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Whether each check's signature verifies, in order (results remembered)."""
        return self.cache.verify_many(checks, self._compute)

    def _compute(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Check what the cache does not know (a subclass may spread the work)."""
        return verify_each(checks)

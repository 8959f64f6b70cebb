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
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b
from typing import NamedTuple, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from qudag_node.core import composite
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.types import HASH_SIZE, GenesisHash, NodeId, PublicKey, TxId, VertexId

_TX = b"qudag:tx"
_VERTEX = b"qudag:vertex"
_BATCH = b"qudag:batch"
_LOG = b"qudag:log"
_GENESIS = b"qudag:genesis"
_NODE_ID = b"qudag:node-id"
_CHECK = b"qudag:check"
_GROUP = b"qudag:checks"


class Scheme(enum.IntEnum):
    """Signature schemes a network (its genesis), a vertex, a vote or a certificate can
    name. A network uses one; anything signed in another is refused."""

    ED25519 = 1
    MLDSA65_ED25519 = 2

    @property
    def label(self) -> str:
        """The scheme's name in files, settings and the API."""
        return _SCHEME_LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> Scheme:
        """The scheme named ``label``; ValueError names the ones there are."""
        for scheme, known in _SCHEME_LABELS.items():
            if label == known:
                return scheme
        raise ValueError(f"unknown signature scheme {label!r}: use {' or '.join(SCHEME_LABELS)}")


_SCHEME_LABELS = {Scheme.ED25519: "ed25519", Scheme.MLDSA65_ED25519: "mldsa65-ed25519"}
#: The scheme names, in the order they were defined.
SCHEME_LABELS = tuple(_SCHEME_LABELS.values())
#: The scheme of a new network unless told otherwise.
DEFAULT_SCHEME = Scheme.MLDSA65_ED25519
SIGNATURE_SIZES = {Scheme.ED25519: 64, Scheme.MLDSA65_ED25519: composite.SIGNATURE_SIZE}
PUBLIC_KEY_SIZES = {Scheme.ED25519: 32, Scheme.MLDSA65_ED25519: composite.PUBLIC_KEY_SIZE}
#: A private key's size names its scheme: an Ed25519 seed, or ML-DSA's seed and Ed25519's.
PRIVATE_KEY_SIZES = {Scheme.ED25519: 32, Scheme.MLDSA65_ED25519: composite.SEED_SIZE}


class Purpose(enum.Enum):
    """What a signature is for: the composite scheme's context (``ctx``), so that a
    signature made for one purpose never verifies for another. Ed25519 networks sign
    their messages as they always did (each message already names its use)."""

    VERTEX = b"qudag/vertex"
    VOTE = b"qudag/vote"
    LINK = b"qudag/link"
    CHECKPOINT = b"qudag/checkpoint"


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


def named_scheme(raw: int) -> Scheme:
    """The scheme a version-2 genesis or HELLO names by its byte: any but Ed25519 (whose
    encodings name no scheme); raises :class:`InputRejected` (``unknown_scheme``)."""
    if raw == Scheme.ED25519 or raw not in PUBLIC_KEY_SIZES:
        raise InputRejected(Reason.UNKNOWN_SCHEME, f"signature scheme {raw}")
    return Scheme(raw)


def node_id(scheme: Scheme, public_key: PublicKey) -> NodeId:
    """The 32 bytes naming the holder of ``public_key``: the key itself for Ed25519, its
    hash for the composite (so headers and links stay small)."""
    if scheme is Scheme.ED25519:
        return NodeId(public_key)
    return NodeId(blake2b(public_key, digest_size=HASH_SIZE, person=_NODE_ID).digest())


def scheme_of_private_key(seed: bytes) -> Scheme:
    """The scheme a private key of this size belongs to; ValueError for other sizes."""
    return _scheme_by_size(PRIVATE_KEY_SIZES, len(seed), "private key")


def scheme_of_public_key(key: bytes) -> Scheme:
    """The scheme a public key of this size belongs to; ValueError for other sizes."""
    return _scheme_by_size(PUBLIC_KEY_SIZES, len(key), "public key")


def _scheme_by_size(sizes: dict[Scheme, int], size: int, what: str) -> Scheme:
    for scheme, known in sizes.items():
        if size == known:
            return scheme
    names = " or ".join(f"{n} bytes ({s.label})" for s, n in sizes.items())
    raise ValueError(f"a {what} is {names}")


class Signer:
    """A node's private key, in the scheme its size names. Its repr never shows it."""

    __slots__ = ("_seed", "_sign", "node_id", "public_key", "scheme")

    def __init__(self, seed: bytes) -> None:
        self.scheme = scheme_of_private_key(seed)
        if self.scheme is Scheme.ED25519:
            key = nacl.signing.SigningKey(seed)
            self.public_key = PublicKey(bytes(key.verify_key))
            self._sign: Callable[[Purpose, bytes], bytes] = lambda _, m: key.sign(m).signature
        else:
            pair = composite.CompositeKey(seed)
            self.public_key = PublicKey(pair.public_key)
            self._sign = lambda purpose, m: pair.sign(m, purpose.value)
        self.node_id = node_id(self.scheme, self.public_key)
        self._seed = seed

    @classmethod
    def generate(cls, scheme: Scheme, entropy: bytes) -> Signer:
        """A new key of ``scheme`` made from ``entropy`` (uniformly random bytes, at
        least the key's size; the caller draws them)."""
        size = PRIVATE_KEY_SIZES[scheme]
        if len(entropy) < size:
            raise ValueError(f"a {scheme.label} key needs {size} random bytes")
        return cls(entropy[:size])

    def sign(self, purpose: Purpose, message: bytes) -> bytes:
        """Sign ``message`` for ``purpose``; returns the bare signature."""
        return self._sign(purpose, message)

    def seed(self) -> bytes:
        """The private key bytes (to store them; never log them)."""
        return self._seed

    def __repr__(self) -> str:
        return f"Signer(scheme={self.scheme.label}, node_id={self.node_id.hex()})"


class SignatureCheck(NamedTuple):
    """One signature to check: ``signature`` by ``public_key`` over ``message`` for
    ``purpose``, in ``scheme``."""

    scheme: Scheme
    purpose: Purpose
    public_key: PublicKey
    message: bytes
    signature: bytes


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Not cached and safe to call from any thread (libsodium runs without the GIL).
    """
    if (
        len(public_key) != PUBLIC_KEY_SIZES[Scheme.ED25519]
        or len(signature) != SIGNATURE_SIZES[Scheme.ED25519]
    ):
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def verify_check(check: SignatureCheck) -> bool:
    """Whether ``check``'s signature verifies; nothing is remembered. Safe to call from
    any thread: neither scheme holds the GIL while it works."""
    scheme, purpose, public_key, message, signature = check
    if scheme is Scheme.ED25519:
        return verify_ed25519(public_key, message, signature)
    return composite.verify(public_key, message, purpose.value, signature)


def verify_each(checks: Iterable[SignatureCheck]) -> list[bool]:
    """:func:`verify_check` of every check, in order."""
    return list(map(verify_check, checks))


#: How many results a verifier remembers unless told otherwise.
CACHE_SIZE = 8192

#: Checks a batch of signatures without a cache (one after the other, or spread out).
BatchCheck = Callable[[Sequence[SignatureCheck]], list[bool]]


def check_digest(check: SignatureCheck) -> bytes:
    """What a cache remembers a check by: 32 bytes in place of kilobytes of key and
    signature (the fields' lengths lead, so no two checks share a digest). Ed25519
    signs no purpose, so its checks for two purposes are one."""
    scheme, purpose, public_key, message, signature = check
    context = b"" if scheme is Scheme.ED25519 else purpose.value
    lengths = _CHECK_LENGTHS.pack(
        scheme, len(context), len(public_key), len(message), len(signature)
    )
    data = b"".join((lengths, context, public_key, message, signature))
    return blake2b(data, digest_size=HASH_SIZE, person=_CHECK).digest()


#: scheme, then the lengths of the context, key, message and signature.
_CHECK_LENGTHS = struct.Struct(">BBIIH")


class VerifiedCache:
    """The results of the last ``size`` distinct signature checks, and of groups of
    checks such as a certificate's votes (least recently used go first). ``misses``
    counts the checks :meth:`verify` made itself."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.misses = 0
        self._results: OrderedDict[bytes, bool] = OrderedDict()

    def get(self, digest: bytes) -> bool | None:
        """The remembered result for ``digest``, or None."""
        result = self._results.get(digest)
        if result is not None:
            self._results.move_to_end(digest)
        return result

    def remember(self, digests: Iterable[bytes], results: Iterable[bool]) -> None:
        """Record results computed elsewhere (they must be :func:`verify_check`'s)."""
        cache = self._results
        for digest, result in zip(digests, results, strict=True):
            cache[digest] = result
            cache.move_to_end(digest)
        while len(cache) > self.size:
            cache.popitem(last=False)

    def verify(self, check: SignatureCheck) -> bool:
        """:func:`verify_check`, answered from the cache when the check is remembered."""
        digest = check_digest(check)
        result = self.get(digest)
        if result is None:
            result = verify_check(check)
            self.misses += 1
            self.remember((digest,), (result,))
        return result

    def verify_many(self, checks: Sequence[SignatureCheck], compute: BatchCheck) -> list[bool]:
        """Whether each check verifies, in order: the remembered results, and those of
        ``compute`` called once with the distinct checks not remembered (then remembered)."""
        return self._verify_digested([check_digest(c) for c in checks], checks, compute)

    def verify_all(self, checks: Sequence[SignatureCheck], compute: BatchCheck) -> bool:
        """Whether every check verifies, remembered for the group as a whole: a group
        seen again (a certificate that arrives by another path) costs one lookup."""
        digests = [check_digest(c) for c in checks]
        group = blake2b(b"".join(digests), digest_size=HASH_SIZE, person=_GROUP).digest()
        result = self.get(group)
        if result is None:
            result = all(self._verify_digested(digests, checks, compute))
            self.remember((group,), (result,))
        return result

    def _verify_digested(
        self, digests: Sequence[bytes], checks: Sequence[SignatureCheck], compute: BatchCheck
    ) -> list[bool]:
        """:meth:`verify_many` of ``checks``, whose digests are ``digests``."""
        results: dict[bytes, bool] = {}
        fresh: dict[bytes, SignatureCheck] = {}
        for digest, check in zip(digests, checks, strict=True):
            known = self.get(digest)
            if known is None:
                fresh.setdefault(digest, check)
            else:
                results[digest] = known
        if fresh:
            computed = compute(list(fresh.values()))
            results.update(zip(fresh, computed, strict=True))
            self.remember(fresh, computed)
        return [results[digest] for digest in digests]


class Verifier(Protocol):
    """Checks the engine's signatures and remembers the last :attr:`cache_size`
    results; the engine's caller chooses how (one verifier per engine, or one shared
    on purpose, as a simulation of many engines in one process may)."""

    @property
    def cache_size(self) -> int:
        """How many results are remembered."""
        ...

    def verify(self, check: SignatureCheck) -> bool:
        """True when ``check``'s signature verifies."""
        ...

    def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Whether each check's signature verifies, in the order of ``checks``; the
        results are remembered for :meth:`verify`."""
        ...

    def verify_all(self, checks: Sequence[SignatureCheck]) -> bool:
        """Whether all of ``checks`` verify, remembered as one group."""
        ...


class SequentialVerifier:
    """The plain verifier: one check after the other, on the calling thread."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.cache = VerifiedCache(cache_size)

    @property
    def cache_size(self) -> int:
        """How many results are remembered."""
        return self.cache.size

    def verify(self, check: SignatureCheck) -> bool:
        """True when ``check``'s signature verifies."""
        return self.cache.verify(check)

    def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Whether each check's signature verifies, in order (results remembered)."""
        return self.cache.verify_many(checks, self._compute)

    def verify_all(self, checks: Sequence[SignatureCheck]) -> bool:
        """Whether all of ``checks`` verify, remembered as one group."""
        return self.cache.verify_all(checks, self._compute)

    def _compute(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Check what the cache does not know (a subclass may spread the work)."""
        return verify_each(checks)

"""Composite ML-DSA-65 + Ed25519 signatures (``id-MLDSA65-Ed25519-SHA512``).

The construction of the IETF LAMPS draft *Composite ML-DSA for use in X.509 Public
Key Infrastructure* (draft-ietf-lamps-pq-composite-sigs), unchanged::

    M'        = Prefix || Label || len(ctx):u8 || ctx || SHA-512(M)
    signature = ML-DSA-65.Sign(mldsaSK, M', ctx=Label) || Ed25519.Sign(edSK, M')
    publicKey = mldsaPK (1,952 B) || edPK (32 B)
    privateKey = mldsaSeed (32 B) || edSeed (32 B)

A signature verifies only when both halves do, so forging one takes breaking both
ML-DSA-65 and Ed25519. ``ctx`` is the application's context (up to 255 bytes): the
node puts the purpose of a signature there. ML-DSA-65 is OpenSSL's (``cryptography``)
and Ed25519 libsodium's (PyNaCl); both verify without holding the GIL.

ML-DSA signing is hedged (FIPS 204's default): two signatures of one message differ,
and both verify. Nothing the node decides depends on a signature's bytes.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

PREFIX = b"CompositeAlgorithmSignatures2025"
LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"
MLDSA_PUBLIC_KEY_SIZE = 1952
MLDSA_SIGNATURE_SIZE = 3309
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = MLDSA_PUBLIC_KEY_SIZE + ED25519_PUBLIC_KEY_SIZE
SIGNATURE_SIZE = MLDSA_SIGNATURE_SIZE + ED25519_SIGNATURE_SIZE
SEED_SIZE = 64
MAX_CONTEXT = 255


def message_representative(message: bytes, ctx: bytes) -> bytes:
    """``M'``: what both halves sign for ``message`` in context ``ctx``."""
    if len(ctx) > MAX_CONTEXT:
        raise ValueError(f"a context is at most {MAX_CONTEXT} bytes")
    return b"".join((PREFIX, LABEL, bytes((len(ctx),)), ctx, hashlib.sha512(message).digest()))


class CompositeKey:
    """A composite private key, made from its 64-byte seed. Its repr shows no secret."""

    __slots__ = ("_ed25519", "_mldsa", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"a composite private key is {SEED_SIZE} bytes")
        self._mldsa = MLDSA65PrivateKey.from_seed_bytes(seed[:32])
        self._ed25519 = nacl.signing.SigningKey(seed[32:])
        self.public_key = self._mldsa.public_key().public_bytes_raw() + bytes(
            self._ed25519.verify_key
        )

    def sign(self, message: bytes, ctx: bytes) -> bytes:
        """The composite signature of ``message`` in context ``ctx``."""
        represented = message_representative(message, ctx)
        return self._mldsa.sign(represented, LABEL) + self._ed25519.sign(represented).signature

    def seed(self) -> bytes:
        """The 64 private bytes (to store them; never log them)."""
        return self._mldsa.private_bytes_raw() + bytes(self._ed25519)

    def __repr__(self) -> str:
        return f"CompositeKey(public_key={self.public_key[-32:].hex()}...)"


def verify(public_key: bytes, message: bytes, ctx: bytes, signature: bytes) -> bool:
    """True when both halves of ``signature`` verify ``message`` in context ``ctx``.

    Safe to call from any thread; neither half holds the GIL while it works.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    if len(ctx) > MAX_CONTEXT:
        return False
    represented = message_representative(message, ctx)
    try:
        mldsa_key = MLDSA65PublicKey.from_public_bytes(public_key[:MLDSA_PUBLIC_KEY_SIZE])
        mldsa_key.verify(signature[:MLDSA_SIGNATURE_SIZE], represented, LABEL)
        nacl.bindings.crypto_sign_open(
            signature[MLDSA_SIGNATURE_SIZE:] + represented, public_key[MLDSA_PUBLIC_KEY_SIZE:]
        )
    except (InvalidSignature, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True

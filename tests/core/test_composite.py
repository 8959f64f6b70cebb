"""The composite ML-DSA-65 + Ed25519 construction against the draft's own test vectors,
and the properties a reviewer expects of it: both halves must verify, the context and
the label bind, and no byte of either half can change."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qudag_node.core import composite

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "composite_mldsa65_ed25519.json").read_text()
)


def vector(name: str) -> bytes:
    return base64.b64decode(VECTORS[name])


KEY = composite.CompositeKey(bytes(range(64)))
OTHER = composite.CompositeKey(bytes(range(64, 128)))


def test_the_vectors_key_expands_to_the_vectors_public_key() -> None:
    key = composite.CompositeKey(vector("sk"))
    assert key.public_key == vector("pk")
    assert key.seed() == vector("sk")


def test_the_vectors_signatures_verify_with_and_without_context() -> None:
    pk, m, ctx = vector("pk"), vector("m"), vector("ctx")
    assert composite.verify(pk, m, b"", vector("s"))
    assert composite.verify(pk, m, ctx, vector("sWithContext"))
    assert not composite.verify(pk, m, ctx, vector("s"))
    assert not composite.verify(pk, m, b"", vector("sWithContext"))


def test_the_message_representative_is_the_drafts() -> None:
    m, ctx = b"\x00\x01\x02", b"qudag/vertex"
    expected = (
        b"CompositeAlgorithmSignatures2025"
        + b"COMPSIG-MLDSA65-Ed25519-SHA512"
        + bytes([len(ctx)])
        + ctx
        + hashlib.sha512(m).digest()
    )
    assert composite.message_representative(m, ctx) == expected


def test_sizes_are_the_drafts() -> None:
    signature = KEY.sign(b"m", b"c")
    assert len(signature) == composite.SIGNATURE_SIZE == 3373
    assert len(KEY.public_key) == composite.PUBLIC_KEY_SIZE == 1984


def test_a_signature_verifies_only_for_its_key_message_and_context() -> None:
    signature = KEY.sign(b"message", b"ctx-a")
    assert composite.verify(KEY.public_key, b"message", b"ctx-a", signature)
    assert not composite.verify(OTHER.public_key, b"message", b"ctx-a", signature)
    assert not composite.verify(KEY.public_key, b"messagE", b"ctx-a", signature)
    assert not composite.verify(KEY.public_key, b"message", b"ctx-b", signature)


def test_each_half_alone_is_not_enough() -> None:
    ours = KEY.sign(b"message", b"ctx")
    theirs = OTHER.sign(b"message", b"ctx")
    cut = composite.MLDSA_SIGNATURE_SIZE
    # Our ML-DSA key with their Ed25519 key: each half checks against its own key.
    mixed_key = KEY.public_key[: composite.MLDSA_PUBLIC_KEY_SIZE] + OTHER.public_key[-32:]
    assert not composite.verify(mixed_key, b"message", b"ctx", ours)
    assert not composite.verify(mixed_key, b"message", b"ctx", theirs)
    assert composite.verify(mixed_key, b"message", b"ctx", ours[:cut] + theirs[cut:])
    assert not composite.verify(KEY.public_key, b"message", b"ctx", ours[:cut] + theirs[cut:])
    assert not composite.verify(KEY.public_key, b"message", b"ctx", theirs[:cut] + ours[cut:])


def test_wrong_sizes_and_oversize_contexts_are_refused() -> None:
    signature = KEY.sign(b"m", b"c")
    assert not composite.verify(KEY.public_key[:-1], b"m", b"c", signature)
    assert not composite.verify(KEY.public_key, b"m", b"c", signature + b"\x00")
    assert not composite.verify(KEY.public_key, b"m", b"c" * 256, signature)
    with pytest.raises(ValueError, match="at most 255"):
        KEY.sign(b"m", b"c" * 256)
    with pytest.raises(ValueError, match="64 bytes"):
        composite.CompositeKey(bytes(32))


def test_the_repr_shows_no_secret() -> None:
    seed = KEY.seed()
    assert seed.hex() not in repr(KEY)
    assert seed[:32].hex() not in repr(KEY)
    assert seed[32:].hex() not in repr(KEY)


SIGNED = KEY.sign(b"the message", b"qudag/vertex")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, composite.SIGNATURE_SIZE - 1), st.integers(1, 255))
def test_flipping_any_byte_of_either_half_is_rejected(index: int, flip: int) -> None:
    damaged = bytearray(SIGNED)
    damaged[index] ^= flip
    assert not composite.verify(KEY.public_key, b"the message", b"qudag/vertex", bytes(damaged))


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64))
def test_halves_swapped_between_messages_are_rejected(first: bytes, second: bytes) -> None:
    assume(first != second)
    a, b = KEY.sign(first, b"c"), KEY.sign(second, b"c")
    cut = composite.MLDSA_SIGNATURE_SIZE
    assert not composite.verify(KEY.public_key, first, b"c", a[:cut] + b[cut:])
    assert not composite.verify(KEY.public_key, first, b"c", b[:cut] + a[cut:])

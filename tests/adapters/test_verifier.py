"""The node's threaded signature verifier: the plain verifier's answers, on threads,
remembered in a cache of its own."""

from __future__ import annotations

import threading

import pytest

from qudag_node.core.crypto import Scheme, SignatureCheck, Signer, verify_each
from qudag_node.verifier import INLINE_BELOW, ThreadedVerifier

SIGNERS = [Signer(bytes([0x40 + i]) * 32) for i in range(3)]


def checks(count: int) -> list[SignatureCheck]:
    """``count`` checks, every third one with a signature of another message."""
    out: list[SignatureCheck] = []
    for i in range(count):
        signer = SIGNERS[i % len(SIGNERS)]
        message = i.to_bytes(32, "big")
        signed = message if i % 3 else (i + 1).to_bytes(32, "big")
        out.append((signer.public_key, message, signer.sign(signed)))
    return out


def verify_threads() -> set[threading.Thread]:
    """The verifier worker threads that are alive."""
    return {t for t in threading.enumerate() if t.name.startswith("verify")}


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("count", [0, 1, INLINE_BELOW - 1, INLINE_BELOW, 301])
def test_the_answers_are_the_plain_verifiers_in_order(workers: int, count: int) -> None:
    given = checks(count)
    verifier = ThreadedVerifier(workers)
    try:
        answers = verifier.verify_many(given)
    finally:
        verifier.close()
    assert answers == verify_each(given)
    assert answers.count(False) == len(range(0, count, 3))


def test_large_batches_use_the_worker_threads_and_close_stops_them() -> None:
    others = verify_threads()  # of any other verifier still open in this process
    verifier = ThreadedVerifier(2)
    verifier.verify_many(checks(INLINE_BELOW - 1))
    assert verify_threads() == others  # a small batch stays on the calling thread
    verifier.verify_many(checks(4 * INLINE_BELOW))
    assert 1 <= len(verify_threads() - others) <= 2
    verifier.close()
    assert verify_threads() == others


def test_results_are_remembered_by_the_verifier_that_made_them_only() -> None:
    given = checks(2 * INLINE_BELOW)
    verifier, other = ThreadedVerifier(1), ThreadedVerifier(1)
    try:
        answers = verifier.verify_many(given)
        singles = [verifier.verify(Scheme.ED25519, *c) for c in given]
        assert singles == answers
        assert verifier.cache.misses == 0  # every single check found its batch's result
        verifier.cache.remember(given[:1], [not answers[0]])  # a planted result is what it says
        assert verifier.verify_many(given) == [not answers[0], *answers[1:]]
        assert other.verify_many(given) == answers  # nothing planted there
    finally:
        verifier.close()
        other.close()

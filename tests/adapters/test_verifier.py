"""The node's threaded signature verifier: the plain verifier's answers, on threads,
remembered in a cache of its own."""

from __future__ import annotations

import functools
import threading

import pytest

from qudag_node.core.crypto import (
    PRIVATE_KEY_SIZES,
    Purpose,
    Scheme,
    SignatureCheck,
    Signer,
    check_digest,
    verify_each,
)
from qudag_node.verifier import INLINE_BELOW, ThreadedVerifier

SIGNERS = {
    scheme: [Signer(bytes([0x40 + i]) * PRIVATE_KEY_SIZES[scheme]) for i in range(3)]
    for scheme in Scheme
}


@functools.cache
def _checks(count: int, scheme: Scheme) -> tuple[SignatureCheck, ...]:
    out: list[SignatureCheck] = []
    for i in range(count):
        signer = SIGNERS[scheme][i % 3]
        message = i.to_bytes(32, "big")
        signed = message if i % 3 else (i + 1).to_bytes(32, "big")
        signature = signer.sign(Purpose.VOTE, signed)
        out.append(SignatureCheck(scheme, Purpose.VOTE, signer.public_key, message, signature))
    return tuple(out)


def checks(count: int, scheme: Scheme = Scheme.ED25519) -> list[SignatureCheck]:
    """``count`` checks in ``scheme``, every third one with a signature of another
    message (made once per process: a composite signature takes milliseconds)."""
    return list(_checks(count, scheme))


def verify_threads() -> set[threading.Thread]:
    """The verifier worker threads that are alive."""
    return {t for t in threading.enumerate() if t.name.startswith("verify")}


@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("count", [0, 1, INLINE_BELOW - 1, INLINE_BELOW, 301])
def test_the_answers_are_the_plain_verifiers_in_order(
    workers: int, count: int, scheme: Scheme
) -> None:
    given = checks(count, scheme)
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
        singles = [verifier.verify(c) for c in given]
        assert singles == answers
        assert verifier.cache.misses == 0  # every single check found its batch's result
        planted = [check_digest(given[0])]
        verifier.cache.remember(planted, [not answers[0]])  # a planted result is what it says
        assert verifier.verify_many(given) == [not answers[0], *answers[1:]]
        assert other.verify_many(given) == answers  # nothing planted there
    finally:
        verifier.close()
        other.close()


def test_a_certificates_votes_are_remembered_as_one_group() -> None:
    """A group of composite checks (a certificate's votes) seen again is answered by
    one lookup, not by its votes' results (planted ones here, to tell)."""
    votes = checks(INLINE_BELOW, Scheme.MLDSA65_ED25519)
    good = [c for i, c in enumerate(votes) if i % 3]
    verifier = ThreadedVerifier(1)
    try:
        assert verifier.verify_all(good)
        assert not verifier.verify_all(votes)  # one bad vote fails the group
        verifier.cache.remember([check_digest(good[0])], [False])
        assert verifier.verify_all(good)  # the group's result, not its votes'
        assert verifier.verify_many(good)[0] is False
    finally:
        verifier.close()

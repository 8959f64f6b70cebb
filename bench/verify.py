"""Signed-vertex verification during catch-up, against raw verification, for each
signature scheme.

During catch-up a node's pump feeds the CERTIFIED messages peers send to
:meth:`Engine.receive_messages`, a step's worth at a time: the engine decodes each
vertex (recomputing its id), has the node's verifier (:mod:`qudag_node.verifier`,
threads on the machine's cores) check every author signature and certificate vote of
the batch at once, then inserts the vertices into the DAG, where leaders commit. This
drives exactly that: a fresh observer engine with the node's verifier, linked to one
peer and catching up, takes the certified rounds of a four-validator history
(:mod:`bench.history`) in round order, 256 messages per step with the output
taken after each, as the pump does (without the store, which the
``catchup`` scenario includes). The signature checks it really made are the calls
that reach libsodium, counted.

The reference, in the same run and for the same scheme, is a plain loop over the
same distinct checks calling the libraries directly: for Ed25519, PyNaCl's
``VerifyKey(key).verify(message, signature)``; for the composite, the draft's
construction written out with ``hashlib``, ``cryptography``'s
``MLDSA65PublicKey.verify`` and PyNaCl (the node's own composite module is not used).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha512

import nacl.bindings
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

from bench.history import Committee, certified_rounds, distinct_signatures
from bench.lab import Lab
from bench.report import Row, per_second
from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, SignatureCheck, Signer
from qudag_node.core.engine import Engine
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.params import Params
from qudag_node.core.types import Instant, PeerId
from qudag_node.pump import PEER_INPUTS_PER_STEP
from qudag_node.verifier import ThreadedVerifier, worker_count

GOAL_RATIO = 0.8
STRETCH_RATIO = 1.0
VALIDATORS = 4


def raw_rate(checks: list[SignatureCheck]) -> float:
    """Raw verifications per second over ``checks`` (one scheme); every one must verify."""
    started = time.perf_counter()
    for check in checks:
        if check.scheme is Scheme.ED25519:
            nacl.signing.VerifyKey(check.public_key).verify(check.message, check.signature)
        else:
            _raw_composite(check)
    return len(checks) / (time.perf_counter() - started)


def parallel_rate(checks: list[SignatureCheck], threads: int) -> float:
    """Raw verifications per second with ``checks`` split over ``threads`` threads: above
    :func:`raw_rate` only if the libraries release the GIL while they verify."""
    share = -(-len(checks) // threads)
    parts = [checks[k : k + share] for k in range(0, len(checks), share)]
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(raw_rate, parts))
        return len(checks) / (time.perf_counter() - started)


_PREFIX = b"CompositeAlgorithmSignatures2025"
_LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"


def _raw_composite(check: SignatureCheck) -> None:
    """Verify a composite signature with the libraries alone; raises if it does not."""
    ctx = check.purpose.value
    represented = _PREFIX + _LABEL + bytes((len(ctx),)) + ctx + sha512(check.message).digest()
    key, signature = check.public_key, check.signature
    MLDSA65PublicKey.from_public_bytes(key[:1952]).verify(signature[:3309], represented, _LABEL)
    nacl.signing.VerifyKey(key[1952:]).verify(represented, signature[3309:])


@contextlib.contextmanager
def counting_verifications() -> Iterator[itertools.count[int]]:
    """Count the Ed25519 verifications that reach libsodium through PyNaCl (every
    signature check, the node's and PyNaCl's own, ends in ``crypto_sign_open``)."""
    original = nacl.bindings.crypto_sign_open
    calls = itertools.count()

    def counted(signed: bytes, pk: bytes) -> bytes:
        next(calls)
        return original(signed, pk)

    nacl.bindings.crypto_sign_open = counted
    try:
        yield calls
    finally:
        nacl.bindings.crypto_sign_open = original


def engine_run(
    committee: Committee, messages: list[bytes], per_step: int = PEER_INPUTS_PER_STEP
) -> tuple[float, int, int]:
    """Feed ``messages`` to a fresh observer engine catching up, ``per_step`` at a time
    (one message at a time with ``per_step=1``); returns (seconds, signature checks
    made, highest round reached)."""
    verifier = ThreadedVerifier(worker_count())  # the node's
    genesis = committee.genesis
    observer = Signer(os.urandom(PRIVATE_KEY_SIZES[genesis.scheme]))
    engine = Engine(genesis, Params(), observer, verifier=verifier)
    peer = PeerId("v1")
    engine.peer_connected(peer, genesis.ids[0])
    engine.set_catching_up(True, Instant(time.monotonic(), time.time()))
    rejected = 0
    with counting_verifications() as calls:
        started = time.perf_counter()
        for first in range(0, len(messages), per_step):
            now = Instant(time.monotonic(), time.time())
            engine.receive_messages(
                [(peer, data) for data in messages[first : first + per_step]], now
            )
            engine.handle_timer(now)
            rejected += len(engine.take_output().notices)
        elapsed = time.perf_counter() - started
        made = next(calls)
    verifier.close()
    if rejected:
        raise RuntimeError(f"the engine rejected {rejected} of the history's messages")
    return elapsed, made, engine.statistics().highest_round


def history(rounds: int, scheme: Scheme) -> tuple[Committee, list[bytes], int]:
    """A fresh four-validator history as CERTIFIED messages, and its distinct checks."""
    committee = Committee.generate(VALIDATORS, scheme)
    start_ms = int(time.time() * 1000) - 3_600_000
    made = list(certified_rounds(committee, rounds, start_ms))
    messages = [encode_message(CertifiedMessage(v, c)) for r in made for v, c in r]
    return committee, messages, len(distinct_signatures(committee, made))


async def scenario(lab: Lab) -> list[Row]:
    """Signature checks per second through the engine during catch-up, against raw,
    for each scheme."""
    return [_scheme_row(lab.scale.verify_rounds, scheme) for scheme in Scheme]


def _scheme_row(rounds: int, scheme: Scheme) -> Row:
    reference_committee = Committee.generate(VALIDATORS, scheme)
    reference_rounds = list(certified_rounds(reference_committee, rounds, 0))
    reference_checks = distinct_signatures(reference_committee, reference_rounds)
    reference = raw_rate(reference_checks)
    threads = worker_count() + 1
    parallel = parallel_rate(reference_checks, threads)
    committee, messages, distinct = history(rounds, scheme)
    elapsed, made, highest = engine_run(committee, messages)
    # a second history: the first one's results are remembered by the node's cache
    single_committee, single_messages, _ = history(rounds, scheme)
    single_elapsed, single_made, _ = engine_run(single_committee, single_messages, per_step=1)
    if highest != rounds:
        raise RuntimeError(f"the engine reached round {highest} of {rounds}")
    rate = made / elapsed
    ratio = rate / reference
    raw = "PyNaCl" if scheme is Scheme.ED25519 else "cryptography + PyNaCl"
    return Row(
        f"verify ({scheme.label})",
        f"{per_second(rate, 'checks/s')} ({per_second(len(messages) / elapsed, 'vertices/s')})",
        f"{per_second(reference, 'verifies/s')} {raw}",
        ratio,
        f">= {GOAL_RATIO} x (stretch > {STRETCH_RATIO} x)",
        ratio >= GOAL_RATIO,
        (
            f"{len(messages):,} certified vertices ({rounds:,} rounds of {VALIDATORS}"
            f" validators, quorum {committee.genesis.quorum}, no transactions) fed to"
            f" Engine.receive_messages {PEER_INPUTS_PER_STEP} per step, as a pump step"
            f" delivers them during catch-up; {made:,} verifications reached libsodium"
            f" ({made / len(messages):.2f} per vertex, {distinct:,} distinct checks)",
            f"fed one message at a time (Engine.receive_message):"
            f" {per_second(single_made / single_elapsed, 'checks/s')}"
            f" ({single_made / single_elapsed / reference:.2f} x)",
            f"the raw loop on {threads} threads: {per_second(parallel, 'verifies/s')}"
            f" ({parallel / reference:.2f} x one thread: the libraries"
            f" {'release' if parallel > 1.3 * reference else 'may not release'} the GIL)",
        ),
    )

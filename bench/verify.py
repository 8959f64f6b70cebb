"""Signed-vertex verification during catch-up, against raw PyNaCl verification.

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

The reference, in the same run: PyNaCl ``VerifyKey(key).verify(message, signature)`` in
a plain loop over the same distinct (key, vertex id, signature) triples.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator

import nacl.bindings
import nacl.signing

from bench.history import Committee, certified_rounds, distinct_signatures
from bench.lab import Lab
from bench.report import Row, per_second
from qudag_node.core.crypto import Signer
from qudag_node.core.engine import Engine
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.params import Params
from qudag_node.core.types import Instant, PeerId
from qudag_node.pump import PEER_INPUTS_PER_STEP
from qudag_node.verifier import ThreadedVerifier, worker_count

GOAL_RATIO = 0.8
STRETCH_RATIO = 1.0
VALIDATORS = 4


def raw_rate(checks: list[tuple[bytes, bytes, bytes]]) -> float:
    """PyNaCl verifications per second over ``checks``; every one must verify."""
    started = time.perf_counter()
    for key, message, signature in checks:
        nacl.signing.VerifyKey(key).verify(message, signature)
    return len(checks) / (time.perf_counter() - started)


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
    engine = Engine(committee.genesis, Params(), Signer(os.urandom(32)), verifier=verifier)
    peer = PeerId("v1")
    engine.peer_connected(peer, committee.genesis.ids[0])
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


def history(rounds: int) -> tuple[Committee, list[bytes], int]:
    """A fresh four-validator history as CERTIFIED messages, and its distinct checks."""
    committee = Committee.generate(VALIDATORS)
    start_ms = int(time.time() * 1000) - 3_600_000
    made = list(certified_rounds(committee, rounds, start_ms))
    messages = [encode_message(CertifiedMessage(v, c)) for r in made for v, c in r]
    return committee, messages, len(distinct_signatures(committee, made))


async def scenario(lab: Lab) -> list[Row]:
    """Signature checks per second through the engine during catch-up, against raw."""
    rounds = lab.scale.verify_rounds
    reference_committee = Committee.generate(VALIDATORS)
    reference_rounds = list(certified_rounds(reference_committee, rounds, 0))
    reference = raw_rate(distinct_signatures(reference_committee, reference_rounds))
    committee, messages, distinct = history(rounds)
    elapsed, made, highest = engine_run(committee, messages)
    # a second history: the first one's results are remembered by the node's cache
    single_committee, single_messages, _ = history(rounds)
    single_elapsed, single_made, _ = engine_run(single_committee, single_messages, per_step=1)
    if highest != rounds:
        raise RuntimeError(f"the engine reached round {highest} of {rounds}")
    rate = made / elapsed
    ratio = rate / reference
    return [
        Row(
            "verify",
            f"{per_second(rate, 'checks/s')} ({per_second(len(messages) / elapsed, 'vertices/s')})",
            f"{per_second(reference, 'verifies/s')} PyNaCl",
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
            ),
        )
    ]

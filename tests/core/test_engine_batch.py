"""The batch entry point ``Engine.receive_messages`` and the signature cache behind it.

A batch must leave an engine exactly as the same messages fed one by one with
``receive_message`` do: the same events (rejections with the same reasons), the same
messages to send, the same state. The batch's signatures reach the engine's verifier
in one call, before any message is handled. The results are remembered by that
verifier only: engines share them when they are given one verifier, never otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qudag_node.core.certificate import check_certificate, make_certificate, vote_checks
from qudag_node.core.crypto import (
    Purpose,
    Scheme,
    SequentialVerifier,
    SignatureCheck,
    VerifiedCache,
    check_digest,
    tx_ids,
    verify_ed25519,
)
from qudag_node.core.engine import Engine, Statistics
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import StepOutput, VertexStored
from qudag_node.core.messages import CertificateMessage, CertifiedMessage, encode_message
from qudag_node.core.types import PeerId, PublicKey
from qudag_node.core.vertex import Vertex
from tests.core.support import (
    CC,
    NOW,
    PARAMS,
    PEER,
    R1,
    ROUND1,
    C,
    Committee,
    drain,
    message,
    moment,
    proposal,
    vote,
)


class RecordingVerifier(SequentialVerifier):
    """The plain verifier, with a cache of its own, recording every batch of checks it
    computed (those its cache did not know)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[SignatureCheck]] = []

    def _compute(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """The plain verifier's answer."""
        self.calls.append(list(checks))
        return super()._compute(checks)

    @property
    def computed(self) -> int:
        """How many signatures it verified: one at a time or in batches."""
        return self.cache.misses + sum(map(len, self.calls))


def with_bad_vote(data: bytes) -> bytes:
    """A certified message whose last vote signature has one bit flipped."""
    return data[:-1] + bytes([data[-1] ^ 1])


def with_bad_author_signature(author: int) -> bytes:
    """A certified round-1 vertex whose author signature is another vertex's."""
    vertex = C.vertex(author, 1)
    forged = replace(vertex, signature=C.vertex(author, 1, txs=[b"other"]).signature)
    return encode_message(CertifiedMessage(forged, C.certificate(vertex)))


ROUND2 = [C.vertex(i, 2, parents=R1[:3], txs=[f"r2-v{i}".encode()]) for i in range(4)]
ROUND3 = [C.vertex(i, 3, parents=[v.id for v in ROUND2[:3]]) for i in range(3)]


def fresh(engine_key: int | None, verifier: SequentialVerifier | None = None) -> Engine:
    """An observer (``engine_key`` None) or validator ``engine_key`` with two peers; a
    validator has proposed a vertex with one transaction at :data:`NOW`."""
    signer = C.outsider if engine_key is None else C.signers[engine_key]
    engine = Engine(C.genesis, PARAMS, signer, verifier=verifier)
    engine.peer_connected(PEER, C.signers[1].node_id)
    engine.peer_connected(PeerId("peer-2"), C.signers[2].node_id)
    if engine_key is not None:
        engine.submit_transactions(tx_ids([b"tx"]), [b"tx"], moment(NOW))
    engine.handle_timer(moment(NOW))
    return engine


def own_votes() -> list[bytes]:
    """Votes of validators 1 to 3 for validator 0's proposal (as :func:`fresh` makes
    it), and a forged one."""
    [stored] = [e for e in drain(fresh(0)) if isinstance(e, VertexStored)]
    votes = [vote(stored.vertex, voter) for voter in (1, 2, 3)]
    return [*votes, with_bad_vote(votes[0])]


#: Valid and invalid messages of every kind the engine checks signatures of.
POOL = [
    *(message(v) for v in ROUND1 + ROUND2 + ROUND3),
    *(proposal(v) for v in ROUND2),
    with_bad_vote(message(ROUND2[3])),
    with_bad_vote(message(ROUND1[3])),
    with_bad_author_signature(3),
    *own_votes(),
    encode_message(CertifiedMessage(ROUND2[0], C.certificate(ROUND2[0], voters=(0, 1)))),
    b"\x04\x00",  # truncated
    b"\x63junk",  # unknown type
]


@dataclass(frozen=True)
class Outcome:
    """Everything observable of an engine."""

    output: StepOutput
    statistics: Statistics
    timer: float | None


def outcome(engine: Engine) -> Outcome:
    """Drain ``engine``: its output, statistics and next timer."""
    return Outcome(engine.take_output(), engine.statistics(), engine.get_timer())


def one_by_one(engine_key: int | None, messages: Sequence[bytes]) -> Outcome:
    """The outcome of ``messages`` fed with ``receive_message`` (the engine's own
    verifier, so its cache is empty)."""
    engine = fresh(engine_key)
    for data in messages:
        engine.receive_message(PEER, data, moment(NOW))
    return outcome(engine)


def batched(
    engine_key: int | None, messages: Sequence[bytes]
) -> tuple[Outcome, RecordingVerifier, int]:
    """The outcome of ``messages`` fed as one batch to an engine with a new verifier;
    also the verifier and the checks it made one at a time."""
    verifier = RecordingVerifier()
    engine = fresh(engine_key, verifier)
    engine.receive_messages([(PEER, data) for data in messages], moment(NOW))
    return outcome(engine), verifier, verifier.cache.misses


@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(st.sampled_from(POOL), max_size=24),
    st.sampled_from([None, 0, 3]),
)
def test_a_batch_ends_as_the_same_messages_one_by_one(
    messages: list[bytes], engine_key: int | None
) -> None:
    expected = one_by_one(engine_key, messages)
    got, _, _ = batched(engine_key, messages)
    assert got == expected


def signature_checks(vertices: Sequence[Vertex]) -> set[bytes]:
    """The digests of the distinct checks of certified vertices: the author's signature
    and the votes of validators 0, 1 and 2 (an author among them signs its vote apart;
    on Ed25519 that vote has its vertex signature's bytes, and the two are one check)."""
    checks = {
        C.genesis.signature_check(v.author, Purpose.VERTEX, v.id, v.signature) for v in vertices
    } | {
        C.genesis.vote_check(voter, v.id, C.signers[voter].sign(Purpose.VOTE, v.id))
        for v in vertices
        for voter in (0, 1, 2)
    }
    assert None not in checks
    return {check_digest(check) for check in checks if check is not None}


def test_a_catch_up_batch_is_verified_in_one_call_and_nothing_later() -> None:
    vertices = ROUND1 + ROUND2 + ROUND3
    got, verifier, inline = batched(None, [message(v) for v in vertices])
    assert not list(got.output.notices)
    assert got.statistics.highest_round == 3
    [checks] = verifier.calls
    expected = signature_checks(vertices)
    assert len(checks) == len(expected)
    assert {check_digest(c) for c in checks} == expected
    assert inline == 0


def test_a_composite_catch_up_batch_is_verified_in_one_call_and_nothing_later() -> None:
    round1 = [CC.vertex(i, 1, txs=[f"c1-v{i}".encode()]) for i in range(4)]
    round2 = [CC.vertex(i, 2, parents=[v.id for v in round1[:3]]) for i in range(4)]
    certified = [(v, CC.certificate(v)) for v in round1 + round2]
    verifier = RecordingVerifier()
    engine = Engine(CC.genesis, PARAMS, CC.outsider, verifier=verifier)
    batch = [(PEER, encode_message(CertifiedMessage(v, c))) for v, c in certified]
    engine.receive_messages(batch, moment(NOW))
    assert not engine.take_output().notices
    assert engine.statistics().highest_round == 2
    [checks] = verifier.calls
    expected = {
        check
        for v, c in certified
        for check in [
            CC.genesis.signature_check(v.author, Purpose.VERTEX, v.id, v.signature),
            *vote_checks(c, v.id, CC.genesis),
        ]
    }
    assert set(checks) == expected
    assert len(checks) == len(expected) == 8 * (1 + 3)  # hedged: every signature differs
    assert verifier.cache.misses == 0


def test_bad_signatures_in_a_batch_keep_their_reasons() -> None:
    messages = [
        message(ROUND1[0]),
        with_bad_author_signature(3),
        with_bad_vote(message(ROUND1[3])),
        message(ROUND1[1]),
    ]
    got, verifier, _ = batched(None, messages)
    rejected = list(got.output.notices)
    assert [(e.reason, e.kind) for e in rejected] == [
        (Reason.BAD_SIGNATURE, "certified"),
        (Reason.BAD_CERTIFICATE, "certified"),
    ]
    assert len(verifier.calls) == 1
    check = C.genesis.signature_check(
        ROUND1[0].author, Purpose.VERTEX, ROUND1[0].id, ROUND1[0].signature
    )
    assert check is not None
    assert verifier.cache.get(check_digest(check))


def test_engines_share_results_only_through_a_verifier_they_were_both_given() -> None:
    vertices = ROUND1 + ROUND2
    messages = [message(v) for v in vertices]
    first = RecordingVerifier()
    fresh(None, first).receive_messages([(PEER, data) for data in messages], moment(NOW))
    assert first.cache.misses == 0  # the batch was verified at once
    assert first.computed == len(signature_checks(vertices))
    alone = RecordingVerifier()
    sharing = fresh(None, first), fresh(None, alone)
    for engine in sharing:
        for data in messages:
            engine.receive_message(PEER, data, moment(NOW))
    # the second engine found every result there
    assert first.computed == len(signature_checks(vertices))
    assert alone.computed == len(signature_checks(vertices))  # none found elsewhere


def test_an_empty_batch_changes_nothing() -> None:
    engine = fresh(0)
    before = outcome(engine)
    engine.receive_messages([], moment(NOW + 100))
    assert outcome(engine) == Outcome(StepOutput(), before.statistics, before.timer)


# ------------------------------------------------------------------ the cache

SIGNER = C.signers[0]
CHECKS = [
    SignatureCheck(
        Scheme.ED25519,
        Purpose.VERTEX,
        SIGNER.public_key,
        bytes([i]) * 32,
        SIGNER.sign(Purpose.VERTEX, bytes([i]) * 32),
    )
    for i in range(6)
]
DIGESTS = [check_digest(c) for c in CHECKS]


def test_the_cache_forgets_the_least_recently_used_first() -> None:
    cache = VerifiedCache(3)
    cache.remember(DIGESTS[:3], [True, True, False])
    assert cache.get(DIGESTS[0]) is True  # now the most recent
    cache.remember(DIGESTS[3:4], [True])
    assert cache.get(DIGESTS[1]) is None
    assert cache.get(DIGESTS[2]) is False
    computed: list[list[SignatureCheck]] = []

    def compute(checks: Sequence[SignatureCheck]) -> list[bool]:
        computed.append(list(checks))
        return [True] * len(checks)

    answers = cache.verify_many([CHECKS[4], CHECKS[0], CHECKS[4], CHECKS[5]], compute)
    assert answers == [True, True, True, True]
    assert computed == [[CHECKS[4], CHECKS[5]]]  # only the unknown, each once
    # 0 was just used: 3 and 2 go
    assert [cache.get(d) for d in DIGESTS] == [True, None, None, None, True, True]


def test_plain_verification_refuses_malformed_keys_and_signatures() -> None:
    _, _, key, msg, signature = CHECKS[0]
    assert verify_ed25519(key, msg, signature)
    assert not verify_ed25519(key, msg + b"x", signature)
    assert not verify_ed25519(PublicKey(key[:31]), msg, signature)
    assert not verify_ed25519(key, msg, signature[:63])
    assert not verify_ed25519(key, msg, signature + b"\x00")


class CountingCache(VerifiedCache):
    """A cache counting its lookups."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.lookups = 0

    def get(self, digest: bytes) -> bool | None:
        """The remembered result, counted."""
        self.lookups += 1
        return super().get(digest)


def counting_verifier() -> RecordingVerifier:
    """A recording verifier whose cache counts its lookups."""
    verifier = RecordingVerifier()
    verifier.cache = CountingCache(verifier.cache_size)
    return verifier


def lookups(verifier: RecordingVerifier) -> int:
    """The lookups of a verifier made by :func:`counting_verifier`."""
    assert isinstance(verifier.cache, CountingCache)
    return verifier.cache.lookups


@pytest.mark.parametrize("committee", [C, CC], ids=lambda c: c.scheme.label)
def test_a_certificate_met_again_costs_one_group_lookup(committee: Committee) -> None:
    vertex = committee.vertex(1, 1)
    certificate = committee.certificate(vertex)
    verifier = counting_verifier()
    check_certificate(certificate, vertex.id, committee.genesis, verifier)
    assert verifier.computed == 3  # the quorum's votes, in one batch
    assert [len(call) for call in verifier.calls] == [3]
    before = lookups(verifier)
    for _ in range(2):  # the same certificate by other paths
        check_certificate(certificate, vertex.id, committee.genesis, verifier)
    assert verifier.computed == 3
    assert lookups(verifier) == before + 2


def test_a_bad_certificate_is_remembered_as_bad_and_names_its_bad_vote() -> None:
    vertex = CC.vertex(1, 1)
    good = CC.certificate(vertex)
    forged = make_certificate(
        CC.scheme, {0: good.signatures[0], 1: good.signatures[2], 2: good.signatures[2]}
    )
    verifier = counting_verifier()
    for _ in range(2):
        with pytest.raises(InputRejected, match="vote of validator 1 is invalid") as info:
            check_certificate(forged, vertex.id, CC.genesis, verifier)
        assert info.value.reason is Reason.BAD_CERTIFICATE
    assert verifier.computed == 3  # each vote once, the second time from the cache
    assert verifier.verify_all(vote_checks(good, vertex.id, CC.genesis))
    assert verifier.computed == 4  # only validator 1's true vote was new


def test_an_engine_checks_a_certificate_that_reaches_it_twice_once() -> None:
    verifier = counting_verifier()
    engine = fresh(None, verifier)
    waiting = ROUND2[0]  # its parents are missing: it waits for them, certified
    engine.receive_message(PEER, message(waiting), moment(NOW))
    assert engine.statistics().buffered == 1
    computed, before = verifier.computed, lookups(verifier)
    # the author's signature and three votes, the author's own being the same check on
    # Ed25519 (the same bytes, and Ed25519 signs no purpose)
    assert computed == 3
    # the same certificate again, announced by another peer: one lookup, no check
    announce = encode_message(CertificateMessage(waiting.id, C.certificate(waiting)))
    engine.receive_message(PeerId("peer-2"), announce, moment(NOW))
    assert not engine.take_output().notices
    assert verifier.computed == computed
    assert lookups(verifier) == before + 1


#: :data:`CHECKS` [1] with one field changed, by the field's name.
CHANGED = {
    "scheme": CHECKS[1]._replace(scheme=Scheme.MLDSA65_ED25519),
    "public_key": CHECKS[1]._replace(public_key=C.signers[1].public_key),
    "message": CHECKS[1]._replace(message=b"\x00" * 32),
    "signature": CHECKS[1]._replace(signature=b"\x00" * 64),
}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_a_change_to_any_field_changes_the_digest(field: str) -> None:
    check, changed = CHECKS[1], CHANGED[field]
    assert [name for name in check._fields if getattr(check, name) != getattr(changed, name)] == [
        field
    ]
    assert check_digest(changed) != check_digest(check)
    assert len(check_digest(check)) == 32


def test_the_purpose_changes_a_composite_digest_and_not_an_ed25519_one() -> None:
    ed25519 = CHECKS[1]
    assert check_digest(ed25519._replace(purpose=Purpose.VOTE)) == check_digest(ed25519)
    composite = ed25519._replace(scheme=Scheme.MLDSA65_ED25519)
    assert check_digest(composite._replace(purpose=Purpose.VOTE)) != check_digest(composite)


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40))
def test_bytes_moved_between_fields_change_the_digest(
    key: bytes, message: bytes, signature: bytes
) -> None:
    check = SignatureCheck(Scheme.ED25519, Purpose.VERTEX, PublicKey(key), message, signature)
    joined = key + message + signature
    for a in range(len(joined) + 1):
        for b in range(a, len(joined) + 1, 7):
            parts = (PublicKey(joined[:a]), joined[a:b], joined[b:])
            other = SignatureCheck(Scheme.ED25519, Purpose.VERTEX, *parts)
            if other != check:
                assert check_digest(other) != check_digest(check)

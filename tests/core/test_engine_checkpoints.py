"""The engine makes, signs and certifies checkpoints.

Four validator engines and an observer of the network :data:`C` receive the same
hand-made certified DAG (all four vertices of each round, every one naming the whole
round before as parents); they are kept from proposing (catching up) so that only
that DAG exists. Checkpoints come every four rounds: leader rounds 4 and 8 make
numbers 1 and 2. Signatures travel between engines only when a test delivers them.
"""

from __future__ import annotations

import dataclasses

import pytest

from qudag_node.core.checkpoint import CertifiedCheckpoint, Checkpoint, check_certified
from qudag_node.core.checkpoints import HOLD_AHEAD, KEEP, RestoredCheckpoint
from qudag_node.core.crypto import Purpose, SequentialVerifier
from qudag_node.core.engine import Engine, Snapshot
from qudag_node.core.errors import Reason
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    LeaderCommitted,
    MessageRejected,
)
from qudag_node.core.messages import (
    CheckpointSignatureMessage,
    decode_message,
    encode_message,
)
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex
from tests.core.support import (
    NOW,
    TIMESTAMP_MS,
    C,
    SoloNode,
    drain,
    facts,
    message,
    messages,
    moment,
)

PARAMS = Params(checkpoint_interval=4, gc_depth=4)
PEERS = [PeerId(f"p{i}") for i in range(4)]
OBSERVER = PeerId("obs")


def rounds(last: int) -> list[Vertex]:
    """Every vertex of rounds 1..``last``: one per validator, all parents named."""
    out: list[Vertex] = []
    parents: list[VertexId] = []
    for r in range(1, last + 1):
        layer = [
            C.vertex(i, r, parents, [f"r{r}-v{i}".encode()], TIMESTAMP_MS - 1000 + 10 * r + i)
            for i in range(4)
        ]
        out += layer
        parents = [v.id for v in layer]
    return out


DAG = rounds(9)


def node(index: int | None, params: Params = PARAMS, snapshot: Snapshot | None = None) -> Engine:
    """Validator ``index`` (None: the observer), linked to every other node and kept
    from proposing."""
    if index is None:
        e = C.observer(params, snapshot)
    else:
        e = Engine(C.genesis, params, C.signers[index], snapshot)
    for i in range(4):
        if i != index:
            e.peer_connected(PEERS[i], C.signers[i].node_id)
    if index is not None:
        e.peer_connected(OBSERVER, C.outsider.node_id)
    e.set_catching_up(True, moment(NOW))
    return e


def deliver(e: Engine, vertices: list[Vertex]) -> None:
    for v in vertices:
        e.receive_message(PEERS[0], message(v), moment(NOW))


def made(e: Engine) -> list[Checkpoint]:
    return [f.checkpoint for f in facts(e) if isinstance(f, CheckpointMade)]


def signature_of(e: Engine, number: int) -> bytes:
    """The bytes of ``e``'s own signature of checkpoint ``number``, as it broadcast them."""
    for _, data in messages(e):
        m = decode_message(data, PARAMS)
        if isinstance(m, CheckpointSignatureMessage) and m.number == number:
            return data
    raise AssertionError(f"no signature of checkpoint {number} sent")


def signature(voter: int, checkpoint: Checkpoint) -> bytes:
    """Validator ``voter``'s signature message of ``checkpoint``."""
    sig = C.signers[voter].sign(Purpose.CHECKPOINT, checkpoint.digest)
    return encode_message(
        CheckpointSignatureMessage(checkpoint.number, checkpoint.digest, voter, sig)
    )


def certified(e: Engine) -> list[CheckpointCertified]:
    return [f for f in facts(e) if isinstance(f, CheckpointCertified)]


def test_made_after_the_commits_that_enter_a_new_interval_with_the_log_and_the_window() -> None:
    e = node(0)
    deliver(e, DAG)
    out = facts(e)
    commits = [f for f in out if isinstance(f, LeaderCommitted)]
    assert [c.round for c in commits] == [2, 4, 6, 8]
    checkpoints = [f for f in out if isinstance(f, CheckpointMade)]
    assert [f.checkpoint.number for f in checkpoints] == [1, 2]
    for fact, leader_round in zip(checkpoints, (4, 8), strict=True):
        cp = fact.checkpoint
        commit = next(c for c in commits if c.round == leader_round)
        through = [c for c in commits if c.round <= leader_round]
        entries = [entry for c in through for entry in c.entries]
        leader = next(v for v in DAG if v.id == commit.leader)
        assert (cp.round, cp.leader, cp.timestamp_ms) == (
            leader_round,
            leader.id,
            leader.header.timestamp_ms,
        )
        assert (cp.log_length, cp.log_hash) == (entries[-1].seq, entries[-1].hash)
        ordered = {vid for c in through for vid in c.ordered}
        window = {v.id for v in DAG if v.id in ordered and v.round >= leader_round - 4}
        assert set(fact.window) == window
        assert cp.holds_window(window)
        assert cp.genesis == C.genesis.hash


def test_every_node_computes_the_same_checkpoints_and_only_validators_sign() -> None:
    engines = [node(i) for i in range(4)] + [node(None)]
    for e in engines:
        deliver(e, DAG)
    seen = [made(e) for e in engines]
    assert all(s == seen[0] for s in seen)
    assert len(seen[0]) == 2
    for e in engines[:4]:
        assert signature_of(e, 1)
    observed = [decode_message(d, PARAMS) for _, d in messages(engines[4])]
    assert not any(isinstance(m, CheckpointSignatureMessage) for m in observed)


def test_a_quorum_of_signatures_certifies_and_the_certificate_verifies() -> None:
    engines = [node(i) for i in range(3)] + [node(None)]
    for e in engines:
        deliver(e, DAG[:20])  # rounds 1 to 5: checkpoint 1 only
    (cp,) = made(engines[0])
    sigs = [signature_of(e, 1) for e in engines[:3]]
    first, observer = engines[0], engines[3]
    first.receive_message(PEERS[1], sigs[1], moment(NOW))
    assert certified(first) == []  # its own and one more: 2 of 3
    first.receive_message(PEERS[2], sigs[2], moment(NOW))
    (fact,) = certified(first)
    assert fact.number == 1
    assert fact.certificate.voters == (0, 1, 2)
    check_certified(CertifiedCheckpoint(cp, fact.certificate), C.genesis, SequentialVerifier())
    assert (stats := first.statistics()).checkpoint == cp
    assert stats.committed_round == 4
    for k in range(3):  # an observer counts validators' signatures only
        observer.receive_message(PEERS[k], sigs[k], moment(NOW))
    assert [f.number for f in certified(observer)] == [1]


def test_a_signature_over_another_digest_is_refused_as_bad_checkpoint() -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    wrong = dataclasses.replace(cp, log_hash=b"\x00" * 32)
    e.receive_message(PEERS[3], signature(3, wrong), moment(NOW))
    e.receive_message(PEERS[1], signature(1, cp), moment(NOW))
    out = drain(e)
    refused = [n for n in out if isinstance(n, MessageRejected)]
    assert [(n.peer, n.reason, n.kind) for n in refused] == [
        (PEERS[3], Reason.BAD_CHECKPOINT, "checkpoint_signature")
    ]
    assert not any(isinstance(f, CheckpointCertified) for f in out)  # 2 of 3 counted


def test_a_forged_or_foreign_signature_is_refused() -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    forged = CheckpointSignatureMessage(1, cp.digest, 2, b"\x01" * 64)
    nobody = CheckpointSignatureMessage(1, cp.digest, 9, b"\x01" * 64)
    for m in (forged, nobody):
        e.receive_message(PEERS[2], encode_message(m), moment(NOW))
    reasons = [n.reason for n in drain(e) if isinstance(n, MessageRejected)]
    assert reasons == [Reason.BAD_SIGNATURE, Reason.UNKNOWN_AUTHOR]


def test_signatures_that_arrive_before_the_checkpoint_is_made_are_held_and_counted() -> None:
    ahead = node(3)
    deliver(ahead, DAG[:20])
    (cp,) = made(ahead)
    late = node(0)
    late.receive_message(PEERS[1], signature(1, cp), moment(NOW))
    late.receive_message(PEERS[2], signature(2, cp), moment(NOW))
    wrong = dataclasses.replace(cp, log_length=1)
    late.receive_message(PEERS[3], signature(3, wrong), moment(NOW))
    far = dataclasses.replace(cp, number=1 + HOLD_AHEAD + 1)
    late.receive_message(PEERS[3], signature(3, far), moment(NOW))
    assert certified(late) == []
    assert drain(late) == []
    deliver(late, DAG[:20])
    out = drain(late)
    (fact,) = [f for f in out if isinstance(f, CheckpointCertified)]
    assert fact.certificate.voters == (0, 1, 2)
    refused = [n for n in out if isinstance(n, MessageRejected)]
    assert [(n.peer, n.reason) for n in refused] == [(PEERS[3], Reason.BAD_CHECKPOINT)]


def test_a_signature_for_a_certified_number_is_answered_once_per_peer() -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    messages(e)
    e.receive_message(PEERS[1], signature(1, cp), moment(NOW))
    assert messages(e) == []  # not certified yet: nothing to answer
    e.receive_message(PEERS[2], signature(2, cp), moment(NOW))
    assert messages(e) == []  # the signature that certifies is not answered either
    for _ in range(2):
        e.receive_message(PEERS[3], signature(3, cp), moment(NOW))
    answers = [(p, decode_message(d, PARAMS)) for p, d in messages(e)]
    assert len(answers) == 1
    peer, answer = answers[0]
    assert peer == PEERS[3]
    assert isinstance(answer, CheckpointSignatureMessage)
    assert (answer.number, answer.digest, answer.voter) == (1, cp.digest, 0)


def test_an_uncertified_checkpoint_is_signed_again_for_the_validators_that_lack_it() -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    messages(e)
    e.receive_message(PEERS[1], signature(1, cp), moment(NOW))
    due = e.get_timer()
    assert due is not None
    assert due <= NOW + PARAMS.retry_interval
    e.handle_timer(moment(NOW + PARAMS.retry_interval))
    again = [(p, decode_message(d, PARAMS)) for p, d in messages(e)]
    resent = sorted(p for p, m in again if isinstance(m, CheckpointSignatureMessage))
    assert resent == [PEERS[2], PEERS[3]]
    e.receive_message(PEERS[2], signature(2, cp), moment(NOW + 1))
    assert certified(e)
    assert e.get_timer() is None


@pytest.mark.parametrize("was_certified", [False, True])
def test_a_restarted_node_resumes_its_checkpoints(was_certified: bool) -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    snapshot = Snapshot(
        cp.log_length,
        cp.log_hash,
        cp.round,
        (),
        (),
        checkpoints=(RestoredCheckpoint(cp, was_certified),),
    )
    again = node(0, snapshot=snapshot)
    assert (again.statistics().checkpoint == cp) is was_certified
    again.receive_message(PEERS[1], signature(1, cp), moment(NOW))
    again.receive_message(PEERS[2], signature(2, cp), moment(NOW))
    out = drain(again)
    # not certified: signed again, so two more make a quorum; certified: nothing new,
    # and it has no signature of its own to answer with
    assert [f.number for f in out if isinstance(f, CheckpointCertified)] == (
        [] if was_certified else [1]
    )
    assert not any(isinstance(n, MessageRejected) for n in out)
    if was_certified:
        assert messages(again) == []


def test_a_solo_validator_certifies_its_own_checkpoints() -> None:
    solo = SoloNode(Params(checkpoint_interval=2))
    for k in range(6):
        solo.submit([f"tx{k}".encode()])
        solo.settle()
    numbers = [t.event.number for t in solo.events if isinstance(t.event, CheckpointCertified)]
    assert numbers
    assert numbers == sorted(set(numbers))
    assert solo.engine.statistics().checkpoint is not None


@pytest.mark.parametrize("size", [0, 63, 65, 3372])
def test_a_signature_of_no_schemes_size_is_refused_when_decoded(size: int) -> None:
    e = node(0)
    data = encode_message(CheckpointSignatureMessage(1, b"\x01" * 32, 1, b"\x02" * size))
    e.receive_message(PEERS[1], data, moment(NOW))
    (refused,) = [n for n in drain(e) if isinstance(n, MessageRejected)]
    assert (refused.reason, refused.kind) == (Reason.TRUNCATED, "checkpoint_signature")


def test_a_signature_of_the_other_schemes_size_is_refused_as_wrong_scheme() -> None:
    e = node(0)
    deliver(e, DAG[:20])
    (cp,) = made(e)
    other = CheckpointSignatureMessage(1, cp.digest, 1, b"\x02" * 3373)
    e.receive_message(PEERS[1], encode_message(other), moment(NOW))
    reasons = [n.reason for n in drain(e) if isinstance(n, MessageRejected)]
    assert reasons == [Reason.WRONG_SCHEME]


def test_the_latest_certified_checkpoint_stays_while_later_ones_wait_for_signatures() -> None:
    long_dag = rounds(4 * (KEEP + 2) + 1)
    e = node(0)
    deliver(e, long_dag[:20])
    (first,) = made(e)
    for voter in (1, 2):
        e.receive_message(PEERS[voter], signature(voter, first), moment(NOW))
    deliver(e, long_dag[20:])
    later = made(e)
    assert [cp.number for cp in later] == list(range(2, KEEP + 3))
    assert e.statistics().checkpoint == first
    messages(e)
    # checkpoint 1 is no longer among the last KEEP computed: its signatures are dropped
    e.receive_message(PEERS[3], signature(3, first), moment(NOW))
    assert drain(e) == []
    assert messages(e) == []

"""Vertex admission rules and the commit rule, with four validators (n = 4, f = 1).

The engine under test is fed hand-made vertices of the network
:data:`tests.core.support.C`, certified by validators 0, 1 and 2, through
``encode_message`` and ``receive_message``. It is mostly an observer (its key is not in
the genesis), so it never proposes and every vertex of the DAG is chosen by the test;
where its own proposals are the subject, it is validator 0, and the test sends it the
votes the other validators would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from qudag_node.core.certificate import make_certificate
from qudag_node.core.crypto import Purpose, extend_log_hash, log_hash_start, tx_id
from qudag_node.core.engine import Engine, Role, Snapshot, StoredVertex
from qudag_node.core.errors import Reason
from qudag_node.core.events import (
    LeaderCommitted,
    MessageRejected,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.params import Params
from qudag_node.core.types import Instant, VertexId
from qudag_node.core.vertex import Vertex
from tests.core.support import (
    NOW,
    PARAMS,
    PEER,
    R1,
    ROUND1,
    C,
    Output,
    added,
    drain,
    feed,
    message,
    moment,
    vote,
)


def rejection(events: list[Output]) -> MessageRejected:
    """The single rejection among ``events``."""
    assert len(events) == 1, events
    [event] = events
    assert isinstance(event, MessageRejected), event
    assert event.peer == PEER
    return event


def commits(events: list[Output]) -> list[LeaderCommitted]:
    """The LeaderCommitted events among ``events``."""
    return [e for e in events if isinstance(e, LeaderCommitted)]


def flip_signature(vertex: Vertex) -> bytes:
    """A certified vertex message with one bit of the author's signature flipped."""
    data = bytearray(message(vertex))
    data[1 + 4 + len(vertex.header_bytes)] ^= 0x01  # type, vertex length, header
    return bytes(data)


def own_proposals(events: list[Output]) -> list[Vertex]:
    """The vertices the engine proposed among ``events``."""
    return [e.vertex for e in events if isinstance(e, VertexStored) and e.own]


def certify_own(e: Engine, vertex: Vertex, now: float = NOW) -> list[Output]:
    """Deliver validators 1 and 2's votes for ``vertex``; returns the drained events."""
    for voter in (1, 2):
        e.receive_message(PEER, vote(vertex, voter), moment(now))
    return drain(e)


# ------------------------------------------------------------ admission rules


@pytest.fixture
def engine() -> Engine:
    """An observer holding the round-1 vertices of validators 0, 1 and 2 (a quorum)."""
    e = C.observer()
    events = feed(e, *ROUND1[:3])
    assert events == added(*ROUND1[:3])
    return e


OTHER_NETWORK = Genesis("qudag-other", C.genesis.validators).hash
SKEW_MS = int((NOW + PARAMS.max_clock_skew) * 1000)

RULE_CASES: list[tuple[str, Callable[[], bytes], Reason, str]] = [
    ("unknown author", lambda: message(C.vertex(C.outsider, 1)), Reason.UNKNOWN_AUTHOR, ""),
    ("bad signature", lambda: flip_signature(ROUND1[3]), Reason.BAD_SIGNATURE, ""),
    (
        "wrong network",
        lambda: message(C.vertex(3, 1, network=OTHER_NETWORK)),
        Reason.WRONG_NETWORK,
        "",
    ),
    (
        "future timestamp",
        lambda: message(C.vertex(3, 1, timestamp_ms=SKEW_MS + 1)),
        Reason.FUTURE_TIMESTAMP,
        "",
    ),
    ("round 0", lambda: message(C.vertex(3, 0)), Reason.BAD_ROUND, ""),
    (
        "round 1 with parents",
        lambda: message(C.vertex(3, 1, parents=R1[:1])),
        Reason.BAD_PARENT,
        "no parents",
    ),
    (
        "too few parents",
        lambda: message(C.vertex(0, 2, parents=R1[:2])),
        Reason.TOO_FEW_PARENTS,
        "",
    ),
    (
        "parent from the wrong round",
        lambda: message(C.vertex(0, 3, parents=R1[:3])),
        Reason.BAD_PARENT,
        "wrong round",
    ),
    (
        "certificate short of a quorum",
        lambda: certified_by(ROUND1[3], (0, 1)),
        Reason.BAD_CERTIFICATE,
        "quorum is 3",
    ),
    (
        "certificate with a bad vote",
        lambda: certified_by(ROUND1[3], (0, 1, 2), forge=2),
        Reason.BAD_CERTIFICATE,
        "validator 2",
    ),
    (
        "certificate with a voter outside the set",
        lambda: certified_by(ROUND1[3], (0, 1, 2), outsider=True),
        Reason.BAD_CERTIFICATE,
        "no validator",
    ),
]


def certified_by(
    vertex: Vertex, voters: Sequence[int], forge: int | None = None, outsider: bool = False
) -> bytes:
    """A CERTIFIED message whose certificate has ``voters`` (one forged, or one index 9)."""
    votes = {i: C.signers[i].sign(Purpose.VOTE, vertex.id) for i in voters}
    if forge is not None:
        votes[forge] = C.signers[0].sign(Purpose.VOTE, vertex.id)
    if outsider:
        votes[9] = C.outsider.sign(Purpose.VOTE, vertex.id)
    return encode_message(CertifiedMessage(vertex, make_certificate(C.signers[0].scheme, votes)))


@pytest.mark.parametrize(
    ("build", "reason", "detail"),
    [pytest.param(build, reason, detail, id=name) for name, build, reason, detail in RULE_CASES],
)
def test_a_vertex_breaking_a_rule_is_rejected_with_its_reason(
    engine: Engine, build: Callable[[], bytes], reason: Reason, detail: str
) -> None:
    before = engine.statistics()
    engine.receive_message(PEER, build(), moment(NOW))
    event = rejection(drain(engine))
    assert event.reason is reason
    assert detail in event.detail
    assert engine.statistics() == before


def test_vertices_just_inside_the_limits_are_added(engine: Engine) -> None:
    at_skew = C.vertex(3, 1, timestamp_ms=SKEW_MS)
    assert feed(engine, at_skew) == added(at_skew)
    quorum = C.vertex(0, 2, parents=R1[:3])
    assert feed(engine, quorum) == added(quorum)
    assert engine.statistics().highest_round == 2


def test_a_timestamp_is_held_to_the_wall_clock_not_the_monotonic_one(engine: Engine) -> None:
    ahead = C.vertex(3, 1, timestamp_ms=SKEW_MS + 1)
    engine.receive_message(PEER, message(ahead), Instant(monotonic=NOW + 3600.0, wall=NOW))
    assert rejection(drain(engine)).reason is Reason.FUTURE_TIMESTAMP
    engine.receive_message(PEER, message(ahead), Instant(monotonic=1.0, wall=NOW + 1.0))
    assert drain(engine) == added(ahead)


def test_a_copy_of_a_held_vertex_is_ignored(engine: Engine) -> None:
    before = engine.statistics()
    assert feed(engine, ROUND1[0]) == []
    assert engine.statistics() == before


def test_a_validator_adds_another_validators_round_1_vertex() -> None:
    validator = Engine(C.genesis, PARAMS, C.signers[0])
    assert validator.role is Role.VALIDATOR
    *received, proposed = feed(validator, ROUND1[1])
    assert received == added(ROUND1[1])
    # the received transaction is work to finalize: the validator joins round 1 at once
    assert isinstance(proposed, VertexStored)
    assert proposed.own
    assert (proposed.vertex.round, proposed.vertex.author) == (1, C.signers[0].node_id)
    stats = validator.statistics()
    # its own vertex waits for votes: it is not in the DAG yet
    assert (stats.round, stats.highest_round, stats.dag_window, stats.in_flight) == (1, 1, 1, 1)


def test_two_parents_from_one_validator_are_rejected() -> None:
    # Only a restored window can hold two vertices of one author and round (the
    # store may keep an equivocation as evidence); the rule must still hold.
    twin = C.vertex(0, 1, txs=[b"twin"])
    held = [*ROUND1[:3], twin]
    snapshot = Snapshot(
        log_length=0,
        log_hash=log_hash_start(C.genesis.hash),
        committed_round=0,
        vertices=tuple(
            StoredVertex(
                v.id, v.header, v.header_bytes, v.signature, v.tx_ids, False, C.certificate(v)
            )
            for v in held
        ),
        pending=(),
    )
    e = C.observer(snapshot=snapshot)
    event = rejection(feed(e, C.vertex(1, 2, parents=[R1[0], twin.id, R1[1]])))
    assert event.reason is Reason.BAD_PARENT
    assert "one validator" in event.detail


# ----------------------------------------------------------------- commit rule


def full_round(round_: int, parents: Sequence[VertexId]) -> list[Vertex]:
    """One vertex per validator for ``round_``, all with the same parents."""
    return [C.vertex(i, round_, parents, txs=[f"r{round_}-v{i}".encode()]) for i in range(4)]


def test_a_leader_commits_once_f_plus_1_vertices_of_the_next_round_reference_it() -> None:
    e = C.observer()
    feed(e, *ROUND1)
    round2 = full_round(2, R1[:3])  # validator 3's round-1 vertex is left out
    feed(e, *round2)
    leader = round2[C.index(2)]
    assert leader.author == C.genesis.leader(2)
    others = [v.id for v in round2 if v is not leader]
    vote = [leader.id, *others[:2]]

    events = feed(e, C.vertex(0, 3, parents=vote))
    assert commits(events) == []  # one vote: f + 1 = 2 are needed
    events = feed(e, C.vertex(1, 3, parents=others))
    assert commits(events) == []  # not a vote
    assert e.statistics().committed_round == 0

    events = feed(e, C.vertex(2, 3, parents=vote))
    [commit] = commits(events)
    assert isinstance(events[0], VertexStored)
    history = [*sorted(ROUND1[:3], key=lambda v: v.author), leader]
    assert commit.round == 2
    assert commit.leader == leader.id
    assert commit.ordered == tuple(v.id for v in history)
    ids = [i for v in history for i in v.tx_ids]
    assert [entry.tx_id for entry in commit.entries] == ids
    assert [entry.vertex for entry in commit.entries] == [v.id for v in history]
    assert [entry.seq for entry in commit.entries] == [1, 2, 3, 4]
    assert [entry.hash for entry in commit.entries] == extend_log_hash(
        log_hash_start(C.genesis.hash), ids
    )
    stats = e.statistics()
    assert (stats.committed_round, stats.log_length) == (2, 4)
    assert stats.in_flight == 1 + 3  # validator 3's round 1, three round-2 vertices

    assert commits(feed(e, C.vertex(3, 3, parents=vote))) == []  # already committed


def build_rounds_1_to_3_with_one_vote_for_leader_2(
    e: Engine,
) -> tuple[Vertex, Vertex, list[Vertex]]:
    """Rounds 1-3 where only validator 0's round-3 vertex references leader 2.

    Returns leader 2, that voting vertex, and round 3.
    """
    feed(e, *ROUND1)
    round2 = full_round(2, R1[:3])
    feed(e, *round2)
    leader2 = round2[C.index(2)]
    others = [v.id for v in round2 if v is not leader2]
    voter = C.vertex(0, 3, parents=[leader2.id, *others[:2]], txs=[b"voter"])
    round3 = [voter, *(C.vertex(i, 3, others) for i in range(1, 4))]
    assert commits(feed(e, *round3)) == []
    return leader2, voter, round3


def test_committing_a_leader_first_commits_an_earlier_leader_it_reaches() -> None:
    e = C.observer()
    leader2, voter, round3 = build_rounds_1_to_3_with_one_vote_for_leader_2(e)
    round4 = full_round(4, [v.id for v in round3[:3]])  # all reference the voter
    assert commits(feed(e, *round4)) == []
    leader4 = round4[C.index(4)]
    others = [v.id for v in round4 if v is not leader4]

    assert commits(feed(e, C.vertex(0, 5, [leader4.id, *others[:2]]))) == []
    first, second = commits(feed(e, C.vertex(1, 5, [leader4.id, *others[:2]])))
    assert (first.round, first.leader) == (2, leader2.id)
    assert (second.round, second.leader) == (4, leader4.id)
    assert leader2.id in first.ordered
    assert voter.id in second.ordered
    assert leader4.id == second.ordered[-1]
    assert not set(first.ordered) & set(second.ordered)
    seqs = [entry.seq for c in (first, second) for entry in c.entries]
    assert seqs == list(range(1, len(seqs) + 1))
    assert e.statistics().committed_round == 4


def test_an_earlier_leader_the_new_leader_does_not_reach_is_skipped() -> None:
    e = C.observer()
    leader2, voter, round3 = build_rounds_1_to_3_with_one_vote_for_leader_2(e)
    round4 = full_round(4, [v.id for v in round3[1:]])  # none references the voter
    feed(e, *round4)
    leader4 = round4[C.index(4)]
    others = [v.id for v in round4 if v is not leader4]
    feed(e, C.vertex(0, 5, [leader4.id, *others[:2]]))
    [only] = commits(feed(e, C.vertex(1, 5, [leader4.id, *others[:2]])))
    assert (only.round, only.leader) == (4, leader4.id)
    assert leader2.id not in only.ordered
    assert voter.id not in only.ordered
    assert e.statistics().committed_round == 4


def chained(rounds: list[list[Vertex]], last: int) -> list[Vertex]:
    """Every vertex of ``rounds`` extended up to round ``last``, round by round.

    Each added round has one vertex per validator, referencing the whole previous round.
    """
    out = list(rounds)
    while len(out) < last:
        out.append(full_round(len(out) + 1, [v.id for v in out[-1]]))
    return [v for round_ in out for v in round_]


def test_a_vertex_below_the_window_is_stale() -> None:
    e = C.observer(Params(gc_depth=2))
    feed(e, *chained([ROUND1], 5))
    stats = e.statistics()
    assert stats.committed_round == 4
    assert stats.dag_window == 4 * 4  # rounds 2 to 5
    event = rejection(feed(e, C.vertex(0, 1, txs=[b"late"])))
    assert event.reason is Reason.STALE_ROUND
    assert e.statistics() == stats


# ------------------------------------------------------------ own proposals


def test_a_validator_waits_for_a_quorum_before_its_next_round() -> None:
    e = Engine(C.genesis, PARAMS, C.signers[0])
    e.submit_transactions([tx_id(b"first")], [b"first"], moment(NOW))
    [own1] = own_proposals(drain(e))
    assert own1.round == 1
    assert e.get_timer() is None  # nothing to do until round 1 has a quorum
    e.handle_timer(moment(NOW + 60.0))
    assert drain(e) == []

    later = NOW + 1.0
    assert feed(e, ROUND1[1], now=later) == added(ROUND1[1])
    assert feed(e, ROUND1[2], now=later) == added(ROUND1[2])
    assert e.get_timer() is None  # its own vertex is not certified: two of three
    events = certify_own(e, own1, now=later)
    certified = [ev for ev in events if isinstance(ev, VertexCertified)]
    assert [c.vertex for c in certified] == [own1.id]
    assert certified[0].certificate.voters == (0, 1, 2)
    [own2] = own_proposals(events)
    assert own2.round == 2
    assert set(own2.parents) == {own1.id, R1[1], R1[2]}
    assert e.statistics().round == 2


def round_2_without_its_leader(at: float) -> tuple[Engine, Vertex]:
    """Validator 0 holding a round-2 quorum (its own, 2 and 3) but not leader 2's vertex.

    Returns the engine and the missing leader vertex, which validator 1 authored.
    """
    assert C.index(2) == 1
    e = Engine(C.genesis, PARAMS, C.signers[0])
    e.submit_transactions([tx_id(b"work")], [b"work"], moment(NOW))
    [own1] = own_proposals(drain(e))
    feed(e, ROUND1[2], ROUND1[3], now=NOW + 1.0)
    [own2] = own_proposals(certify_own(e, own1, now=NOW + 1.0))  # quorum: round 2
    assert own2.round == 2
    parents = [own1.id, R1[2], R1[3]]
    feed(e, C.vertex(2, 2, parents), C.vertex(3, 2, parents), now=at)
    certify_own(e, own2, now=at)
    assert e.statistics().round == 2
    return e, C.vertex(1, 2, parents)


def test_a_validator_waits_up_to_the_leader_timeout_for_the_leader() -> None:
    at = NOW + 2.0
    e, _ = round_2_without_its_leader(at)
    assert e.get_timer() == at + PARAMS.leader_timeout
    e.handle_timer(moment(at + PARAMS.leader_timeout - 0.01))
    assert drain(e) == []
    e.handle_timer(moment(at + PARAMS.leader_timeout))
    [own3] = own_proposals(drain(e))
    assert own3.round == 3
    assert len(own3.parents) == 3  # every round-2 vertex it holds, no leader


def test_the_leaders_vertex_ends_the_wait_and_gets_a_vote() -> None:
    at = NOW + 2.0
    e, leader = round_2_without_its_leader(at)
    events = feed(e, leader, now=at + 0.5)
    assert events[:2] == added(leader)
    [own3] = own_proposals(events)
    assert own3.round == 3
    assert leader.id in own3.parents
    assert len(own3.parents) == 4


def test_transactions_of_a_vertex_pruned_unordered_are_released() -> None:
    params = Params(gc_depth=2)
    e = C.observer(params)
    dag = chained([ROUND1, full_round(2, R1[:3])], 7)  # nobody references ROUND1[3]
    events = feed(e, *dag)
    stats = e.statistics()
    assert stats.committed_round == 6
    floor = stats.committed_round - params.gc_depth  # round 1 is below the window
    orphan = ROUND1[3].transactions[0]
    ordered = {vid for c in commits(events) for vid in c.ordered}
    assert tx_id(orphan) not in {entry.tx_id for c in commits(events) for entry in c.entries}
    held_unordered = [v for v in dag if v.round >= floor and v.id not in ordered]
    assert stats.in_flight == sum(len(v.tx_ids) for v in held_unordered)
    # the transaction can be submitted again instead of being refused as a duplicate
    result = e.submit_transactions([tx_id(orphan)], [orphan], moment(NOW))
    assert result.admitted == (tx_id(orphan),)

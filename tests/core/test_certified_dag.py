"""Votes, certificates, waiting for parents, fetching, equivocation and forwarding.

Four validators (n = 4, f = 1, quorum 3) from :data:`tests.core.support.C`. Each test
drives one engine; the other validators are played by the test through their keys,
connected as peers ``p0`` .. ``p3``.
"""

from __future__ import annotations

import dataclasses

import pytest

from qudag_node.core.certificate import check_certificate, make_certificate
from qudag_node.core.crypto import (
    Purpose,
    SequentialVerifier,
    log_hash_start,
    tx_id,
    tx_ids,
    verify_check,
)
from qudag_node.core.engine import Engine, Role
from qudag_node.core.errors import Reason
from qudag_node.core.events import (
    EquivocationDetected,
    LeaderCommitted,
    MessageRejected,
    TransactionsAdmitted,
    TransactionsForwarded,
    TransactionsOrphaned,
    VertexCertified,
    VertexStored,
    VerticesRequested,
)
from qudag_node.core.evidence import decode_equivocation
from qudag_node.core.messages import (
    CertificateMessage,
    FetchMessage,
    Message,
    ProposalMessage,
    TransactionsMessage,
    VoteMessage,
    decode_message,
    encode_message,
)
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId
from tests.core.simstore import MemoryStore
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
    facts,
    feed,
    message,
    messages,
    moment,
    proposal,
    vote,
)

PEERS = [PeerId(f"p{i}") for i in range(4)]
RETRY = PARAMS.retry_interval


def validator(index: int, params: Params = PARAMS) -> Engine:
    """Validator ``index``, linked to the other three validators."""
    e = Engine(C.genesis, params, C.signers[index])
    for i in range(4):
        if i != index:
            e.peer_connected(PEERS[i], C.signers[i].node_id)
    return e


def sent(e: Engine) -> list[tuple[PeerId, Message]]:
    """The decoded messages the engine queued since the last call."""
    return [(peer, decode_message(data, PARAMS)) for peer, data in messages(e)]


def receive(e: Engine, peer: PeerId, data: bytes, now: float = NOW) -> list[Output]:
    """Deliver one message; returns the drained events."""
    e.receive_message(peer, data, moment(now))
    return drain(e)


def rejected(events: list[Output]) -> list[Reason]:
    """The reasons of the rejections among ``events``."""
    return [e.reason for e in events if isinstance(e, MessageRejected)]


# ------------------------------------------------------------------- voting


def test_a_validator_stores_then_votes_once_per_slot_and_keeps_equivocation_evidence() -> None:
    e = validator(3)
    feed(e, *ROUND1[:3])
    sent(e)
    first = C.vertex(0, 2, R1[:3], txs=[b"first"])
    assert receive(e, PEERS[0], proposal(first)) == [VertexStored(first, own=False)]
    [(to, vote_message)] = [(p, m) for p, m in sent(e) if isinstance(m, VoteMessage)]
    assert to == PEERS[0]
    assert (vote_message.vertex, vote_message.voter) == (first.id, 3)
    assert vote_message.scheme is C.genesis.scheme
    check = C.genesis.vote_check(3, first.id, vote_message.signature)
    assert check is not None
    assert verify_check(check)

    # the author asks again (its vote was lost, say): the same vote, nothing new stored
    assert receive(e, PEERS[0], proposal(first)) == []
    assert [m for _, m in sent(e)] == [vote_message]

    second = C.vertex(0, 2, R1[:3], txs=[b"second"])
    events = receive(e, PEERS[0], proposal(second))
    [evidence] = [ev.evidence for ev in events if isinstance(ev, EquivocationDetected)]
    assert rejected(events) == [Reason.EQUIVOCATION]
    assert sent(e) == []  # no vote for the second
    proof = decode_equivocation(evidence.encode(), C.genesis)
    assert (proof.author, proof.round) == (C.signers[0].node_id, 2)
    assert {proof.first.id, proof.second.id} == {first.id, second.id}

    third = C.vertex(0, 2, R1[:3], txs=[b"third"])
    assert receive(e, PEERS[0], proposal(third)) == [
        MessageRejected(PEERS[0], Reason.EQUIVOCATION, "second vertex for round 2", "proposal")
    ]  # evidence is kept once per slot


def test_an_observer_stores_proposals_but_never_votes() -> None:
    e = C.observer()
    e.peer_connected(PEERS[0], C.signers[0].node_id)
    feed(e, *ROUND1[:3])
    v = C.vertex(0, 2, R1[:3])
    assert receive(e, PEERS[0], proposal(v)) == [VertexStored(v, own=False)]
    assert sent(e) == []


def test_the_author_certifies_its_vertex_with_a_quorum_of_votes() -> None:
    e = validator(0)
    e.submit_transactions([tx_id(b"mine")], [b"mine"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    assert {p for p, m in sent(e) if m == ProposalMessage(own)} == set(PEERS[1:])

    bad = encode_message(
        VoteMessage(own.id, 1, C.signers[1].scheme, C.signers[2].sign(Purpose.VOTE, own.id))
    )
    assert rejected(receive(e, PEERS[1], bad)) == [Reason.BAD_SIGNATURE]
    stranger = encode_message(VoteMessage(own.id, 7, C.signers[1].scheme, b"\x00" * 64))
    assert rejected(receive(e, PEERS[1], stranger)) == [Reason.UNKNOWN_AUTHOR]
    assert receive(e, PEERS[1], vote(own, 1)) == []
    assert receive(e, PEERS[1], vote(own, 1)) == []  # a repeated vote counts once
    [certified] = receive(e, PEERS[2], vote(own, 2))
    assert isinstance(certified, VertexCertified)
    assert certified.certificate.voters == (0, 1, 2)
    check_certificate(certified.certificate, own.id, C.genesis, SequentialVerifier())
    announced = [(p, m) for p, m in sent(e) if isinstance(m, CertificateMessage)]
    assert {p for p, _ in announced} == set(PEERS[1:])
    assert all(m == CertificateMessage(own.id, certified.certificate) for _, m in announced)
    assert receive(e, PEERS[3], vote(own, 3)) == []  # late: harmless
    assert e.statistics().dag_window == 1


def test_a_certificate_certifies_a_stored_vertex_or_makes_us_fetch_it() -> None:
    e = validator(3)
    feed(e, *ROUND1[:3])
    stored = C.vertex(0, 2, R1[:3])
    receive(e, PEERS[0], proposal(stored))
    sent(e)
    certificate = C.certificate(stored)
    assert receive(e, PEERS[0], encode_message(CertificateMessage(stored.id, certificate))) == [
        VertexCertified(stored.id, 2, certificate)
    ]

    unseen = C.vertex(1, 2, R1[:3])
    announce = encode_message(CertificateMessage(unseen.id, C.certificate(unseen)))
    assert receive(e, PEERS[1], announce) == []
    assert sent(e) == [(PEERS[1], FetchMessage((unseen.id,)))]
    assert receive(e, PEERS[1], announce) == []  # already asked
    assert sent(e) == []
    assert receive(e, PEERS[1], message(unseen)) == added(unseen)
    assert e.statistics().fetching == 0


def test_a_certificate_short_of_a_quorum_is_rejected() -> None:
    e = validator(3)
    feed(e, *ROUND1[:3])
    v = C.vertex(0, 2, R1[:3])
    receive(e, PEERS[0], proposal(v))
    votes = {i: C.signers[i].sign(Purpose.VOTE, v.id) for i in (0, 1)}
    short = make_certificate(C.signers[0].scheme, votes)
    events = receive(e, PEERS[0], encode_message(CertificateMessage(v.id, short)))
    assert rejected(events) == [Reason.BAD_CERTIFICATE]
    assert e.statistics().dag_window == 3


# ---------------------------------------------------- waiting for parents


def test_a_vertex_with_missing_parents_waits_while_they_are_fetched() -> None:
    e = C.observer()
    round2 = [C.vertex(i, 2, R1[:3], txs=[f"r2-{i}".encode()]) for i in range(3)]
    assert feed(e, round2[0]) == []
    [(to, fetch)] = sent(e)
    assert to == PEER
    assert isinstance(fetch, FetchMessage)
    assert fetch.ids == tuple(sorted(R1[:3]))
    stats = e.statistics()
    assert (stats.buffered, stats.fetching, stats.dag_window) == (1, 3, 0)

    assert feed(e, ROUND1[0], ROUND1[1]) == added(ROUND1[0], ROUND1[1])
    events = feed(e, ROUND1[2])
    certified = [ev.vertex for ev in events if isinstance(ev, VertexCertified)]
    assert certified == [R1[2], round2[0].id]  # the parent first, then the waiting vertex
    stats = e.statistics()
    assert (stats.buffered, stats.fetching, stats.dag_window) == (0, 0, 4)


def test_an_unanswered_fetch_is_asked_again_of_the_next_peer() -> None:
    e = validator(3)
    child = C.vertex(0, 2, R1[:3])
    receive(e, PEERS[0], message(child))
    assert [p for p, _ in sent(e)] == [PEERS[0]]
    timer = e.get_timer()
    assert timer == NOW + RETRY
    e.handle_timer(moment(NOW + RETRY - 0.01))
    assert sent(e) == []
    e.handle_timer(moment(NOW + RETRY))
    [(to, again)] = sent(e)
    assert to == PEERS[1]  # not the peer that did not answer
    assert again == FetchMessage(tuple(sorted(R1[:3])))
    e.handle_timer(moment(NOW + 2 * RETRY))
    assert [p for p, _ in sent(e)] == [PEERS[2]]


def test_the_waiting_buffer_is_bounded_and_drops_the_oldest() -> None:
    e = C.observer(Params(max_buffered=3))
    waiting = [C.vertex(i, 2, R1[:3], txs=[f"w{i}".encode()]) for i in range(4)]
    wrong = C.vertex(0, 3, R1[:3])  # waits for round-1 parents: wrong once they arrive
    for v in [*waiting, wrong]:
        receive(e, PEERS[0], message(v))
    stats = e.statistics()
    assert (stats.buffered, stats.buffer_dropped) == (3, 2)
    # once the parents arrive, only the newest are still there to join
    events = feed(e, *ROUND1[:3])
    assert _dag_ids(e) - set(R1) == {v.id for v in waiting[2:]}
    assert rejected(events) == [Reason.BAD_PARENT]
    [late] = [ev for ev in events if isinstance(ev, MessageRejected)]
    assert (late.peer, late.kind) == (PEERS[0], "waiting")


def _dag_ids(e: Engine) -> set[bytes]:
    stats = e.statistics()
    return {
        v.id
        for r in range(stats.highest_round + 1)
        for v in e._dag.round(r).values()  # the window is the subject
    }


def test_the_waiting_buffer_is_bounded_in_bytes() -> None:
    params = Params(max_tx_bytes=100, max_vertex_bytes=250, max_buffered_bytes=250)
    e = C.observer(params)
    for i in range(3):
        v = C.vertex(i, 2, R1[:3], txs=[bytes([i]) * 100, bytes([i + 9]) * 100])
        receive(e, PEERS[0], message(v))
    stats = e.statistics()
    assert (stats.buffered, stats.buffer_dropped) == (1, 2)


def test_a_fetch_request_is_handed_to_the_store_and_oversize_ones_are_refused() -> None:
    e = validator(3)
    ask = encode_message(FetchMessage(tuple(R1)))
    assert receive(e, PEERS[1], ask) == [VerticesRequested(PEERS[1], tuple(R1))]
    too_many = encode_message(FetchMessage((R1[0],) * (PARAMS.max_fetch_ids + 1)))
    assert rejected(receive(e, PEERS[1], too_many)) == [Reason.OVERSIZE_MESSAGE]


# ------------------------------------------------------------- forwarding


def test_an_observer_forwards_client_transactions_until_they_are_included() -> None:
    e = C.observer()
    e.peer_connected(PEERS[0], C.signers[0].node_id)
    e.peer_connected(PEERS[1], C.signers[1].node_id)
    e.peer_connected(PeerId("observer-2"), C.outsider.node_id)  # not a validator
    txs = [b"via-observer-1", b"via-observer-2"]
    result = e.submit_transactions(tx_ids(txs), txs, moment(NOW))
    assert result.admitted == tuple(tx_ids(txs))
    assert drain(e) == [TransactionsAdmitted(tuple(tx_ids(txs)), tuple(txs))]
    assert sent(e) == [(p, TransactionsMessage(tuple(txs))) for p in PEERS[:2]]
    assert e.statistics().pending == 2

    e.handle_timer(moment(NOW + RETRY))
    assert sent(e) == [(p, TransactionsMessage(tuple(txs))) for p in PEERS[:2]]
    carrier = C.vertex(0, 1, txs=txs)
    feed(e, carrier, now=NOW + RETRY)
    e.handle_timer(moment(NOW + 3 * RETRY))
    assert sent(e) == []
    assert e.statistics().pending == 0
    assert e.carrier(tx_id(txs[0])) == carrier.id


def test_forwarded_transactions_go_through_the_store_check_like_a_clients() -> None:
    e = validator(0)
    txs = (b"fwd-1", b"fwd-2")
    forward = encode_message(TransactionsMessage(txs))
    ids = tuple(tx_ids(list(txs)))
    assert receive(e, PeerId("observer"), forward) == [
        TransactionsForwarded(PeerId("observer"), ids, txs)
    ]
    # the pump admits those its store does not hold, as for a client's submit
    e.submit_transactions(list(ids), list(txs), moment(NOW))
    events = drain(e)
    assert events[0] == TransactionsAdmitted(ids, txs)
    assert any(isinstance(ev, VertexStored) and ev.own for ev in events)  # proposed at once
    assert receive(e, PeerId("observer"), forward, NOW + 0.01) == []  # held now: nothing
    o = C.observer()
    assert rejected(receive(o, PEERS[0], forward)) == [Reason.NOT_A_VALIDATOR]
    assert o.statistics().role is Role.OBSERVER


# -------------------------------------------------------------- proposals


def test_an_overtaken_proposal_is_abandoned_and_its_transactions_proposed_again() -> None:
    e = validator(0)
    e.submit_transactions([tx_id(b"slow")], [b"slow"], moment(NOW))
    [own1] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    feed(e, *ROUND1[1:], now=NOW + 0.1)  # a round-1 quorum without our vertex
    e.handle_timer(moment(NOW + PARAMS.leader_timeout - 0.01))  # ours gets time for its votes
    assert not [ev for ev in drain(e) if isinstance(ev, VertexStored)]
    e.handle_timer(moment(NOW + PARAMS.leader_timeout))
    [own2] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored) and ev.own]
    assert own2.round == 2
    assert own1.id not in own2.parents
    assert own2.tx_ids == (tx_id(b"slow"),)  # taken back and proposed again
    assert e.carrier(tx_id(b"slow")) == own2.id
    assert receive(e, PEERS[1], vote(own1, 1)) == []  # votes for the abandoned one: ignored


def test_an_uncertified_proposal_is_sent_again_until_certified() -> None:
    e = validator(0)
    e.submit_transactions([tx_id(b"again")], [b"again"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    sent(e)
    assert e.get_timer() == NOW + RETRY
    e.handle_timer(moment(NOW + RETRY))
    assert sent(e) == [(p, ProposalMessage(own)) for p in PEERS[1:]]
    receive(e, PEERS[2], vote(own, 2))
    e.handle_timer(moment(NOW + 2 * RETRY))  # only those whose votes are still missing
    assert sent(e) == [(p, ProposalMessage(own)) for p in (PEERS[1], PEERS[3])]


def test_a_stalled_validator_announces_its_latest_certificate_again() -> None:
    e = validator(0)
    e.submit_transactions([tx_id(b"stall")], [b"stall"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    receive(e, PEERS[1], vote(own, 1))
    [certified] = receive(e, PEERS[2], vote(own, 2))
    assert isinstance(certified, VertexCertified)
    sent(e)
    # round 1 holds only our vertex: no quorum, nothing to propose; tell the others again
    when = e.get_timer()
    assert when is not None
    e.handle_timer(moment(when))
    announced = sent(e)
    assert announced == [(p, CertificateMessage(own.id, certified.certificate)) for p in PEERS[1:]]


def test_a_validator_without_peers_sleeps_instead_of_retrying() -> None:
    e = Engine(C.genesis, PARAMS, C.signers[0])
    e.submit_transactions([tx_id(b"alone")], [b"alone"], moment(NOW))
    drain(e)
    assert e.get_timer() is None


# ------------------------------------------------------- commits and order


def _three_rounds_with_a_repeat() -> tuple[Engine, list[LeaderCommitted]]:
    """Rounds 1-5 where the same transaction rides in rounds 1 and 3."""
    e = C.observer()
    repeat = b"carried twice"
    r1 = [C.vertex(i, 1, txs=[repeat] if i == 3 else [f"a{i}".encode()]) for i in range(4)]
    ids1 = [v.id for v in r1]
    r2 = [C.vertex(i, 2, ids1) for i in range(4)]
    ids2 = [v.id for v in r2]
    r3 = [C.vertex(i, 3, ids2, txs=[repeat] if i == 0 else []) for i in range(4)]
    ids3 = [v.id for v in r3]
    r4 = [C.vertex(i, 4, ids3) for i in range(4)]
    ids4 = [v.id for v in r4]
    r5 = [C.vertex(i, 5, ids4) for i in range(4)]
    events = feed(e, *r1, *r2, *r3, *r4, *r5)
    return e, [ev for ev in events if isinstance(ev, LeaderCommitted)]


def test_a_transaction_carried_by_two_vertices_is_logged_once() -> None:
    e, commits = _three_rounds_with_a_repeat()
    assert [c.round for c in commits] == [2, 4]
    logged = [entry.tx_id for c in commits for entry in c.entries]
    assert logged.count(tx_id(b"carried twice")) == 1
    assert len(logged) == len(set(logged)) == 4
    assert e.statistics().in_flight == 0


def test_skipped_leader_rounds_are_reported_with_the_next_commit() -> None:
    e = C.observer()
    r1 = ROUND1
    leader2 = C.index(2)
    r2 = [C.vertex(i, 2, R1[:3]) for i in range(4) if i != leader2]  # no leader 2
    ids2 = [v.id for v in r2]
    r3 = [C.vertex(i, 3, ids2) for i in range(4)]
    ids3 = [v.id for v in r3]
    r4 = [C.vertex(i, 4, ids3) for i in range(4)]
    ids4 = [v.id for v in r4]
    r5 = [C.vertex(i, 5, ids4) for i in range(2)]
    [commit] = [ev for ev in feed(e, *r1, *r2, *r3, *r4, *r5) if isinstance(ev, LeaderCommitted)]
    assert (commit.round, commit.skipped) == (4, (2,))


def test_own_vertices_pruned_unordered_come_back_as_orphaned_transactions() -> None:
    params = Params(gc_depth=2)
    e = validator(3, params)
    e.submit_transactions([tx_id(b"orphan")], [b"orphan"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    feed(e, *ROUND1[:3])
    # certify our round-1 vertex, then let rounds 2-7 ignore it
    for voter in (0, 1):
        receive(e, PEERS[voter], vote(own, voter))
    e.peer_disconnected(PEERS[0])  # keep our later proposals quiet
    events: list[Output] = []
    prev = R1[:3]
    for r in range(2, 8):
        layer = [C.vertex(i, r, prev) for i in range(3)]
        events += feed(e, *layer, now=NOW + r)
        prev = [v.id for v in layer]
    orphaned = [ev for ev in events if isinstance(ev, TransactionsOrphaned)]
    assert orphaned == [TransactionsOrphaned((tx_id(b"orphan"),))]
    e.requeue_transactions([tx_id(b"orphan")], [b"orphan"], moment(NOW + 8))
    [again] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored) and ev.own]
    assert again.tx_ids == (tx_id(b"orphan"),)
    assert again.round == 8


def test_own_vertex_passed_over_by_the_next_round_is_proposed_again_at_once() -> None:
    slow = dataclasses.replace(PARAMS, min_round_interval=5.0)  # we do not propose round 2
    e = validator(3, slow)
    e.submit_transactions([tx_id(b"late")], [b"late"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    feed(e, *ROUND1[:3])
    for voter in (0, 1):
        receive(e, PEERS[voter], vote(own, voter))  # certified, but too late:
    round2 = [C.vertex(i, 2, R1[:3]) for i in range(3)]  # the others name only R1[:3]
    early = feed(e, *round2, now=NOW + 1)
    assert not [ev for ev in early if isinstance(ev, TransactionsOrphaned)]
    e.handle_timer(moment(NOW + 5))
    events = drain(e)
    assert TransactionsOrphaned((tx_id(b"late"),)) in events  # at our round-3 proposal
    [third] = [ev.vertex for ev in events if isinstance(ev, VertexStored) and ev.own]
    assert third.round == 3
    assert e.carrier(tx_id(b"late")) is None  # released: pending until proposed again
    e.requeue_transactions([tx_id(b"late")], [b"late"], moment(NOW + 10))
    round3 = [C.vertex(i, 3, [v.id for v in round2]) for i in range(3)]
    proposed = feed(e, *round3, now=NOW + 10)
    [again] = [ev.vertex for ev in proposed if isinstance(ev, VertexStored) and ev.own]
    assert (again.round, again.tx_ids) == (4, (tx_id(b"late"),))
    # when its round is pruned, it is not handed back a second time
    prev = [v.id for v in round3]
    later: list[Output] = []
    for r in range(4, 60):
        layer = [C.vertex(i, r, prev) for i in range(3)]
        later += feed(e, *layer, now=NOW + 10 + 5 * r)
        prev = [v.id for v in layer]
    assert e.statistics().committed_round > 50  # round 1 is long pruned
    assert not [ev for ev in later if isinstance(ev, TransactionsOrphaned)]


def test_handed_back_transactions_another_passed_over_vertex_took_are_proposed_again() -> None:
    slow = dataclasses.replace(PARAMS, min_round_interval=5.0)
    e = validator(3, slow)
    shared = tx_id(b"shared")
    e.submit_transactions([shared], [b"shared"], moment(NOW))
    [own] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored)]
    feed(e, *ROUND1[:3])
    for voter in (0, 1):
        receive(e, PEERS[voter], vote(own, voter))
    round2 = [C.vertex(i, 2, R1[:3]) for i in range(3)]  # ours is passed over
    feed(e, *round2, now=NOW + 1)
    e.handle_timer(moment(NOW + 5))
    events = drain(e)
    assert TransactionsOrphaned((shared,)) in events  # handed back at our round-3 proposal
    [third] = [ev.vertex for ev in events if isinstance(ev, VertexStored) and ev.own]
    e.requeue_transactions([shared], [b"shared"], moment(NOW + 5))
    for voter in (0, 1):
        receive(e, PEERS[voter], vote(third, voter), now=NOW + 5)
    # before we propose again, validator 0's round-3 vertex carries the same transaction
    # (it held a copy too), and round 4 passes it over as well
    ids2 = [v.id for v in round2]
    round3 = [C.vertex(0, 3, ids2, txs=[b"shared"])] + [C.vertex(i, 3, ids2) for i in (1, 2)]
    feed(e, *round3, now=NOW + 6)
    assert e.carrier(shared) == round3[0].id
    prev = [third.id, round3[1].id, round3[2].id]
    later: list[Output] = []
    for r in range(4, 60):
        layer = [C.vertex(i, r, prev) for i in range(3)]
        later += feed(e, *layer, now=NOW + 10 + 5 * r)
        prev = [v.id for v in layer]
    assert e.statistics().committed_round > 50  # round 3 is long pruned
    assert not [ev for ev in later if isinstance(ev, VertexStored) and shared in ev.vertex.tx_ids]
    # we handed it back, so when the vertex that took it is pruned unordered, it is ours
    assert [ev for ev in later if isinstance(ev, TransactionsOrphaned)] == [
        TransactionsOrphaned((shared,))
    ]
    e.requeue_transactions([shared], [b"shared"], moment(NOW + 400))
    [again] = [ev.vertex for ev in drain(e) if isinstance(ev, VertexStored) and ev.own]
    assert again.tx_ids == (shared,)


@pytest.mark.parametrize("index", [0, 3])
def test_restart_resends_the_uncertified_proposal_and_never_signs_another(index: int) -> None:
    e = validator(index)
    store = MemoryStore(log_hash_start(C.genesis.hash))
    e.submit_transactions([tx_id(b"kept")], [b"kept"], moment(NOW))
    store.persist(facts(e))
    [own] = [
        v.vertex for v in store.vertices.values() if v.vertex.author == C.signers[index].node_id
    ]

    restarted = Engine(
        C.genesis,
        PARAMS,
        C.signers[index],
        store.snapshot(C.signers[index].node_id, PARAMS.gc_depth),
    )
    for i in range(4):
        if i != index:
            restarted.peer_connected(PEERS[i], C.signers[i].node_id)
    restarted.handle_timer(moment(NOW + 5))
    assert drain(restarted) == []
    assert {p for p, m in sent(restarted) if m == ProposalMessage(own)} == {
        PEERS[i] for i in range(4) if i != index
    }
    stats = restarted.statistics()
    assert (stats.round, stats.in_flight, stats.pending) == (1, 1, 0)
    voters = [i for i in range(4) if i != index][:2]
    for voter in voters:
        receive(restarted, PEERS[voter], vote(own, voter))
    assert restarted.statistics().dag_window == 1


def test_an_observer_forwards_what_it_holds_once_a_validator_connects() -> None:
    e = C.observer()
    e.submit_transactions(tx_ids([b"early"]), [b"early"], moment(NOW))
    assert sent(e) == []
    assert e.get_timer() is None  # no validator to forward to
    e.peer_connected(PEERS[2], C.signers[2].node_id)
    assert e.get_timer() == 0.0  # due at once
    e.handle_timer(moment(NOW + 0.1))
    assert sent(e) == [(PEERS[2], TransactionsMessage((b"early",)))]


def test_equivocation_evidence_is_reported_once_across_a_restart() -> None:
    e = validator(3)
    store = MemoryStore(log_hash_start(C.genesis.hash))
    feed(e, *ROUND1[:3])
    first, second = (C.vertex(0, 2, R1[:3], txs=[t]) for t in (b"one", b"two"))
    for v in (first, second):
        e.receive_message(PEERS[0], proposal(v), moment(NOW))
    store.persist(facts(e))
    assert len(store.evidence) == 1

    key = C.signers[3].node_id
    restarted = Engine(C.genesis, PARAMS, C.signers[3], store.snapshot(key, PARAMS.gc_depth))
    third = C.vertex(0, 2, R1[:3], txs=[b"three"])
    events = receive(restarted, PEERS[0], proposal(third))
    assert rejected(events) == [Reason.EQUIVOCATION]
    assert not [ev for ev in events if isinstance(ev, EquivocationDetected)]


def test_a_vertex_of_our_own_from_an_earlier_life_moves_our_round_past_it() -> None:
    e = Engine(C.genesis, PARAMS, C.signers[0])  # an empty store, the same key
    ours = C.vertex(0, 1, txs=[b"signed before the data was lost"])
    assert feed(e, ours) == added(ours)  # a peer hands back our round-1 vertex
    assert e.statistics().round == 1
    events = feed(e, ROUND1[1], ROUND1[2])  # a round-1 quorum: time for round 2
    [own] = [ev.vertex for ev in events if isinstance(ev, VertexStored) and ev.own]
    assert own.round == 2  # never a second round-1 vertex
    assert ours.id in own.parents

"""The sync machine on its own: catch-up, anti-entropy, limits and bad input.

No store and no event loop: a test's "store" is a set of (round, id) pairs, and
:func:`perform` answers the machine's store reads from it the way the syncer answers
them from SQLite. Time is a number the test passes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.messages import FetchMessage, decode_message
from qudag_node.core.sync import (
    CATCHUP_THRESHOLD,
    MAX_SUMMARY_ROUNDS,
    PROGRESS_INTERVAL,
    REQUEST_TIMEOUT,
    ROUNDS_ANSWER_BYTES,
    ROUNDS_PER_REQUEST,
    CatchingUpChanged,
    CatchUpProgress,
    CatchUpStarted,
    CaughtUp,
    CompareIds,
    CompareSummary,
    GapMeasured,
    IdsCompared,
    IdsRead,
    PeerMessage,
    PushCertified,
    ReadIds,
    RequestTimedOut,
    RoundsServed,
    Send,
    ServeRounds,
    SummaryCompared,
    SyncInput,
    SyncMachine,
    SyncOutput,
    Tick,
    WindowSummary,
)
from qudag_node.core.syncwire import (
    LEAF_SPAN,
    MAX_IDS,
    CertifiedIds,
    Ids,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    decode_sync,
    encode_sync,
    summarize,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.wire import Owner, owner_of
from tests.core.support import PARAMS

P, Q, R = PeerId("p"), PeerId("q"), PeerId("r")
INTERVAL = 10.0


def status(highest: int, committed: int = 0, floor: int = 0) -> Status:
    """A position: rounds held up to ``highest``, an empty log."""
    return Status(highest, committed, floor, 0, b"\x00" * 32)


def vid(round_: int, k: int) -> VertexId:
    """A made-up vertex id, the ``k``-th of ``round_``."""
    return VertexId(hashlib.blake2b(f"{round_}/{k}".encode(), digest_size=32).digest())


def rounds_of(low: int, high: int, per_round: int = 4) -> set[tuple[int, VertexId]]:
    """``per_round`` certified ids in every round ``low..high``."""
    return {(r, vid(r, k)) for r in range(low, high + 1) for k in range(per_round)}


def machine(
    needs_peers: bool = True, trust: int = 1, linked: Iterable[PeerId] = (P,)
) -> SyncMachine:
    """A machine at time 0 linked to ``linked`` (its STATUS greetings dropped)."""
    m = SyncMachine(PARAMS, INTERVAL, needs_peers, trust, now=0.0)
    for peer in linked:
        m.link_up(peer, status(0))
    return m


def certified(held: set[tuple[int, VertexId]], low: int, high: int) -> CertifiedIds:
    """The ids of ``held`` in rounds ``low..high``, packed as the store packs them."""
    rows = sorted(item for item in held if low <= item[0] <= high)
    return CertifiedIds.of([r for r, _ in rows], [i for _, i in rows])


@dataclass
class Done:
    """What performing a machine's outputs did: sends, pushes, served rounds, facts."""

    sends: list[tuple[PeerId, SyncMessage | FetchMessage]] = field(default_factory=list)
    pushed: list[tuple[PeerId, tuple[VertexId, ...]]] = field(default_factory=list)
    served: list[tuple[PeerId, int, int]] = field(default_factory=list)
    facts: list[SyncOutput] = field(default_factory=list)

    def sync_sent(self, peer: PeerId | None = None) -> list[SyncMessage]:
        """The sync messages sent (to ``peer``, if given)."""
        return [
            m
            for to, m in self.sends
            if not isinstance(m, FetchMessage) and (peer is None or to == peer)
        ]

    def requested(self) -> list[tuple[PeerId, RoundsRequest]]:
        """The ROUNDS requests sent, and to whom."""
        return [(to, m) for to, m in self.sends if isinstance(m, RoundsRequest)]

    def fetched(self) -> list[VertexId]:
        """Every id asked for in FETCH messages."""
        return [i for _, m in self.sends if isinstance(m, FetchMessage) for i in m.ids]


def decoded(data: bytes) -> SyncMessage | FetchMessage:
    """A sent message, decoded by its owner's decoder."""
    if owner_of(data) is Owner.SYNC:
        return decode_sync(data)
    message = decode_message(data, PARAMS)
    assert isinstance(message, FetchMessage)
    return message


def perform(
    m: SyncMachine,
    event: SyncInput,
    ours: Status,
    now: float,
    held: set[tuple[int, VertexId]] | None = None,
    done: Done | None = None,
) -> Done:
    """Step ``m`` and do its outputs, answering store reads from ``held``, in order."""
    done = Done() if done is None else done
    for output in m.step(event, ours, now):
        match output:
            case Send(peer, data):
                done.sends.append((peer, decoded(data)))
            case ReadIds(low, high):
                answer = IdsRead(output, certified(held or set(), low, high))
                perform(m, answer, ours, now, held, done)
            case PushCertified(peer, ids):
                done.pushed.append((peer, ids))
            case ServeRounds(peer, low, high, _):
                done.served.append((peer, low, high))
                perform(m, RoundsServed(peer, low, high), ours, now, held, done)
            case _:
                done.facts.append(output)
    return done


def facts_of(done: Done, kind: type) -> list[SyncOutput]:
    """The facts of one kind, in order."""
    return [f for f in done.facts if isinstance(f, kind)]


# ------------------------------------------------------------------ links


def test_a_link_is_greeted_with_our_status_and_its_loss_forgets_the_peer() -> None:
    m = machine(linked=())
    greeting = m.link_up(P, status(7, 6))
    assert greeting.peer == P
    assert decode_sync(greeting.data) == status(7, 6)
    perform(m, PeerMessage(P, status(9)), status(7), 0.0)
    assert m.statuses() == {P: status(9)}
    m.link_down(P)
    assert m.statuses() == {}


def test_messages_from_a_peer_without_a_link_are_dropped() -> None:
    m = machine(linked=())
    done = perform(m, PeerMessage(P, RoundsRequest(1, 5)), status(7), 0.0)
    assert done == Done()
    perform(m, PeerMessage(P, status(50)), status(7), 0.0)
    assert m.statuses() == {}


def test_the_machine_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        m = machine(linked=(P, Q))
        perform(m, PeerMessage(P, status(100)), status(10), 0.0)
        perform(m, PeerMessage(Q, status(90)), status(10), 0.0)
        runs.append(
            [m.step(Tick(), status(10), t) for t in (0.0, 1.0, REQUEST_TIMEOUT, 2 * INTERVAL)]
        )
    assert runs[0] == runs[1]


# --------------------------------------------------------------- catch-up


def test_a_node_far_behind_asks_its_peer_for_whole_rounds_from_its_committed_round() -> None:
    m = machine(needs_peers=False)
    assert not m.catching_up
    perform(m, PeerMessage(P, status(112)), status(12, committed=8), 0.0)
    done = perform(m, Tick(), status(12, committed=8), 0.0)
    assert facts_of(done, CatchUpStarted) == [CatchUpStarted(12, 112, 100, P)]
    assert facts_of(done, CatchingUpChanged) == [CatchingUpChanged(True)]
    assert facts_of(done, GapMeasured) == [GapMeasured(100)]
    assert facts_of(done, CatchUpProgress) == [CatchUpProgress(12, 112, 100, 0, None)]
    assert done.requested() == [(P, RoundsRequest(9, 8 + ROUNDS_PER_REQUEST))]
    assert m.readiness(status(12)) == (False, "catching up: 100 rounds behind")

    # Waiting for the answer: no second request.
    assert perform(m, Tick(), status(12, committed=8), 1.0).sync_sent() == []
    # The answer is complete: the next rounds are asked for, whatever the engine took in.
    perform(m, PeerMessage(P, RoundsDone(9, 8 + ROUNDS_PER_REQUEST)), status(40), 2.0)
    done = perform(m, Tick(), status(40, committed=30), 2.0)
    assert done.sync_sent(P) == [RoundsRequest(9 + ROUNDS_PER_REQUEST, 112)]
    assert facts_of(done, CatchUpProgress) == [CatchUpProgress(40, 112, 72, 0, 14.0)]

    # In step again; the last rounds within the threshold are asked for once.
    done = perform(m, Tick(), status(110, committed=108), 4.5)
    assert facts_of(done, CaughtUp) == [CaughtUp(110, 98, 4.5)]
    assert done.requested() == [(P, RoundsRequest(111, 112))]
    assert perform(m, Tick(), status(110, committed=108), 5.0).requested() == []
    assert facts_of(done, CatchingUpChanged) == [CatchingUpChanged(False)]
    assert not m.catching_up
    assert m.readiness(status(110)) == (True, "in step with peers (2 rounds behind)")


def test_a_gap_within_the_threshold_is_not_chased() -> None:
    m = machine()
    perform(m, PeerMessage(P, status(10 + CATCHUP_THRESHOLD)), status(10), 0.0)
    done = perform(m, Tick(), status(10), 0.0)
    assert facts_of(done, CatchingUpChanged) == [CatchingUpChanged(False)]
    assert done.requested() == []


def test_an_unanswered_request_times_out_and_goes_to_the_new_target() -> None:
    m = machine(linked=(P, Q))
    ours = status(10, committed=8)
    perform(m, PeerMessage(P, status(100)), ours, 0.0)
    assert perform(m, Tick(), ours, 0.0).requested() == [(P, RoundsRequest(9, 72))]
    perform(m, PeerMessage(Q, status(120)), ours, 5.0)
    before = perform(m, Tick(), ours, REQUEST_TIMEOUT - 0.1)
    assert before.requested() == []
    done = perform(m, Tick(), ours, REQUEST_TIMEOUT)
    assert facts_of(done, RequestTimedOut) == [RequestTimedOut(P, 9)]
    assert done.requested() == [(Q, RoundsRequest(9, 72))]


def test_a_request_to_a_peer_whose_link_went_down_goes_to_another_at_once() -> None:
    m = machine(linked=(P, Q))
    ours = status(10, committed=8)
    perform(m, PeerMessage(P, status(100)), ours, 0.0)
    perform(m, PeerMessage(Q, status(90)), ours, 0.0)
    assert perform(m, Tick(), ours, 0.0).requested() == [(P, RoundsRequest(9, 72))]
    m.link_down(P)
    done = perform(m, Tick(), ours, 1.0)
    assert done.requested() == [(Q, RoundsRequest(9, 72))]
    assert facts_of(done, RequestTimedOut) == []


def test_rounds_that_never_arrive_are_asked_again_from_our_round() -> None:
    m = machine()
    perform(m, PeerMessage(P, status(300)), status(10, committed=8), 0.0)
    perform(m, Tick(), status(10, committed=8), 0.0)
    perform(m, PeerMessage(P, RoundsDone(9, 72)), status(10, committed=8), 1.0)
    assert perform(m, Tick(), status(10, committed=8), 1.0).sync_sent() == [RoundsRequest(73, 136)]
    # Our position never moved: after the timeout the next request starts from our round.
    done = perform(m, Tick(), status(10, committed=8), 1.0 + REQUEST_TIMEOUT)
    assert done.requested() == [(P, RoundsRequest(9, 72))]


def test_no_request_while_the_engine_is_far_behind_what_came() -> None:
    m = machine()
    ours = status(10, committed=8)
    perform(m, PeerMessage(P, status(1000)), ours, 0.0)
    for low in (9, 73, 137):
        perform(m, Tick(), ours, 0.0)
        perform(m, PeerMessage(P, RoundsDone(low, low + ROUNDS_PER_REQUEST - 1)), ours, 0.0)
    # 200 rounds asked and answered, the engine still at round 10: wait for it.
    assert perform(m, Tick(), ours, 0.0).sync_sent() == []


def test_a_rounds_done_that_is_not_ours_changes_nothing() -> None:
    m = machine(linked=(P, Q))
    ours = status(10, committed=8)
    perform(m, PeerMessage(P, status(100)), ours, 0.0)
    perform(m, Tick(), ours, 0.0)
    perform(m, PeerMessage(Q, RoundsDone(9, 72)), ours, 1.0)  # not asked of Q
    perform(m, PeerMessage(P, RoundsDone(9, 8)), ours, 1.0)  # nothing served
    assert perform(m, Tick(), ours, 2.0).sync_sent() == []  # still waiting for P
    done = perform(m, Tick(), ours, REQUEST_TIMEOUT)
    assert done.requested() == [(P, RoundsRequest(9, 72))]


def test_one_peer_claiming_a_far_round_is_not_chased() -> None:
    liar, second, third = PeerId("liar"), PeerId("second"), PeerId("third")
    m = machine(needs_peers=False, trust=2, linked=(liar, second, third))
    ours = status(40, committed=38)
    for peer, highest in ((liar, 10_000), (second, 50), (third, 48)):
        perform(m, PeerMessage(peer, status(highest)), ours, 0.0)
    assert m.gap(ours) == 10
    done = perform(m, Tick(), ours, 0.0)
    assert done.requested() == [(second, RoundsRequest(39, 50))]
    m.link_down(second)
    assert m.gap(ours) == 8  # the second most advanced is now the third


def test_with_fewer_peers_than_trust_the_least_advanced_is_followed() -> None:
    m = machine(trust=3, linked=(P, Q))
    perform(m, PeerMessage(P, status(10_000)), status(40), 0.0)
    perform(m, PeerMessage(Q, status(50)), status(40), 0.0)
    assert m.gap(status(40)) == 10


def test_progress_is_reported_at_most_every_interval() -> None:
    m = machine()
    ours = status(10, committed=8)
    perform(m, PeerMessage(P, status(300)), ours, 0.0)
    times = [0.0, 0.5, PROGRESS_INTERVAL - 0.1, PROGRESS_INTERVAL, PROGRESS_INTERVAL + 1]
    reported = [t for t in times if facts_of(perform(m, Tick(), ours, t), CatchUpProgress)]
    assert reported == [0.0, PROGRESS_INTERVAL]


def test_readiness_without_peers() -> None:
    assert machine().readiness(status(1)) == (False, "no peer has told us its position yet")
    assert machine(needs_peers=False).readiness(status(1)) == (
        True,
        "no peers needed: this node is the whole network",
    )
    alone = machine(needs_peers=False)
    assert perform(alone, Tick(), status(1), 0.0).requested() == []
    assert alone.gap(status(1)) is None


# ------------------------------------------------------------- anti-entropy


def test_a_sync_round_is_due_every_interval() -> None:
    m = machine(linked=(Q, P, R))
    ours = status(12, floor=2)
    perform(m, PeerMessage(P, status(15, floor=3)), ours, 0.0)
    perform(m, PeerMessage(Q, status(12)), ours, 0.0)
    outputs = m.step(Tick(), ours, 0.0)
    hello = encode_sync(ours)
    # STATUS to every peer by name, each followed by the read for its SUMMARY: from the
    # higher floor to below the lower of the two newest rounds.
    assert [o for o in outputs if isinstance(o, Send | ReadIds)] == [
        Send(P, hello),
        ReadIds(3, 11, WindowSummary(P)),
        Send(Q, hello),
        ReadIds(2, 11, WindowSummary(Q)),
        Send(R, hello),  # no STATUS from R yet: no summary
    ]
    assert m.next_sync_in(0.0) == INTERVAL
    assert not any(isinstance(o, Send) for o in m.step(Tick(), ours, INTERVAL - 0.1))
    assert m.next_sync_in(INTERVAL) == 0.0
    assert any(isinstance(o, Send) for o in m.step(Tick(), ours, INTERVAL))


@dataclass
class Side:
    """One end of an anti-entropy exchange: its machine and what it holds."""

    name: PeerId
    machine: SyncMachine
    held: set[tuple[int, VertexId]]


def exchange(a: Side, b: Side, ours: Status, now: float) -> tuple[Done, Done]:
    """A's sync round at ``now``, then every message between A and B until none is
    left. A FETCH is answered and a push taken in the way each engine would: the ids
    join the side that lacked them."""
    sides = {a.name: a, b.name: b}
    rounds = {i: r for r, i in a.held | b.held}
    totals = {a.name: Done(), b.name: Done()}
    queue: list[tuple[PeerId, PeerId, SyncMessage | FetchMessage]] = []

    def take(side: Side, done: Done) -> None:
        totals[side.name].sends += done.sends
        totals[side.name].facts += done.facts
        for to, ids in done.pushed:
            sides[to].held |= {(rounds[i], i) for i in ids}
        queue.extend((side.name, to, m) for to, m in done.sends)

    take(a, perform(a.machine, Tick(), ours, now, a.held))
    while queue:
        assert sum(len(t.sends) for t in totals.values()) < 1000, "the exchange does not end"
        sender, to, message = queue.pop(0)
        if isinstance(message, FetchMessage):
            sides[sender].held |= {(rounds[i], i) for i in message.ids}
            continue
        receiver = sides[to]
        take(
            receiver,
            perform(receiver.machine, PeerMessage(sender, message), ours, now, receiver.held),
        )
    return totals[a.name], totals[b.name]


def pair(a_held: set[tuple[int, VertexId]], b_held: set[tuple[int, VertexId]]) -> tuple[Side, Side]:
    """Two linked machines that know each other's position."""
    sides = []
    for name, other, held in ((P, Q, a_held), (Q, P, b_held)):
        m = machine(linked=(other,))
        perform(m, PeerMessage(other, status(300)), status(300), 0.0)
        sides.append(Side(name, m, held))
    return sides[0], sides[1]


def test_equal_dags_cost_one_summary_and_no_answer() -> None:
    a, b = pair(rounds_of(1, 300), rounds_of(1, 300))
    sent_a, sent_b = exchange(a, b, status(300), 0.0)
    assert [type(m) for m in sent_a.sync_sent(Q)] == [Status, Summary]
    assert sent_b.sends == []
    assert facts_of(sent_b, SummaryCompared) == [SummaryCompared(in_sync=True)]


def test_anti_entropy_converges_from_scattered_differences() -> None:
    common = rounds_of(1, 300)
    a_only = {(r, vid(r, 9)) for r in (3, 150, 151, 298)}
    b_only = {(r, vid(r, 8)) for r in (7, 150, 260)}
    a, b = pair(common | a_only, common | b_only)
    sent_a, sent_b = exchange(a, b, status(300), 0.0)
    assert a.held == b.held == common | a_only | b_only
    # Every id travelled once: fetched by one side or pushed by the other.
    compared = facts_of(sent_a, IdsCompared) + facts_of(sent_b, IdsCompared)
    assert sum(f.fetching + f.pushing for f in compared if isinstance(f, IdsCompared)) == 7
    leaves = [s for s in sent_a.sync_sent() + sent_b.sync_sent() if isinstance(s, Ids)]
    assert all(leaf.high - leaf.low + 1 <= LEAF_SPAN for leaf in leaves)
    # Equal now: the next round costs one summary.
    _, again = exchange(a, b, status(300), INTERVAL)
    assert facts_of(again, SummaryCompared) == [SummaryCompared(in_sync=True)]


def test_a_leaf_lists_at_most_max_ids() -> None:
    m = machine()
    held = {(1, vid(1, k)) for k in range(MAX_IDS + 10)}
    theirs = Summary(1, 1, 1, (0,), (0,))
    done = perform(m, PeerMessage(P, theirs), status(5), 0.0, held)
    [listed] = done.sync_sent(P)
    assert isinstance(listed, Ids)
    assert len(listed.ids) == MAX_IDS
    assert facts_of(done, SummaryCompared) == [SummaryCompared(in_sync=False)]


def test_an_id_list_fetches_what_we_lack_and_pushes_what_they_lack() -> None:
    m = machine()
    held = rounds_of(4, 6)
    lacked, extra = vid(5, 9), sorted([vid(4, 1), vid(6, 2)])
    theirs_ids = (*sorted(i for r, i in held if i not in extra), lacked)
    done = perform(m, PeerMessage(P, Ids(4, 6, theirs_ids)), status(9), 0.0, held)
    assert done.fetched() == [lacked]
    assert done.pushed == [(P, tuple(extra))]
    assert facts_of(done, IdsCompared) == [IdsCompared(P, 4, 6, 1, 2)]


def test_a_summary_is_compared_over_the_rounds_it_names() -> None:
    m = machine()
    outputs = m.step(PeerMessage(P, Summary(5, 10, 3, (0, 0), (0, 0))), status(20), 0.0)
    [read] = outputs
    assert isinstance(read, ReadIds)
    assert (read.low, read.high) == (5, 10)
    assert isinstance(read.purpose, CompareSummary)
    outputs = m.step(PeerMessage(P, Ids(5, 7, ())), status(20), 0.0)
    assert [o.purpose for o in outputs if isinstance(o, ReadIds)] == [CompareIds(P, Ids(5, 7, ()))]


def test_a_finer_summary_answers_a_wide_differing_bucket() -> None:
    m = machine()
    held = rounds_of(1, 64)
    theirs = summarize(certified(held - {(40, vid(40, 1))}, 1, 64), 1, 64, 16)
    done = perform(m, PeerMessage(P, theirs), status(70), 0.0, held)
    [finer] = done.sync_sent(P)
    assert isinstance(finer, Summary)
    assert (finer.low, finer.high) == (33, 48)
    assert finer.span < theirs.span


# ------------------------------------------------------------ serving rounds


def test_a_rounds_request_is_served_then_closed_with_rounds_done() -> None:
    m = machine()
    outputs = m.step(PeerMessage(P, RoundsRequest(30, 45)), status(40), 0.0)
    assert outputs == [ServeRounds(P, 30, 45, ROUNDS_ANSWER_BYTES)]
    [done] = m.step(RoundsServed(P, 30, 41), status(40), 0.0)
    assert isinstance(done, Send)
    assert (done.peer, decode_sync(done.data)) == (P, RoundsDone(30, 41))


# ----------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "message",
    [
        Summary(1, MAX_SUMMARY_ROUNDS + 1, MAX_SUMMARY_ROUNDS + 1, (0,), (0,)),
        Ids(1, MAX_SUMMARY_ROUNDS + 1, ()),
    ],
    ids=["summary", "ids"],
)
def test_a_message_wider_than_the_limit_is_refused_and_changes_nothing(
    message: SyncMessage,
) -> None:
    m = machine()
    perform(m, PeerMessage(P, status(9)), status(5), 0.0)
    with pytest.raises(InputRejected) as refused:
        m.step(PeerMessage(P, message), status(5), 0.0)
    assert refused.value.reason is Reason.BAD_SYNC
    assert m.statuses() == {P: status(9)}


@pytest.mark.parametrize("make", [Ids, None], ids=["ids", "summary"])
def test_the_widest_message_allowed_is_read(make: type[Ids] | None) -> None:
    m = machine()
    high = MAX_SUMMARY_ROUNDS
    message: SyncMessage = Ids(1, high, ()) if make else Summary(1, high, high, (0,), (0,))
    [read] = m.step(PeerMessage(P, message), status(5), 0.0)
    assert isinstance(read, ReadIds)
    assert (read.low, read.high) == (1, high)

"""Reading the committed leaders back from a DAG's ordered flags (what ``/api/v1/dag``
shows), against the commit rule: a leader ordered only as part of a later leader's
history was skipped, and is not one of them."""

from __future__ import annotations

from hashlib import blake2b

from qudag_node.core.consensus import committed_leaders
from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.types import VertexId
from tests.core.support import C

GENESIS = C.genesis
AUTHORS = GENESIS.ids


def vid(round_: int, author: int) -> VertexId:
    return VertexId(blake2b(f"{round_}/{author}".encode(), digest_size=32).digest())


def leader_of(round_: int) -> int:
    return C.index(round_)


def build() -> tuple[Dag, dict[int, VertexId]]:
    """Rounds 1..10 of four validators, each naming the whole round before, except:
    round 5's vertex X (not round 6's leader) alone names round 4's leader, and only
    round 6's vertex Y (not the leader) names X. So round 6's leader does not reach
    round 4's, but round 8's leader reaches it through Y and X: round 8's commit orders
    round 4's leader although that leader was skipped. Ordered: rounds 1..7 and round
    8's leader; rounds 9 and 10 not."""
    x_author = (leader_of(6) + 1) % 4
    y_author = (leader_of(6) + 2) % 4
    dag = Dag()
    leaders: dict[int, VertexId] = {}
    for round_ in range(1, 11):
        for author in range(4):
            parents = [vid(round_ - 1, a) for a in range(4)] if round_ > 1 else []
            if round_ == 5 and author != x_author:
                parents.remove(vid(4, leader_of(4)))
            if round_ == 6 and author != y_author:
                parents.remove(vid(5, x_author))
            v = DagVertex(vid(round_, author), round_, AUTHORS[author], tuple(parents), 0, 0)
            ordered = round_ <= 7 or (round_ == 8 and author == leader_of(8))
            dag.add(v, (), ordered)
        if round_ % 2 == 0:
            leaders[round_] = vid(round_, leader_of(round_))
    return dag, leaders


def test_the_chain_from_the_highest_ordered_leader_down() -> None:
    dag, leaders = build()
    found = [v.id for v in committed_leaders(GENESIS, dag, 1)]
    assert found == [leaders[8], leaders[6], leaders[2]]
    assert dag.is_ordered(leaders[4])  # ordered, yet skipped: not a committed leader
    assert not dag.is_ordered(leaders[10])  # above the last commit


def test_only_rounds_from_low_on_are_read() -> None:
    dag, leaders = build()
    assert [v.id for v in committed_leaders(GENESIS, dag, 5)] == [leaders[8], leaders[6]]
    assert [v.id for v in committed_leaders(GENESIS, dag, 9)] == []


def test_nothing_ordered_means_no_committed_leader() -> None:
    dag = Dag()
    dag.add(DagVertex(vid(2, 0), 2, AUTHORS[leader_of(2)], (), 0, 0), (), False)
    assert committed_leaders(GENESIS, dag, 1) == []
    assert committed_leaders(GENESIS, Dag(), 1) == []

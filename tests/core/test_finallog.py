"""The finalized log's deduplication window, alone and against a restart."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qudag_node.core.crypto import extend_log_hash, log_hash_start, tx_id
from qudag_node.core.dag import DagVertex
from qudag_node.core.finallog import FinalLog, id_keys
from qudag_node.core.types import NodeId, TxId, VertexId
from tests.core.support import GENESIS

START = log_hash_start(GENESIS.hash)


def vertex(round_: int, name: str) -> DagVertex:
    """A stand-in window vertex: only round and id matter to the log."""
    return DagVertex(VertexId(tx_id(name.encode())), round_, NodeId(b"\x00" * 32), (), 0, 0)


def ids(*names: str) -> tuple[TxId, ...]:
    """Transaction ids of short names."""
    return tuple(tx_id(n.encode()) for n in names)


def test_an_id_carried_twice_is_appended_once_with_its_first_carrier() -> None:
    log = FinalLog(0, START)
    a, b = vertex(1, "a"), vertex(2, "b")
    entries = log.append([(a, ids("x", "y", "x")), (b, ids("y", "z"))])
    assert [e.tx_id for e in entries] == list(ids("x", "y", "z"))
    assert [e.vertex for e in entries] == [a.id, a.id, b.id]
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.hash for e in entries] == extend_log_hash(START, list(ids("x", "y", "z")))
    later = log.append([(vertex(3, "c"), ids("z", "w"))])  # a later commit
    assert [(e.seq, e.tx_id) for e in later] == [(4, ids("w")[0])]
    assert (log.length, log.hash) == (4, later[-1].hash)


def test_an_id_leaves_the_window_with_the_last_round_that_ordered_it() -> None:
    log = FinalLog(0, START)
    log.append([(vertex(1, "a"), ids("x"))])
    log.append([(vertex(3, "b"), ids("x"))])  # skipped, but round 3 carried it too
    log.prune_below(2)
    assert log.contains(list(ids("x"))) == [True]
    log.prune_below(4)
    assert log.contains(list(ids("x", "y"))) == [False, False]
    # outside the window a copy is no longer recognised: appended again, everywhere alike
    assert [e.tx_id for e in log.append([(vertex(5, "c"), ids("x"))])] == list(ids("x"))


def test_keys_are_the_first_eight_bytes_of_each_id() -> None:
    x, y = ids("x", "y")
    assert id_keys([x, y]).tolist() == [int.from_bytes(x[:8]), int.from_bytes(y[:8])]
    assert id_keys([]).tolist() == []


COMMITS = st.lists(
    st.tuples(
        st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=4), min_size=1, max_size=3),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=12,
)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(COMMITS, st.integers(1, 4))
def test_a_window_rebuilt_after_a_restart_decides_like_the_live_one(
    commits: list[tuple[list[list[str]], int]], depth: int
) -> None:
    """Live: append commits, pruning to (round - depth) after each, as the engine does.
    Restarted: at every point, a log rebuilt from the ordered vertices still in the
    window makes the same decisions for the rest of the run."""
    live = FinalLog(0, START)
    ordered: list[tuple[int, tuple[TxId, ...]]] = []
    round_ = 0
    twins: list[FinalLog] = []
    for n, (vertices, gap) in enumerate(commits):
        round_ += 1 + gap
        batch = [(vertex(round_, f"{n}-{k}"), ids(*names)) for k, names in enumerate(vertices)]
        expected = live.append(batch)
        for twin in twins:
            assert twin.append(batch) == expected
        ordered += [(dv.round, tx) for dv, tx in batch]
        floor = round_ - depth
        live.prune_below(floor)
        for twin in twins:
            twin.prune_below(floor)
        rebuilt = FinalLog(live.length, live.hash)
        for r, tx in ordered:
            if r >= floor:
                rebuilt.remember(r, tx)
        twins.append(rebuilt)
        probe = list(ids(*"abcdefghij"))
        assert rebuilt.contains(probe) == live.contains(probe)

"""Retention over real database files: what the pruner deletes, and what it keeps.

Certified checkpoints are written as rows here (the pruner reads their number, round,
log length, timestamp, body and whether they carry a certificate), at leaders a real
one-validator engine committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qudag_node.core.checkpoint import Checkpoint, window_root
from qudag_node.core.crypto import Signer, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.events import LeaderCommitted
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.retention import Retention
from qudag_node.core.types import VertexId
from qudag_node.metrics import Metrics
from qudag_node.ports import HeldRange, Pruned
from qudag_node.retention import Pruner, RetentionSettings
from qudag_node.store import DB_FILENAME, LOG_BASE, Store
from tests.core.support import facts, moment

SIGNER = Signer(bytes(range(32)))
GENESIS = Genesis.solo("qudag-test", "node1", SIGNER.public_key)
PARAMS = Params(gc_depth=4, heartbeat_interval=0.5)


@dataclass(frozen=True)
class Commit:
    """What the log held right after a leader committed."""

    round: int
    leader: bytes
    log_length: int
    log_hash: bytes


@dataclass
class History:
    """A store grown by a real engine, and every leader it committed."""

    store: Store
    engine: Engine
    commits: dict[int, Commit]
    now: float = 0.0

    async def grow(self, rounds: int, per_round: int = 5) -> None:
        """Submit ``per_round`` transactions and step until the engine committed
        ``rounds`` more rounds, persisting every step."""
        target = self.engine.statistics().committed_round + rounds
        while self.engine.statistics().committed_round < target:
            txs = [f"tx {self.now:.3f} {i}".encode() for i in range(per_round)]
            self.engine.submit_transactions(tx_ids(txs), txs, moment(self.now))
            self.now += PARAMS.heartbeat_interval
            self.engine.handle_timer(moment(self.now))
            await self.persist()

    async def persist(self) -> None:
        """Persist what the engine produced, noting each leader it committed."""
        out = facts(self.engine)
        await self.store.persist(out)
        length, head = await self.store.log_head()
        for fact in out:
            if isinstance(fact, LeaderCommitted):
                assert head is not None
                self.commits[fact.round] = Commit(fact.round, fact.leader, length, head)

    def leader_round_near(self, round_: int) -> Commit:
        """The last commit at or below ``round_``."""
        return self.commits[max(r for r in self.commits if r <= round_)]


async def grown(tmp_path: Path, rounds: int) -> History:
    store = await Store.open(tmp_path, GENESIS)
    history = History(store, Engine(GENESIS, PARAMS, SIGNER), {})
    await history.grow(rounds)
    return history


def certify(path: Path, number: int, commit: Commit, timestamp_ms: int = 0) -> None:
    """Write a certified checkpoint row for ``commit`` into the database at ``path``."""
    checkpoint = Checkpoint(
        GENESIS.hash,
        number,
        commit.round,
        VertexId(commit.leader),
        timestamp_ms,
        commit.log_length,
        commit.log_hash,
        0,
        window_root([]),
    )
    with contextlib.closing(sqlite3.connect(path / DB_FILENAME, timeout=5)) as db, db:
        db.execute(
            "INSERT INTO checkpoints (number, round, log_length, timestamp_ms, body, window,"
            " certificate) VALUES (?, ?, ?, ?, ?, x'', x'01')",
            (number, commit.round, commit.log_length, timestamp_ms, checkpoint.encode()),
        )


def rows(path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows ``sql`` reads from the database at ``path``."""
    with contextlib.closing(sqlite3.connect(f"file:{path / DB_FILENAME}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchall()


def pruner(store: Store, dag: Retention, transactions: Retention | None = None) -> Pruner:
    settings = RetentionSettings(dag, dag if transactions is None else transactions, 4)
    return Pruner(store, settings, Metrics("0"))


async def test_pruning_deletes_below_the_kept_checkpoint_and_keeps_its_window(
    tmp_path: Path,
) -> None:
    h = await grown(tmp_path, 40)
    kept = h.leader_round_near(12)
    certify(tmp_path, 1, h.leader_round_near(6))
    certify(tmp_path, 2, kept)
    certify(tmp_path, 3, h.leader_round_near(36))
    # not final: admitted, never carried by a vertex
    loose = [b"loose 1", b"loose 2"]
    h.engine.submit_transactions(tx_ids(loose), loose, moment(h.now))
    await h.persist()
    head = await h.store.log_head()
    unfinal = rows(tmp_path, "SELECT tx FROM unfinal")
    assert len(unfinal) >= 2

    await pruner(h.store, Retention(rounds=20)).prune()  # keeps checkpoint 2: 36 - 20 >= 12

    floor = kept.round - 4
    assert rows(tmp_path, "SELECT min(round) FROM vertices") == [(floor,)]
    assert rows(tmp_path, "SELECT tx FROM unfinal") == unfinal  # never pruned
    assert rows(tmp_path, "SELECT count(*) FROM transactions t JOIN unfinal u ON u.tx = t.rowid")[
        0
    ] == (len(unfinal),)
    # no log entry at or below the base is left but those of the window's vertices
    assert rows(
        tmp_path,
        "SELECT count(*) FROM log l LEFT JOIN vertices v ON v.rowid = l.vertex"
        " WHERE l.seq <= ? AND (v.round IS NULL OR v.round < ?)",
        kept.log_length,
        floor,
    ) == [(0,)]
    assert rows(tmp_path, "SELECT min(seq) FROM log WHERE seq > ?", kept.log_length) == [
        (kept.log_length + 1,)
    ]
    # every vertex held can still be served whole, with its transactions
    held = rows(tmp_path, "SELECT id FROM vertices WHERE certificate IS NOT NULL")
    served = [m async for m in h.store.certified_messages([VertexId(bytes(r[0])) for r in held])]
    assert len(served) == len(held)
    assert rows(tmp_path, "SELECT number FROM checkpoints") == [(2,), (3,)]
    base = rows(tmp_path, "SELECT value FROM meta WHERE key = ?", LOG_BASE)[0][0]
    assert base == kept.log_length.to_bytes(8, "big") + kept.log_hash
    # the log's head and the totals did not move
    assert await h.store.log_head() == head
    assert (await h.store.totals()).log_length == head[0]
    assert await h.store.held_range() == HeldRange(floor, kept.log_length + 1)
    with pytest.raises(Pruned, match=f"from position {kept.log_length + 1}"):
        await h.store.log(kept.log_length, 10)
    page = await h.store.log(kept.log_length + 1, 3)
    assert [e.seq for e in page] == [kept.log_length + 1, kept.log_length + 2, kept.log_length + 3]
    with pytest.raises(Pruned, match="checkpoint 1 is not held"):
        await h.store.checkpoint(1)  # older than every one kept: gone, not missing
    assert await h.store.checkpoint(4) is None  # not made yet
    await h.store.close()


async def test_archive_or_no_checkpoint_old_enough_prunes_nothing(tmp_path: Path) -> None:
    h = await grown(tmp_path, 30)
    before = rows(tmp_path, "SELECT count(*) FROM vertices UNION ALL SELECT count(*) FROM log")
    await pruner(h.store, Retention(rounds=5)).prune()  # no checkpoint certified
    certify(tmp_path, 1, h.leader_round_near(10))
    certify(tmp_path, 2, h.leader_round_near(28))
    await pruner(h.store, Retention()).prune()  # archive
    await pruner(h.store, Retention(rounds=25)).prune()  # none 25 rounds before the latest
    after = rows(tmp_path, "SELECT count(*) FROM vertices UNION ALL SELECT count(*) FROM log")
    assert after == before
    assert await h.store.held_range() == HeldRange(1, 1)
    await h.store.close()


async def test_by_age_keeps_what_the_leaders_timestamps_say(tmp_path: Path) -> None:
    h = await grown(tmp_path, 30)
    minute = 60_000
    certify(tmp_path, 1, h.leader_round_near(8), timestamp_ms=0)
    certify(tmp_path, 2, h.leader_round_near(16), timestamp_ms=10 * minute)
    certify(tmp_path, 3, h.leader_round_near(28), timestamp_ms=21 * minute)
    await pruner(h.store, Retention(age_ms=11 * minute)).prune()  # 21 - 11 >= 10: keep 2
    kept = h.leader_round_near(16)
    assert await h.store.held_range() == HeldRange(kept.round - 4, kept.log_length + 1)
    await h.store.close()


async def test_transactions_kept_longer_than_the_dag(tmp_path: Path) -> None:
    h = await grown(tmp_path, 40)
    older, newer = h.leader_round_near(10), h.leader_round_near(20)
    certify(tmp_path, 1, older)
    certify(tmp_path, 2, newer)
    certify(tmp_path, 3, h.leader_round_near(38))
    await pruner(h.store, Retention(rounds=15), Retention(rounds=25)).prune()
    assert await h.store.held_range() == HeldRange(newer.round - 4, older.log_length + 1)
    page = await h.store.log(older.log_length + 1, 1000)
    assert page[0].seq == older.log_length + 1
    # entries whose vertex the DAG's retention pruned show none; later ones show theirs
    assert any(e.vertex is None for e in page)
    assert page[-1].vertex is not None
    assert [e.seq for e in page] == list(range(older.log_length + 1, page[-1].seq + 1))
    await h.store.close()


async def test_a_restart_after_pruning_resumes_with_the_same_log(tmp_path: Path) -> None:
    h = await grown(tmp_path, 40)
    certify(tmp_path, 1, h.leader_round_near(12))
    certify(tmp_path, 2, h.leader_round_near(38))
    await pruner(h.store, Retention(rounds=20)).prune()
    head = await h.store.log_head()
    stats = h.engine.statistics()
    await h.store.close()

    store = await Store.open(tmp_path, GENESIS)
    snapshot = await store.load_snapshot(GENESIS, PARAMS.gc_depth, SIGNER.node_id)
    assert (snapshot.log_length, snapshot.log_hash) == (stats.log_length, stats.log_hash)
    assert await store.log_head() == head
    engine = Engine(GENESIS, PARAMS, SIGNER, snapshot)
    resumed = History(store, engine, {}, h.now)
    await resumed.grow(10)  # and it goes on finalizing from there
    assert engine.statistics().log_length > stats.log_length
    await store.close()


async def test_commits_go_on_while_batches_run(tmp_path: Path) -> None:
    """Batches and the engine's transactions take turns on the one writer: both go on,
    and every commit made meanwhile is durable."""
    h = await grown(tmp_path, 60)
    certify(tmp_path, 1, h.leader_round_near(40))
    certify(tmp_path, 2, h.leader_round_near(58))
    prune = asyncio.create_task(pruner(h.store, Retention(rounds=10)).prune())
    await h.grow(10)
    await prune
    length, _ = await h.store.log_head()
    assert length == h.engine.statistics().log_length
    assert rows(tmp_path, "SELECT min(round) FROM vertices") == [
        (h.leader_round_near(40).round - 4,)
    ]
    await h.store.close()

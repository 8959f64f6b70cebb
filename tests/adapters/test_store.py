"""The SQLite store over real database files."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from bench.history import Committee, certified_rounds, persist_history
from qudag_node.core.checkpoint import check_certified
from qudag_node.core.checkpoints import KEEP
from qudag_node.core.crypto import SequentialVerifier, Signer, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.events import (
    CheckpointMade,
    Fact,
    LeaderCommitted,
    LogEntry,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.types import Seq, VertexId
from qudag_node.store import (
    DAG_WINDOW_SQL,
    DB_FILENAME,
    SCHEMA_VERSION,
    WAL_CHECKPOINT_PAGES,
    Store,
    StoreError,
    backup_database,
    restore_database,
)
from tests.conftest import NodeFactory
from tests.core.support import drain, facts, moment

SIGNER = Signer(bytes(range(32)))
GENESIS = Genesis.solo("qudag-test", "node1", SIGNER.public_key)


async def drive(engine: Engine, store: Store, now: float, until: float) -> float:
    """Step the engine on a manual clock, persisting each step, until ``until``."""
    while True:
        timer = engine.get_timer()
        if timer is None or timer > until:
            return now
        now = max(now, timer)
        engine.handle_timer(moment(now))
        await store.persist(facts(engine))


async def test_new_database_is_wal_and_migrated(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    await store.close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "vertices", "transactions", "log"} <= tables


async def test_database_refuses_another_network(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    await store.close()
    other = Genesis.solo("qudag-other", "node1", SIGNER.public_key)
    with pytest.raises(StoreError) as info:
        await Store.open(tmp_path, other)
    assert info.value.code == "wrong_network"
    assert "qudag-test" in str(info.value)


def damage_table(path: Path, table: str) -> int:
    """Overwrite the page headers of the older half of ``table``'s leaf pages (or of its
    only page) in the closed database at ``path``; returns the pages damaged."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        pages = [
            r[0]
            for r in db.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
    damaged = pages[: max(1, len(pages) // 2)]
    with path.open("r+b") as fh:
        for page in damaged:
            fh.seek((page - 1) * page_size)
            fh.write(b"\xa5" * 64)
    return len(damaged)


async def test_damage_is_found_by_the_integrity_check_not_at_open(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    engine = Engine(GENESIS, Params(), SIGNER)
    txs = [f"tx{i}".encode() * 40 for i in range(3000)]
    engine.submit_transactions(tx_ids(txs), txs, moment(0.0))
    await drive(engine, store, 0.0, 1.0)
    await store.check_integrity()  # an intact file passes
    before = await store.totals()
    await store.close()
    assert damage_table(tmp_path / DB_FILENAME, "transactions") >= 10
    store = await Store.open(tmp_path, GENESIS)  # opening reads none of those pages
    try:
        assert await store.totals() == before
        with pytest.raises(StoreError) as info:
            await store.check_integrity()
    finally:
        await store.close()
    assert info.value.code == "corrupt"
    # SQLite's own report of the damaged pages: "Page 5: ..." up to SQLite 3.40
    # (bookworm), "Tree 6 page 137: ..." in 3.46 (trixie)
    assert re.match(r"database integrity check failed: (Tree \d+ page|Page) \d+: ", str(info.value))
    assert "\n" not in str(info.value)


async def test_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        await Store.open(tmp_path, GENESIS)
    assert info.value.code == "corrupt"


async def test_statuses_and_log_follow_the_engine(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    engine = Engine(GENESIS, Params(), SIGNER)
    txs = [b"alpha", b"beta", b"gamma"]
    ids = tx_ids(txs)
    engine.handle_timer(moment(0.0))
    await store.persist(facts(engine))
    engine.submit_transactions(ids, txs, moment(0.001))
    events = facts(engine)
    await store.persist([e for e in events if isinstance(e, TransactionsAdmitted)])
    record = await store.transaction(ids[0])
    assert record is not None
    assert (record.size, record.seq, record.vertex) == (5, None, None)
    assert await store.final_among(ids) == set()
    await store.persist([e for e in events if not isinstance(e, TransactionsAdmitted)])
    await drive(engine, store, 0.001, 5.0)
    stats = engine.statistics()
    assert stats.log_length == 3
    entries = await store.log(1, 10)
    assert [e.tx_id for e in entries] == ids
    assert entries[-1].hash == stats.log_hash
    for seq, i in enumerate(ids, start=1):
        rec = await store.transaction(i)
        assert rec is not None
        assert rec.seq == seq
        assert rec.vertex == entries[0].vertex
    assert entries[0].vertex is not None
    vertex = await store.vertex(entries[0].vertex)
    assert vertex is not None
    assert vertex.tx_ids == tuple(ids)
    assert vertex.ordered
    assert await store.known_ids([*ids, tx_ids([b"unknown"])[0]]) == set(ids)
    assert await store.final_among(ids) == set(ids)
    totals = await store.totals()
    assert (totals.transactions, totals.log_length) == (3, 3)
    await store.close()


async def test_snapshot_resumes_an_identical_log(tmp_path: Path) -> None:
    """A restarted engine continues exactly as one that never stopped."""
    params = Params(gc_depth=4)
    store = await Store.open(tmp_path, GENESIS)
    steady = Engine(GENESIS, params, SIGNER)
    restarted = Engine(GENESIS, params, SIGNER)
    now = 0.0
    for batch in range(30):
        txs = [f"b{batch}-{k}".encode() for k in range(7)]
        ids = tx_ids(txs)
        for engine in (steady, restarted):
            engine.submit_transactions(ids, txs, moment(now))
        await store.persist(facts(restarted))
        drain(steady)
        # both engines step on the same clock; only `restarted` is persisted
        until = now + 0.12
        t = now
        while (timer := steady.get_timer()) is not None and timer <= until:
            t = max(t, timer)
            steady.handle_timer(moment(t))
            drain(steady)
            restarted.handle_timer(moment(t))
            await store.persist(facts(restarted))
        now = until
        if batch % 5 == 4:
            await store.close()
            store = await Store.open(tmp_path, GENESIS)
            snap = await store.load_snapshot(GENESIS, params.gc_depth, SIGNER.node_id)
            assert len(snap.vertices) <= params.gc_depth + 3
            restarted = Engine(GENESIS, params, SIGNER, snap)
            restarted.handle_timer(moment(now))
            await store.persist(facts(restarted))
    a, b = steady.statistics(), restarted.statistics()
    assert (a.log_length, a.log_hash) == (b.log_length, b.log_hash)
    assert a.log_length == 30 * 7
    assert b.dag_window <= params.gc_depth + 3
    await store.close()


async def test_pending_transactions_survive_a_restart(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    txs = [b"one", b"two"]
    await store.persist([TransactionsAdmitted(tuple(tx_ids(txs)), tuple(txs))])
    await store.close()
    store = await Store.open(tmp_path, GENESIS)
    snap = await store.load_snapshot(GENESIS, 50, SIGNER.node_id)
    assert snap.pending == tuple(zip(tx_ids(txs), txs, strict=True))
    await store.close()


async def test_writes_are_seen_and_kept_only_once_committed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    first, second = [b"first"], [b"second"]
    assert not await store.write([])  # nothing to store opens no transaction
    assert await store.write([TransactionsAdmitted(tuple(tx_ids(first)), tuple(first))])
    assert await store.write([TransactionsAdmitted(tuple(tx_ids(second)), tuple(second))])
    both = tx_ids(first + second)
    assert await store.known_ids(both) == set()  # the read connection sees no open work
    await store.commit()
    assert await store.known_ids(both) == set(both)
    third = [b"third"]
    assert await store.write([TransactionsAdmitted(tuple(tx_ids(third)), tuple(third))])
    await store.close()  # an open transaction is rolled back, never half kept
    store = await Store.open(tmp_path, GENESIS)
    snap = await store.load_snapshot(GENESIS, 50, SIGNER.node_id)
    assert [i for i, _ in snap.pending] == both
    await store.close()


async def test_log_entries_with_a_gap_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path, GENESIS)
    try:
        txs = [b"one", b"two"]
        ids = tx_ids(txs)
        vertex = VertexId(bytes(32))
        entries = tuple(
            LogEntry(Seq(seq), i, vertex, bytes(32)) for seq, i in zip((1, 3), ids, strict=True)
        )
        with pytest.raises(ValueError, match="consecutive"):
            await store.write([LeaderCommitted(2, vertex, (vertex,), entries)])
        assert not await store.write([])  # no transaction was opened
    finally:
        await store.close()


async def test_a_commit_checkpoints_only_past_the_wal_threshold(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    try:
        main = tmp_path / DB_FILENAME
        size = main.stat().st_size

        async def commit_pages(pages: int, tag: bytes) -> None:
            txs = [tag + i.to_bytes(4, "big") * 1000 for i in range(pages)]  # 4 KiB each
            await store.persist([TransactionsAdmitted(tuple(tx_ids(txs)), tuple(txs))])

        await commit_pages(WAL_CHECKPOINT_PAGES // 2, b"a")  # past SQLite's own 1,000
        assert main.stat().st_size == size  # all still in the WAL
        await commit_pages(WAL_CHECKPOINT_PAGES // 2 + 100, b"b")
        assert main.stat().st_size > size + WAL_CHECKPOINT_PAGES * 4000  # copied over
    finally:
        await store.close()


async def test_backup_and_restore_refuse_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = await Store.open(data, GENESIS)
    await store.close()
    target = tmp_path / "backup.db"
    seen: list[tuple[int, int]] = []
    pages = await asyncio.to_thread(
        backup_database, data / DB_FILENAME, target, lambda d, t: seen.append((d, t))
    )
    assert pages > 0
    assert seen[-1][0] == seen[-1][1]
    with pytest.raises(StoreError) as info:
        backup_database(data / DB_FILENAME, target)
    assert info.value.code == "exists"
    with pytest.raises(StoreError) as info:
        restore_database(target, data)
    assert info.value.code == "not_empty"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"junk" * 1000)
    with pytest.raises(StoreError) as info:
        restore_database(junk, tmp_path / "fresh")
    assert info.value.code == "corrupt"
    restore_database(target, tmp_path / "fresh")
    assert (tmp_path / "fresh" / DB_FILENAME).is_file()


async def test_group_commit_batches_concurrent_clients(node_factory: NodeFactory) -> None:
    """Many concurrent submits share engine steps: far fewer commits than clients."""
    handle = await node_factory(QUDAG_MIN_ROUND_INTERVAL="0.2")
    clients = 200

    async def one(session: aiohttp.ClientSession, i: int) -> int:
        async with session.post(
            handle.url + "/api/v1/transactions",
            data=f"client-{i}".encode(),
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            return resp.status

    async def commits(session: aiohttp.ClientSession) -> float:
        async with session.get(handle.url + "/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("qudag_store_commit_seconds_count"):
                return float(line.split()[-1])
        raise AssertionError("no commit count in /metrics")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await commits(session)
        statuses = await asyncio.gather(*(one(session, i) for i in range(clients)))
        after = await commits(session)
    assert statuses == [202] * clients
    assert after - before < clients / 4, f"{after - before} commits for {clients} clients"


async def test_backup_to_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, GENESIS)
    await store.close()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StoreError) as info:
        backup_database(tmp_path / DB_FILENAME, blocker / "backup.db")
    assert info.value.code == "no_directory"
    out = tmp_path / "out"
    (out / "backup.db.partial").mkdir(parents=True)  # the copy cannot be created
    with pytest.raises(StoreError) as info:
        backup_database(tmp_path / DB_FILENAME, out / "backup.db")
    assert info.value.code == "io"
    assert "backup to" in str(info.value)
    with pytest.raises(StoreError) as info:
        restore_database(tmp_path / DB_FILENAME, blocker / "data")
    assert info.value.code == "io"


async def test_certified_ids_packs_the_certified_vertices_of_a_range(tmp_path: Path) -> None:
    committee = Committee.generate(4)
    rounds = list(certified_rounds(committee, 6, 1_000_000))
    uncertified = rounds[2][1][0].id  # one vertex of round 3 is stored without certificate
    events: list[Fact] = []
    for number, made in enumerate(rounds, start=1):
        for vertex, certificate in made:
            events.append(VertexStored(vertex, own=False))
            if vertex.id != uncertified:
                events.append(VertexCertified(vertex.id, number, certificate))
    store = await Store.open(tmp_path, committee.genesis)
    try:
        await store.persist(events)
        certified = await store.certified_ids(2, 5)
        beyond = await store.certified_ids(7, 9)
    finally:
        await store.close()
    expected = [
        (number, vertex.id)
        for number, made in enumerate(rounds, start=1)
        for vertex, _ in made
        if 2 <= number <= 5 and vertex.id != uncertified
    ]
    assert list(certified.rounds) == [r for r, _ in expected]  # sorted by round
    assert sorted(zip(certified.rounds, certified.between(2, 5), strict=True)) == sorted(expected)
    assert set(certified.between(3, 3)) == {i for r, i in expected if r == 3}
    assert len(certified.between(3, 3)) == 3
    assert (len(beyond), beyond.between(1, 9)) == (0, ())


async def test_checkpoints_are_kept_served_once_certified_and_resumed(tmp_path: Path) -> None:
    params = Params(checkpoint_interval=2)
    store = await Store.open(tmp_path, GENESIS)
    engine = Engine(GENESIS, params, SIGNER)
    now = 0.0
    for k in range(4):
        txs = [f"cp{k}".encode()]
        engine.submit_transactions(tx_ids(txs), txs, moment(now))
        await store.persist(facts(engine))
        now = await drive(engine, store, now, now + 0.5)
    latest = await store.latest_checkpoint()
    assert latest is not None
    cp = latest.certified.checkpoint
    assert engine.statistics().checkpoint == cp
    check_certified(latest.certified, GENESIS, SequentialVerifier())
    assert cp.holds_window(latest.window)
    assert list(latest.window) == sorted(latest.window)
    assert await store.checkpoint(cp.number) == latest
    first = await store.checkpoint(1)
    assert first is not None
    assert first.certified.checkpoint.round < cp.round
    assert await store.checkpoint(cp.number + 1) is None
    # a checkpoint made here but not certified is kept, not served
    unsigned = dataclasses.replace(cp, number=cp.number + 1, round=cp.round + 2)
    await store.persist([CheckpointMade(unsigned, latest.window)])
    assert await store.checkpoint(unsigned.number) is None
    assert await store.latest_checkpoint() == latest
    snapshot = await store.load_snapshot(GENESIS, params.gc_depth, SIGNER.node_id)
    kept = snapshot.checkpoints
    assert [(k.checkpoint.number, k.certified) for k in kept][-2:] == [
        (cp.number, True),
        (unsigned.number, False),
    ]
    assert len(kept) == KEEP
    # restarted on it, the node signs the uncertified one again: alone, that certifies it
    again = Engine(GENESIS, params, SIGNER, snapshot)
    assert again.statistics().checkpoint == unsigned
    await store.persist(facts(again))
    resumed = await store.latest_checkpoint()
    assert resumed is not None
    assert resumed.certified.checkpoint == unsigned
    check_certified(resumed.certified, GENESIS, SequentialVerifier())
    await store.close()


async def test_the_dag_window_reads_the_last_rounds_by_the_round_index(tmp_path: Path) -> None:
    committee = Committee.generate(4)
    await persist_history(tmp_path, committee, 9, 1_000_000)  # even leaders committed
    made = {v.id: v for r in certified_rounds(committee, 9, 1_000_000) for v, _ in r}
    store = await Store.open(tmp_path, committee.genesis)
    try:
        window = await store.dag_window(4, 100)
        capped = await store.dag_window(4, 5)
        everything = await store.dag_window(50, 1000)
    finally:
        await store.close()
    assert [r.round for r in window] == [9] * 4 + [8] * 4 + [7] * 4 + [6] * 4
    for record in window:
        vertex = made[record.id]
        assert (record.author, record.parents) == (vertex.author, vertex.parents)
        assert record.certified
        assert record.ordered == (record.round <= 8)  # round 8's leader ordered them
    assert capped == window[:5]
    assert len(everything) == 36
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        plan = " ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + DAG_WINDOW_SQL, (4, 5)))
    assert "SEARCH vertices USING INDEX vertices_round (round>?)" in plan  # the range
    assert "SEARCH vertices USING COVERING INDEX vertices_round" in plan  # the highest round
    assert "SCAN" not in plan

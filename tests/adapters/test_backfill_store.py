"""Backfill through a real store: entries staged, landed on the base in batches, and
served as any log entry; the base moves down and survives a restart."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from qudag_node.core.backfill import Anchor, KeepCheckpoint, LandSegment, Resume, StageEntries
from qudag_node.core.crypto import log_hash_start
from qudag_node.core.syncwire import CheckpointOffer, WireEntry
from qudag_node.ports import LogRecord, Pruned
from qudag_node.store import DB_FILENAME, Store
from tests.core.checkpoints import Network, network


def below_base(net: Network) -> list[WireEntry]:
    """The entries of a validator's log up to the checkpoint's position."""
    length = net.certified.checkpoint.log_length
    return [
        WireEntry(e.tx_id, e.vertex, net.store.transactions[e.tx_id])
        for e in net.store.log[:length]
    ]


def staged_rows(path: Path) -> int:
    with sqlite3.connect(path / DB_FILENAME) as db:
        (count,) = db.execute("SELECT count(*) FROM backfill_stage").fetchone()
    return int(count)


async def joined(path: Path, net: Network) -> Store:
    store = await Store.open(path, net.genesis)
    vertices = net.vertices()
    await store.install_checkpoint(net.certified, net.window, [vertices[v] for v in net.window])
    return store


async def test_a_landed_segment_is_served_and_moves_the_base_down(tmp_path: Path) -> None:
    net = network()
    cp = net.certified.checkpoint
    entries = below_base(net)
    assert len(entries) == cp.log_length > 0
    hashes = tuple(e.hash for e in net.store.log[: cp.log_length])
    store = await joined(tmp_path, net)
    try:
        assert await store.backfill_base() == Anchor(cp.number, cp.log_length, cp.log_hash)
        half = len(entries) // 2
        await store.stage_backfill(StageEntries(1, tuple(entries[:half]), hashes[:half]))
        await store.stage_backfill(StageEntries(half + 1, tuple(entries[half:]), hashes[half:]))
        assert staged_rows(tmp_path) == len(entries)
        with pytest.raises(Pruned):  # staged is not served
            await store.log(1, 10)
        assert await store.log_entries(1, 10, 1 << 20) == []

        start = Anchor(0, 0, log_hash_start(net.genesis.hash))
        await store.land_backfill(LandSegment(start))
        assert staged_rows(tmp_path) == 0
        assert await store.backfill_base() is None
        assert await store.log_base() == 0
        assert await store.log_prefix(cp.log_length + 1) == Anchor(0, cp.log_length, cp.log_hash)
        expected = [LogRecord(e.seq, e.tx_id, e.vertex, e.hash) for e in net.store.log]
        assert await store.log(1, len(entries)) == expected[: len(entries)]
        assert await store.log_head() == (cp.log_length, cp.log_hash)
        assert await store.log_entries(1, len(entries), 1 << 20) == entries
        assert await store.log_entries(1, len(entries), 1) == entries[:1]  # whole entries
        stored = await store.transaction(entries[-1].tx_id)
        assert stored is not None
        assert (stored.final, stored.seq) == (True, len(entries))
        assert stored.vertex == entries[-1].vertex_id
    finally:
        await store.close()
    store = await Store.open(tmp_path, net.genesis)  # a restart keeps the whole log
    try:
        assert await store.backfill_base() is None
        assert len(await store.log(1, len(entries))) == len(entries)
    finally:
        await store.close()


async def test_a_landing_moves_the_base_only_to_its_anchor(tmp_path: Path) -> None:
    net = network()
    cp = net.certified.checkpoint
    entries = below_base(net)
    hashes = tuple(e.hash for e in net.store.log[: cp.log_length])
    mid = len(entries) // 3
    store = await joined(tmp_path, net)
    try:
        await store.stage_backfill(StageEntries(1, (entries[0],), hashes[:1]))
        await store.discard_backfill()  # a segment that did not check
        assert staged_rows(tmp_path) == 0
        await store.stage_backfill(StageEntries(mid + 1, tuple(entries[mid:]), hashes[mid:]))
        anchor = Anchor(1, mid, hashes[mid - 1])
        await store.land_backfill(LandSegment(anchor))
        assert await store.backfill_base() == Anchor(0, mid, hashes[mid - 1])
        assert await store.log_prefix(mid) is None  # position 1 is not held
        with pytest.raises(Pruned) as e:
            await store.log(mid, 1)
        assert e.value.base == mid
        (first,) = await store.log(mid + 1, 1)
        assert (first.seq, first.tx_id) == (mid + 1, entries[mid].tx_id)
    finally:
        await store.close()


async def test_a_restart_resumes_after_the_last_staged_entry(tmp_path: Path) -> None:
    net = network()
    cp = net.certified.checkpoint
    entries = below_base(net)
    hashes = tuple(e.hash for e in net.store.log[: cp.log_length])
    start_hash = log_hash_start(net.genesis.hash)
    store = await joined(tmp_path, net)
    base = Anchor(cp.number, cp.log_length, cp.log_hash)
    try:
        assert await store.backfill_resume(base, start_hash) is None  # nothing staged
        await store.stage_backfill(StageEntries(1, tuple(entries[:5]), hashes[:5]))
    finally:
        await store.close()
    store = await Store.open(tmp_path, net.genesis)
    try:
        # no checkpoint below the base is held: the segment runs from the genesis start
        assert await store.backfill_resume(base, start_hash) == Resume(
            Anchor(0, 0, start_hash), 6, hashes[4]
        )
        await store.discard_backfill()
        # an anchor kept below the base: staged entries must follow it without a gap
        offer = CheckpointOffer(
            net.signed(
                dataclasses.replace(cp, number=cp.number - 1, log_length=3, log_hash=hashes[2]),
                range(net.genesis.quorum),
            ),
            (),
        )
        await store.keep_checkpoint(KeepCheckpoint(offer))
        await store.stage_backfill(StageEntries(4, tuple(entries[3:8]), hashes[3:8]))
        assert await store.backfill_resume(base, start_hash) == Resume(
            Anchor(cp.number - 1, 3, hashes[2]), 9, hashes[7]
        )
        assert await store.checkpoint(cp.number - 1) is not None  # served from here on
        await store.stage_backfill(StageEntries(10, (entries[9],), hashes[9:10]))  # a gap
        assert await store.backfill_resume(base, start_hash) is None
    finally:
        await store.close()

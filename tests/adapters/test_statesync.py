"""State sync through the adapters: the store's install, and an observer that joins
validators holding a certified history, over real sockets and SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bench.history import Committee, persist_loaded_history
from qudag_node.core.crypto import SequentialVerifier, Signer
from qudag_node.core.engine import Engine
from qudag_node.core.params import Params
from qudag_node.core.resume import snapshot_from_checkpoint
from qudag_node.core.syncwire import Holdings
from qudag_node.core.types import PeerId
from qudag_node.ports import CheckpointRecord, Pruned
from qudag_node.store import DB_FILENAME, Store
from tests.conftest import NodeFactory, NodeHandle
from tests.core.checkpoints import network

WALL = 4_000_000_000.0
DEADLINE = 20.0


async def test_an_installed_checkpoint_is_what_the_engine_and_the_api_read(
    tmp_path: Path,
) -> None:
    net = network()
    cp = net.certified.checkpoint
    params = net.sim.params
    vertices = net.vertices()
    store = await Store.open(tmp_path, net.genesis)
    try:
        await store.install_checkpoint(net.certified, net.window, [vertices[v] for v in net.window])
        signer = net.sim.nodes[PeerId("v0")].signer
        loaded = await store.load_snapshot(net.genesis, params.gc_depth, signer.node_id)
        expected = snapshot_from_checkpoint(
            net.certified, net.window, vertices, net.genesis, params, WALL, SequentialVerifier()
        )
        assert (loaded.log_length, loaded.log_hash, loaded.committed_round) == (
            cp.log_length,
            cp.log_hash,
            cp.round,
        )
        assert sorted(v.id for v in loaded.vertices) == sorted(v.id for v in expected.vertices)
        assert all(v.ordered and v.certificate is not None for v in loaded.vertices)
        assert loaded.pending == ()  # the window's transactions are final
        engine = Engine(net.genesis, params, signer, loaded, verifier=SequentialVerifier())
        assert engine.statistics().log_hash == cp.log_hash

        assert await store.log_head() == (cp.log_length, cp.log_hash)
        assert (await store.totals()).log_length == cp.log_length
        held = CheckpointRecord(net.certified, net.window)
        assert await store.latest_checkpoint() == held
        assert await store.checkpoint(cp.number) == held
        assert await store.checkpoint(cp.number + 1) is None
        oldest = min(vertices[v][0].round for v in net.window)
        assert await store.holdings() == Holdings(oldest, cp.number, cp.round)

        ids = [i for v in net.window for i in vertices[v][0].tx_ids]
        assert ids, "the window carries transactions"
        assert await store.known_ids(ids) == set(ids)
        assert await store.final_among(ids) == set(ids)
        assert await store.transactions_data(ids) == []
        stored = await store.transaction(ids[0])
        assert stored is not None
        assert (stored.final, stored.seq) == (True, None)  # final, at a position not held
        with pytest.raises(Pruned) as e:
            await store.log(1, 10)
        assert e.value.base == cp.log_length
        assert await store.log(cp.log_length + 1, 10) == []
        served = [m async for m in store.certified_messages(list(net.window))]
        assert len(served) == len(net.window)  # the window can be served to the next joiner
    finally:
        await store.close()
    store = await Store.open(tmp_path, net.genesis)  # a restart resumes from the same state
    try:
        again = await store.load_snapshot(net.genesis, params.gc_depth, signer.node_id)
        assert again == loaded
    finally:
        await store.close()


async def _log(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(f"{url}/api/v1/status") as r:
        body = await r.json()
    log = body["log"]
    assert isinstance(log, dict)
    return log


async def _until_log(session: aiohttp.ClientSession, url: str, length: int) -> dict[str, object]:
    """The node's log head once it is ``length`` long (polled: the node has no event
    to wait on over HTTP)."""
    async with asyncio.timeout(DEADLINE):
        while (log := await _log(session, url))["length"] != length:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return log


async def _whole_log(session: aiohttp.ClientSession, url: str, length: int) -> list[object]:
    """Every entry of the node's log from position 1, a page at a time."""
    entries: list[object] = []
    while len(entries) < length:
        async with session.get(f"{url}/api/v1/log?from={len(entries) + 1}&limit=1000") as r:
            assert r.status == 200, await r.text()
            page = (await r.json())["entries"]
        assert page
        entries += page
    return entries


async def _until_backfilled(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """The node's backfill status once its log is held from position 1 (polled)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            async with session.get(f"{url}/api/v1/status") as r:
                backfill: dict[str, object] = (await r.json())["sync"]["backfill"]
            if backfill["base"] == 0:
                return backfill
            await asyncio.sleep(0.05)


async def _validators(
    node_factory: NodeFactory, tmp_path: Path, tamper: Callable[[Path], None] | None = None
) -> tuple[list[NodeHandle], dict[str, str], int]:
    """Four validators started on a written history of two certified checkpoints (the
    first one's database passed to ``tamper``, if given), the settings every node of
    their network shares, and the history's log length."""
    committee = Committee.generate(4)
    source = tmp_path / "history"
    source.mkdir()
    start_ms = int(time.time() * 1000) - 3_600_000
    length, checkpoints = await persist_loaded_history(
        source, committee, Params(), 202, 10, 48, start_ms
    )
    assert checkpoints == 2
    common = {
        "QUDAG_NETWORK_ID": committee.genesis.network_id,
        "QUDAG_VALIDATORS": committee.validator_list(),
        "PEER_AUTH_TOKEN": secrets.token_hex(32),
    }
    validators: list[NodeHandle] = []
    for k, signer in enumerate(committee.signers):
        data_dir = tmp_path / f"v{k + 1}"
        data_dir.mkdir()
        shutil.copyfile(source / DB_FILENAME, data_dir / DB_FILENAME)
        if tamper is not None and not k:
            tamper(data_dir / DB_FILENAME)
        earlier = ",".join(f"127.0.0.1:{v.p2p_port}" for v in validators)
        validators.append(  # linked to those started before: the four make rounds
            await node_factory(
                **common,
                NODE_ID=f"v{k + 1}",
                NODE_PRIVATE_KEY=Signer.seed(signer).hex(),
                QUDAG_DATA_DIR=str(data_dir),
                **({"QUDAG_PEERS": earlier} if earlier else {}),
            )
        )
    return validators, common, length


@pytest.mark.parametrize(("mode", "backfill"), [("on", "off"), ("off", "on"), ("on", "on")])
async def test_an_observer_joins_validators_from_their_latest_checkpoint(
    node_factory: NodeFactory, tmp_path: Path, mode: str, backfill: str
) -> None:
    validators, common, length = await _validators(node_factory, tmp_path)
    peers = ",".join(f"127.0.0.1:{v.p2p_port}" for v in validators)
    observer = await node_factory(
        **common,
        NODE_ID="observer",
        QUDAG_PEERS=peers,
        QUDAG_STATE_SYNC=mode,
        QUDAG_BACKFILL=backfill,
    )
    # the last round's other vertices are ordered by the validators' next leader
    length += 3 * 10
    async with aiohttp.ClientSession() as session:
        theirs = await _until_log(session, validators[0].url, length)
        ours = await _until_log(session, observer.url, length)
        assert ours["hash"] == theirs["hash"]
        async with session.get(f"{observer.url}/api/v1/status") as r:
            state_sync = (await r.json())["sync"]["state_sync"]
        async with session.get(f"{observer.url}/api/v1/log?from=1&limit=1") as r:
            first = (r.status, await r.json())
        if mode == "on" and backfill == "on":
            # the log before the checkpoint comes from the validators, which hold it all
            progress = await _until_backfilled(session, observer.url)
            assert progress["active"] is False
            assert state_sync["done"] == 1
            entries = progress["entries"]
            assert isinstance(entries, int)
            assert 0 < entries < length  # what lay below the joined checkpoint
            assert await _whole_log(session, observer.url, length) == await _whole_log(
                session, validators[0].url, length
            )
            return
    if mode == "off":
        assert state_sync["done"] == 0
        assert first[0] == 200
        return
    assert state_sync["done"] == 1
    assert state_sync["last_seconds"] is not None
    assert first[0] == 410
    assert first[1]["error"]["code"] == "pruned"
    assert 0 < first[1]["base"] < length


def _swap_first_two_entries(database: Path) -> None:
    """Make a validator's log serve its first two transactions in the wrong order."""
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        (a,), (b,) = db.execute("SELECT tx FROM log WHERE seq IN (1, 2) ORDER BY seq")
        db.execute("UPDATE log SET tx = ? WHERE seq = 1", (b,))
        db.execute("UPDATE log SET tx = ? WHERE seq = 2", (a,))


async def test_a_segment_that_misses_the_certified_hash_is_fetched_again_from_another_peer(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    """v1 (asked first: peers are tried in name order) serves real transactions in the
    wrong order; the observer drops its segment, counts it, and takes it from v2."""
    validators, common, length = await _validators(
        node_factory, tmp_path, tamper=_swap_first_two_entries
    )
    peers = ",".join(f"127.0.0.1:{v.p2p_port}" for v in validators)
    observer = await node_factory(**common, NODE_ID="observer", QUDAG_PEERS=peers)
    length += 3 * 10
    async with aiohttp.ClientSession() as session:
        await _until_log(session, observer.url, length)
        await _until_backfilled(session, observer.url)
        honest = await _whole_log(session, validators[1].url, length)
        assert await _whole_log(session, observer.url, length) == honest
        assert await _whole_log(session, validators[0].url, 2) != honest[:2]
        async with session.get(f"{observer.url}/metrics") as r:
            metrics = await r.text()
    counted = re.search(
        r'^qudag_messages_rejected_total\{reason="bad_sync"\} (\S+)$', metrics, re.M
    )
    assert counted is not None
    assert float(counted.group(1)) >= 1  # v1's segment, dropped

"""A fresh node joins a four-validator network by state sync, against replaying it all.

The network's history is written straight into one database with the node's own core
functions (:func:`bench.history.persist_loaded_history`: vertices carrying
transactions, every even round's leader committed, a certified checkpoint every 100
rounds, the history ending two rounds after one), then copied into four validators'
data dirs; the validators start on it and continue. An observer then starts on an
empty data dir with the four as its peers; our figure is the time from its process
start until its log reaches the history's length (the checkpoint's window fetched
and checked, the rounds after it caught up by replay), and its running hash there
must equal the validators'. It is measured for two histories ten times apart, with
the same transactions per vertex, to show that it does not grow with the history.

The reference, in the same run: another fresh observer with ``QUDAG_STATE_SYNC=off``,
which replays the whole history from the validators.
"""

from __future__ import annotations

import math
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.history import Committee, persist_loaded_history
from bench.lab import Lab
from bench.nodes import NodeProcess, log_head, wait_for_log, wait_until_ready
from bench.ports import free_port_block
from bench.report import Row
from qudag_node.core.params import Params
from qudag_node.store import DB_FILENAME

GOAL_SECONDS = 15.0
#: Bytes of each history transaction (small: the history is written, not measured).
HISTORY_TX_SIZE = 64
#: Seconds allowed for a join or a replay.
JOIN_TIMEOUT = 1800.0
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Joined:
    """One history's figures."""

    transactions: int
    rounds: int
    checkpoints: int
    built: float
    join: float
    replay: float


def history_shape(transactions: int, per_vertex: int) -> tuple[int, int]:
    """Rounds (ending two rounds after a checkpoint of the default interval) and
    transactions per vertex that make about ``transactions`` in a four-validator history."""
    interval = Params().checkpoint_interval
    rounds = max(1, round(transactions / (4 * per_vertex) / interval)) * interval + 2
    return rounds, math.ceil(transactions / (4 * rounds))


async def _join_time(
    session: aiohttp.ClientSession,
    directory: Path,
    name: str,
    base: dict[str, str],
    length: int,
    head: tuple[int, str],
    state_sync: str,
) -> float:
    """Seconds from a fresh observer's start until its log is ``length`` long; its hash
    there must be ``head``'s."""
    # backfill off: the figure is the join alone, without the log before the checkpoint
    # being fetched meanwhile (see docs/protocol.md#backfill)
    settings = {**base, "NODE_ID": name, "QUDAG_STATE_SYNC": state_sync, "QUDAG_BACKFILL": "off"}
    observer = NodeProcess(directory / name, settings)
    await observer.start(ready=False)
    try:
        reached = await wait_for_log(session, observer.url, length, JOIN_TIMEOUT)
        ours = await log_head(session, observer.url)
        if ours != head:
            raise RuntimeError(f"{name}: log head {ours}, the validators' is {head}")
        return reached - observer.started_at
    finally:
        await observer.stop()


async def measure(lab: Lab, transactions: int, per_vertex: int) -> Joined:
    """Build a history of about ``transactions``, start four validators on it, and time
    a join by state sync and a replay."""
    directory = lab.directory(f"statesync-{transactions}")
    committee = Committee.generate(4)
    rounds, per_vertex = history_shape(transactions, per_vertex)
    source = directory / "history"
    source.mkdir()
    started = time.monotonic()
    start_ms = int(time.time() * 1000) - 3_600_000
    length, checkpoints = await persist_loaded_history(
        source, committee, Params(), rounds, per_vertex, HISTORY_TX_SIZE, start_ms
    )
    built = time.monotonic() - started
    token = secrets.token_hex(32)
    p2p = free_port_block(4)
    peers = ",".join(f"127.0.0.1:{p2p + k}" for k in range(4))
    base = {
        "QUDAG_NETWORK_ID": committee.genesis.network_id,
        "QUDAG_VALIDATORS": committee.validator_list(),
        "PEER_AUTH_TOKEN": token,
        "QUDAG_PEERS": peers,
    }
    validators = []
    for k, signer in enumerate(committee.signers):
        data_dir = directory / f"v{k + 1}"
        data_dir.mkdir()
        shutil.copyfile(source / DB_FILENAME, data_dir / DB_FILENAME)
        settings = {
            **base,
            "NODE_ID": f"v{k + 1}",
            "NODE_PRIVATE_KEY": signer.seed().hex(),
            "QUDAG_P2P_PORT": str(p2p + k),
        }
        validators.append(NodeProcess(data_dir, settings))
    try:
        for node in validators:
            await node.start(ready=False)
        async with aiohttp.ClientSession() as session:
            for node in validators:
                await wait_until_ready(session, node.url, START_TIMEOUT)
            # the last round's other vertices are ordered by the validators' next leader
            length += (len(validators) - 1) * per_vertex
            await wait_for_log(session, validators[0].url, length, START_TIMEOUT)
            head = await log_head(session, validators[0].url)
            if head[0] != length:
                raise RuntimeError(f"the validators hold {head[0]} entries, not {length}")
            join = await _join_time(session, directory, "joiner", base, length, head, "on")
            replay = await _join_time(session, directory, "replayer", base, length, head, "off")
    finally:
        for node in validators:
            await node.stop()
    return Joined(length, rounds, checkpoints, built, join, replay)


async def scenario(lab: Lab) -> list[Row]:
    """Join time by state sync for two history sizes, each against its replay."""
    small, large = lab.scale.statesync_transactions
    per_vertex = lab.scale.statesync_per_vertex
    rows = []
    for size in (small, large):
        j = await measure(lab, size, per_vertex)
        rows.append(
            Row(
                "statesync",
                f"{j.join:.1f} s to join ({j.transactions:,} final tx)",
                f"{j.replay:.1f} s to replay them",
                j.join / j.replay,
                f"<= {GOAL_SECONDS:g} s",
                j.join <= GOAL_SECONDS,
                (
                    f"history: {j.transactions:,} transactions in {j.rounds:,} rounds of four"
                    f" validators, {j.checkpoints} certified checkpoints, written in"
                    f" {j.built:.0f} s; time from the observer's process start until its log"
                    " reaches the history's length with the validators' hash there",
                ),
            )
        )
    return rows

"""A fresh node catches up with a peer's history of finalized transactions.

The peer is a one-validator network (a validator with a peer token, so it listens for
peers) that first ingests the history through its API: the fastest honest way to a
large history, timed and reported. Then an observer of that network starts on an empty
data dir with the validator as its only peer; our figure is the history's transactions
divided by the time from the observer's start until its log holds them all (it asks for
whole rounds, checks each certified vertex and stores it, as after any absence).

The reference, in the same run: the validator's own store reading the same history as
it does to answer those requests (``Store.certified_in_rounds``, 64 rounds and about
4 MiB per answer, the syncer's request size), after the validator has stopped.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import aiohttp

from bench.lab import BATCH, TX_SIZE, Lab
from bench.loadgen import LoadSpec, run_load
from bench.nodes import NodeProcess, get_json, running, wait_for_log
from bench.report import Row, per_second
from qudag_node.core.genesis import Genesis
from qudag_node.core.sync import ROUNDS_ANSWER_BYTES, ROUNDS_PER_REQUEST
from qudag_node.core.types import PublicKey
from qudag_node.store import Store

GOAL_RATE = 20_000
VALIDATOR = "v1"
NETWORK_ID = "qudag-local"
#: Seconds allowed for building the history, and for the catch-up.
BUILD_TIMEOUT = 1800.0
CATCHUP_TIMEOUT = 900.0


async def build_history(
    node: NodeProcess, session: aiohttp.ClientSession, transactions: int
) -> float:
    """Submit ``transactions`` in batches and wait until all are final; the seconds taken."""
    started = time.monotonic()
    spec = LoadSpec(
        urls=(node.url,),
        connections=4,
        duration=BUILD_TIMEOUT,
        batch=BATCH,
        size=TX_SIZE,
        requests=-(-transactions // BATCH),
    )
    load = await run_load(spec)
    if load.failed:
        raise RuntimeError(f"submits failed: {load.first_error}")
    await wait_for_log(session, node.url, load.transactions, BUILD_TIMEOUT)
    return time.monotonic() - started


async def store_read_rate(
    data_dir: Path, genesis: Genesis, highest: int, transactions: int
) -> float:
    """Transactions per second of the store reading rounds 1..``highest`` as it answers
    catch-up requests."""
    store = await Store.open(data_dir, genesis)
    try:
        started = time.perf_counter()
        low = 1
        while low <= highest:
            _, last = await store.certified_in_rounds(
                low, min(highest, low + ROUNDS_PER_REQUEST - 1), ROUNDS_ANSWER_BYTES
            )
            low = last + 1
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return transactions / elapsed


async def scenario(lab: Lab) -> list[Row]:
    """Catch-up rate of a fresh observer against the peer store's read rate."""
    transactions = lab.scale.catchup_transactions
    directory = lab.directory("catchup")
    token = secrets.token_hex(32)
    validator = NodeProcess(
        directory / "validator", {"NODE_ID": VALIDATOR, "PEER_AUTH_TOKEN": token}
    )
    async with running(validator), aiohttp.ClientSession() as session:
        built = await build_history(validator, session, transactions)
        status = await get_json(session, validator.url + "/api/v1/status")
        node, dag, log = status["node"], status["dag"], status["log"]
        assert isinstance(node, dict)
        assert isinstance(dag, dict)
        assert isinstance(log, dict)
        key, highest, length = (
            str(node["public_key"]),
            int(dag["highest_round"]),
            int(log["length"]),
        )
        observer = NodeProcess(
            directory / "observer",
            {
                "NODE_ID": "observer",
                "QUDAG_VALIDATORS": f"{VALIDATOR}={key}",
                "QUDAG_PEERS": f"127.0.0.1:{validator.p2p_port}",
                "PEER_AUTH_TOKEN": token,
            },
        )
        async with running(observer, ready=False):
            caught_up = await wait_for_log(session, observer.url, length, CATCHUP_TIMEOUT)
            elapsed = caught_up - observer.started_at
    genesis = Genesis.solo(NETWORK_ID, VALIDATOR, PublicKey(bytes.fromhex(key)))
    reference = await store_read_rate(directory / "validator", genesis, highest, length)
    rate = length / elapsed
    return [
        Row(
            "catchup",
            f"{per_second(rate)} ({length:,} in {elapsed:.1f} s)",
            f"{per_second(reference)} peer store reads the history",
            rate / reference,
            f">= {GOAL_RATE:,} tx/s",
            rate >= GOAL_RATE,
            (
                f"history: {length:,} transactions in {highest:,} rounds of a one-validator"
                f" network, built through its API in {built:.0f} s"
                f" ({length / built:,.0f} tx/s); time counted from the observer's process"
                " start to its log holding them all",
            ),
        )
    ]

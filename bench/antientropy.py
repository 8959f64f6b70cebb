"""Anti-entropy between two nodes that hold the same 100,000 certified vertices.

The history (:mod:`bench.history`: four validators, every even leader committed) is
written once through the node's store and copied, so the two databases hold exactly the
same vertices. Two figures:

- **Fingerprints.** The ids and rounds read from the store (``Store.certified_ids`` over
  every round, as a node does to answer a SUMMARY) go through
  :func:`~qudag_node.core.syncwire.summarize`, the node's vectorised bucket
  fingerprints, and through a plain Python loop computing the same counts and XORs
  (checked equal). Both get the same object, in the form the node has it in at that
  point: a :class:`~qudag_node.core.syncwire.CertifiedIds`, whose rounds are an
  ``array('q')`` (iterating it yields Python ints) and whose ids are one ``bytes`` of
  32-byte ids back to back (the loop slices each id's first 8 bytes out of it). The
  store packs them while it reads the rows, in the read time reported beside. Each
  is timed as the best of several repetitions.
- **Bytes per round.** Two real node processes (observers of that validator set, so
  neither adds vertices) open the copies, link, and run anti-entropy every second. Over
  a window, the peer bytes both send (``qudag_peer_bytes_total``, frames with their
  length prefix) divided by the summaries they receive (``qudag_sync_rounds_total``,
  all ``in_sync``) is what one anti-entropy round of one node towards one peer costs.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

import aiohttp

from bench.history import Committee, persist_history
from bench.lab import Lab
from bench.nodes import NodeProcess, metric_sum, running, wait_until_ready
from bench.ports import free_port_block
from bench.report import Row
from qudag_node.core.syncwire import (
    MAX_ROUND,
    CertifiedIds,
    Summary,
    bucket_count,
    bucket_span,
    summarize,
)
from qudag_node.core.types import HASH_SIZE
from qudag_node.store import DB_FILENAME, Store

GOAL_SPEEDUP = 20.0
GOAL_BYTES = 10 * 1024
VALIDATORS = 4
REPEAT = 5
SYNC_INTERVAL = 1.0
#: Seconds allowed for the anti-entropy rounds the bytes are counted over.
WINDOW_TIMEOUT = 120.0


def python_fingerprints(
    certified: CertifiedIds, low: int, high: int, span: int
) -> tuple[list[int], list[int]]:
    """Bucket counts and XORed 8-byte id prefixes, in a plain Python loop."""
    count = bucket_count(low, high, span)
    counts, fingerprints = [0] * count, [0] * count
    ids = certified.ids
    for r, start in zip(certified.rounds, range(0, len(ids), HASH_SIZE), strict=True):
        if low <= r <= high:
            k = (r - low) // span
            counts[k] += 1
            fingerprints[k] ^= int.from_bytes(ids[start : start + 8], "big")
    return counts, fingerprints


def best_time(repeat: int, work: object) -> float:
    """The shortest of ``repeat`` timings of ``work()``."""
    assert callable(work)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


async def fingerprint_speedup(
    data_dir: Path, committee: Committee
) -> tuple[float, float, float, int]:
    """(vectorised seconds, Python loop seconds, store read seconds, ids) over every round."""
    store = await Store.open(data_dir, committee.genesis)
    try:
        started = time.perf_counter()
        certified = await store.certified_ids(1, MAX_ROUND)
        read = time.perf_counter() - started
    finally:
        await store.close()
    low, high = certified.rounds[0], certified.rounds[-1]
    span = bucket_span(low, high)
    ours: list[Summary] = []
    vectorised = best_time(REPEAT, lambda: ours.append(summarize(certified, low, high, span)))
    loop = best_time(REPEAT, lambda: python_fingerprints(certified, low, high, span))
    counts, fingerprints = python_fingerprints(certified, low, high, span)
    if (list(ours[0].counts), list(ours[0].fingerprints)) != (counts, fingerprints):
        raise RuntimeError("the vectorised fingerprints differ from the Python loop's")
    return vectorised, loop, read, len(certified)


async def bytes_per_round(
    directories: list[Path], committee: Committee, rounds_wanted: int
) -> tuple[float, float]:
    """(bytes sent per anti-entropy round, rounds counted) between two observer nodes,
    over at least ``rounds_wanted`` rounds."""
    token = secrets.token_hex(32)
    ports = free_port_block(len(directories))
    nodes = [
        NodeProcess(
            d,
            {
                "NODE_ID": f"observer{k + 1}",
                "QUDAG_NETWORK_ID": committee.genesis.network_id,
                "QUDAG_VALIDATORS": committee.validator_list(),
                "QUDAG_P2P_PORT": str(ports + k),
                "QUDAG_PEERS": ",".join(
                    f"127.0.0.1:{ports + j}" for j in range(len(directories)) if j != k
                ),
                "PEER_AUTH_TOKEN": token,
                "DAG_SYNC_INTERVAL": f"{SYNC_INTERVAL:g}",
            },
        )
        for k, d in enumerate(directories)
    ]
    async with (
        running(nodes[0], ready=False),
        running(nodes[1], ready=False),
        aiohttp.ClientSession() as session,
    ):
        urls = [n.url for n in nodes]
        for url in urls:
            await wait_until_ready(session, url, 60.0)

        async def totals() -> tuple[float, float, float]:
            sent = rounds = differences = 0.0
            for url in urls:
                sent += await metric_sum(session, url, "qudag_peer_bytes_total", '"sent"')
                rounds += await metric_sum(session, url, "qudag_sync_rounds_total", "in_sync")
                differences += await metric_sum(
                    session, url, "qudag_sync_rounds_total", "differences"
                )
            return sent, rounds, differences

        before = await totals()
        deadline = time.monotonic() + WINDOW_TIMEOUT
        while True:
            await asyncio.sleep(SYNC_INTERVAL / 5)
            after = await totals()
            if after[1] - before[1] >= rounds_wanted:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {rounds_wanted} anti-entropy rounds")
    sent, rounds, differences = (a - b for a, b in zip(after, before, strict=True))
    if differences:
        raise RuntimeError(f"{rounds:.0f} rounds in sync and {differences:.0f} with differences")
    return sent / rounds, rounds


async def scenario(lab: Lab) -> list[Row]:
    """Fingerprint speed over 100,000 vertices, and bytes per anti-entropy round."""
    committee = Committee.generate(VALIDATORS)
    first = lab.directory("antientropy") / "node1"
    first.mkdir()
    started = time.monotonic()
    rounds = lab.scale.antientropy_vertices // VALIDATORS
    written = await persist_history(first, committee, rounds, int(time.time() * 1000) - 10**8)
    built = time.monotonic() - started
    second = first.parent / "node2"
    second.mkdir()
    shutil.copy2(first / DB_FILENAME, second / DB_FILENAME)
    vectorised, loop, read, counted = await fingerprint_speedup(first, committee)
    per_round, measured = await bytes_per_round(
        [first, second], committee, lab.scale.antientropy_rounds
    )
    speedup = loop / vectorised
    return [
        Row(
            "antientropy",
            f"fingerprints of {counted:,} ids in {vectorised * 1000:.1f} ms;"
            f" {per_round:,.0f} B per round",
            f"Python loop {loop * 1000:.1f} ms",
            speedup,
            f">= {GOAL_SPEEDUP:.0f} x, < {GOAL_BYTES // 1024} KiB per round",
            speedup >= GOAL_SPEEDUP and per_round < GOAL_BYTES,
            (
                f"{written:,} certified vertices ({rounds:,} rounds of {VALIDATORS}"
                f" validators) written through Store.persist in {built:.1f} s, copied to the"
                f" second node; reading their ids and rounds from the store took"
                f" {read * 1000:.0f} ms; timings are the best of {REPEAT}",
                f"bytes: two observer processes, anti-entropy every {SYNC_INTERVAL:g} s;"
                f" {measured:.0f} rounds, all in sync, counted from their metrics",
            ),
        )
    ]

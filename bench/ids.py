"""Time spent on transaction ids and batch roots, and its share of the node's CPU.

The core functions run on a real batch (1,000 transactions of 256 random bytes):
:func:`~qudag_node.core.crypto.tx_ids` over the batch, and
:func:`~qudag_node.core.crypto.batch_root` over its joined ids (joining included, as
:func:`~qudag_node.core.vertex.make_vertex` does), each the best of several runs, per
transaction. A one-validator node computes each once per transaction it takes in. The
reference is the node's CPU time per finalized transaction during the ingest run (all
its threads, from /proc); the ratio is the share. No goal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bench.ingest import shared_ingest
from bench.lab import BATCH, TX_SIZE, Lab
from bench.report import Row
from qudag_node.core.crypto import batch_root, tx_ids

REPEAT = 50


def best_ns_per_tx(work: Callable[[], object], count: int) -> float:
    """The shortest of :data:`REPEAT` timings of ``work()``, in ns per transaction."""
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter_ns()
        work()
        best = min(best, time.perf_counter_ns() - started)
    return best / count


async def scenario(lab: Lab) -> list[Row]:
    """ns per transaction on ids and batch roots, against the node's CPU per transaction."""
    batch = [os.urandom(TX_SIZE) for _ in range(BATCH)]
    ids = tx_ids(batch)
    id_ns = best_ns_per_tx(lambda: tx_ids(batch), BATCH)
    root_ns = best_ns_per_tx(lambda: batch_root(b"".join(ids)), BATCH)
    ingest = await shared_ingest(lab)
    node_ns = ingest.cpu_per_tx * 1e9
    total = id_ns + root_ns
    return [
        Row(
            "ids",
            f"{total:,.0f} ns/tx (tx id {id_ns:,.0f} + batch root {root_ns:,.1f})",
            f"node CPU {node_ns / 1000:,.1f} µs/tx (ingest)",
            total / node_ns,
            "none (reported)",
            None,
            (
                f"best of {REPEAT} runs over a batch of {BATCH} random {TX_SIZE}-byte"
                " transactions; the node's CPU per transaction is its process CPU time"
                " (all threads) during the ingest window / transactions finalized in it",
            ),
        )
    ]

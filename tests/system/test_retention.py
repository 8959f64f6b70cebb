"""A real node with a bounded retention prunes below a certified checkpoint, answers
410 for what it pruned, and restarts with the same log.

The node's database is given certified checkpoint rows between runs (at the leader
round and log head it stopped at), as the checkpoint protocol would have stored them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from qudag_node.core.checkpoint import Checkpoint, window_root
from qudag_node.core.types import GenesisHash, VertexId
from tests.nodeproc import NodeProcess, metric, request, submit_json, wait_until

#: Fast rounds, so that a run passes the DAG window (50 rounds) in seconds.
FAST = {"QUDAG_HEARTBEAT_INTERVAL": "0.02", "QUDAG_MIN_ROUND_INTERVAL": "0.01"}
GC_DEPTH = 50


def get(node: NodeProcess, path: str) -> Any:
    code, body = request("GET", node.url + path)
    assert code == 200, (path, body)
    return body


def run_until_round(node: NodeProcess, committed: int, batches: int) -> None:
    """Submit ``batches`` batches (each waiting for finality), then let the node's
    heartbeat rounds run until it committed round ``committed``."""
    for i in range(batches):
        txs = [f"batch {i} tx {j} {node.url}".encode() for j in range(20)]
        code, body = submit_json(node.url, txs, wait=True)
        assert (code, body["status"]) == (200, "final")
    wait_until(
        lambda: get(node, "/api/v1/status")["dag"]["committed_round"] >= committed,
        60,
        f"committed round {committed}",
    )


def certify_where_it_stopped(data: Path, number: int) -> tuple[int, int]:
    """Write a certified checkpoint at the stopped node's committed round and log head;
    returns that round and log length."""
    with contextlib.closing(sqlite3.connect(data / "qudag.db")) as db, db:
        genesis = bytes(db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
        committed = int.from_bytes(
            db.execute("SELECT value FROM meta WHERE key = 'committed_round'").fetchone()[0], "big"
        )
        seq, log_hash = db.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        body = Checkpoint(
            GenesisHash(genesis),
            number,
            committed,
            VertexId(bytes(32)),
            0,
            seq,
            bytes(log_hash),
            0,
            window_root([]),
        ).encode()
        db.execute(
            "INSERT INTO checkpoints (number, round, log_length, timestamp_ms, body, window,"
            " certificate) VALUES (?, ?, ?, 0, ?, x'', x'01')",
            (number, committed, seq, body),
        )
    return committed, seq


def test_a_node_prunes_below_the_kept_checkpoint_and_restarts_with_its_log(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    node = NodeProcess(data, tmp_path / "node.log", FAST).start()
    try:
        run_until_round(node, 2 * GC_DEPTH, batches=5)
    finally:
        assert node.stop() == 0
    first_round, first_length = certify_where_it_stopped(data, 1)

    node.start()
    try:
        run_until_round(node, first_round + 2 * GC_DEPTH, batches=5)
    finally:
        assert node.stop() == 0
    second_round, _ = certify_where_it_stopped(data, 2)

    keep = second_round - first_round  # rounds: keeps checkpoint 1 and prunes below it
    retained = NodeProcess(
        data, tmp_path / "node.log", {**FAST, "QUDAG_RETENTION": f"{keep}rounds"}
    ).start()
    try:
        wait_until(
            lambda: get(retained, "/api/v1/status")["retention"]["oldest_log_position"] > 1,
            30,
            "the pruner's first pass",
        )
        status = get(retained, "/api/v1/status")
        assert status["retention"] == {
            "dag": f"{keep}rounds",
            "transactions": f"{keep}rounds",
            "oldest_round": first_round - GC_DEPTH,
            "oldest_log_position": first_length + 1,
        }
        code, body = request("GET", f"{retained.url}/api/v1/log?from={first_length}")
        assert (code, body["error"]["code"]) == (410, "pruned")
        assert f"from position {first_length + 1}" in body["error"]["message"]
        assert get(retained, f"/api/v1/log?from={first_length + 1}&limit=1")["entries"]
        assert metric(retained.url, "qudag_pruned_rows_total", {"kind": "log"}) > 0
        assert metric(retained.url, "qudag_pruned_rows_total", {"kind": "vertices"}) > 0
        head = status["log"]
    finally:
        assert retained.stop() == 0
    retained.start()
    try:
        assert get(retained, "/api/v1/status")["log"] == head
        code, body = submit_json(retained.url, [b"after pruning"], wait=True)
        assert (code, body["status"]) == (200, "final")
    finally:
        retained.stop()

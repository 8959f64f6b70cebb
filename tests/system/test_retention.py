"""A real node with a bounded retention prunes below the checkpoints it certifies,
answers 410 for what it pruned, and restarts with the same log.

A one-validator network is its own quorum: it certifies a checkpoint every
``INTERVAL`` rounds, and with ``QUDAG_RETENTION=KEEProunds`` its pruner keeps the newest
checkpoint at least ``KEEP`` rounds older than the latest, and everything after that
one's window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qudag_node.core.crypto import tx_id
from tests.nodeproc import NodeProcess, metric, request, submit_json, wait_until

#: Fast rounds, so that a run passes the DAG window (50 rounds) in seconds.
FAST = {"QUDAG_HEARTBEAT_INTERVAL": "0.02", "QUDAG_MIN_ROUND_INTERVAL": "0.01"}
GC_DEPTH = 50
INTERVAL = 20
KEEP = 60
SETTINGS = {**FAST, "QUDAG_CHECKPOINT_INTERVAL": str(INTERVAL), "QUDAG_RETENTION": f"{KEEP}rounds"}


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


def test_a_node_prunes_below_a_checkpoint_it_certified_and_restarts_with_its_log(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    node = NodeProcess(data, tmp_path / "node.log", SETTINGS).start()
    try:
        run_until_round(node, KEEP + 3 * GC_DEPTH, batches=5)
        wait_until(
            lambda: get(node, "/api/v1/status")["retention"]["oldest_round"] > 1,
            30,
            "the pruner's first pass",
        )
        status = get(node, "/api/v1/status")
        held = status["retention"]
        assert (held["dag"], held["transactions"]) == (f"{KEEP}rounds", f"{KEEP}rounds")
        latest = get(node, "/api/v1/checkpoints/latest")
        # what is held starts at a kept checkpoint's window, at least KEEP rounds back
        assert held["oldest_round"] <= latest["round"] - KEEP - GC_DEPTH
        assert held["oldest_round"] % INTERVAL == (INTERVAL - GC_DEPTH) % INTERVAL
        oldest = held["oldest_log_position"]
        assert oldest > 1
        code, body = request("GET", f"{node.url}/api/v1/log?from={oldest - 1}")
        assert (code, body["error"]["code"]) == (410, "pruned")
        assert f"from position {oldest}" in body["error"]["message"]
        # positions above the base are served: new ones, once final
        code, body = submit_json(node.url, [b"above the base"], wait=True)
        assert (code, body["status"]) == (200, "final")
        entries = get(node, f"/api/v1/log?from={oldest}")["entries"]
        assert [e["tx_id"] for e in entries] == [tx_id(b"above the base").hex()]
        code, body = request("GET", f"{node.url}/api/v1/checkpoints/1")
        assert (code, body["error"]["code"]) == (410, "pruned")
        assert metric(node.url, "qudag_pruned_rows_total", {"kind": "log"}) > 0
        assert metric(node.url, "qudag_pruned_rows_total", {"kind": "vertices"}) > 0
        assert metric(node.url, "qudag_oldest_round_held") == held["oldest_round"]
        head = get(node, "/api/v1/status")["log"]  # heartbeat rounds carry nothing
    finally:
        assert node.stop() == 0
    node.start()
    try:
        assert get(node, "/api/v1/status")["log"] == head
        code, body = submit_json(node.url, [b"after pruning"], wait=True)
        assert (code, body["status"]) == (200, "final")
    finally:
        node.stop()

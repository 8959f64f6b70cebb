"""Real node processes: clean shutdown on signals, crash safety, identity, backup, secrets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nacl.signing
import pytest

from qudag_node.core.crypto import Scheme, Signer
from tests.adapters.test_store import damage_table
from tests.nodeproc import NodeProcess, metric, request, submit_json, wait_until
from tests.system.test_cli import run_until_exit


def _status(node: NodeProcess) -> dict[str, object]:
    code, body = request("GET", node.url + "/api/v1/status")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def _log_info(node: NodeProcess) -> tuple[int, str]:
    log = _status(node)["log"]
    assert isinstance(log, dict)
    return int(log["length"]), str(log["hash"])


def _all_final(node: NodeProcess, ids: list[str]) -> bool:
    for tx in ids:
        code, body = request("GET", f"{node.url}/api/v1/transactions/{tx}")
        if code != 200 or body["status"] != "final":
            return False
    return True


class Submitter(threading.Thread):
    """Submits unique transactions in a loop and records every acknowledged id."""

    def __init__(self, url: str, batch: int = 20) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.batch = batch
        self.acked: list[str] = []
        self.halt = threading.Event()
        self.failures = 0

    def run(self) -> None:
        n = 0
        while not self.halt.is_set() and self.failures < 50:
            txs = [f"tx-{id(self)}-{n + k}".encode() * 8 for k in range(self.batch)]
            n += self.batch
            code, body = submit_json(self.url, txs)
            if code == 202:
                self.acked.extend(body["ids"])
            else:
                self.failures += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def _young_collections(node: NodeProcess) -> float:
    return metric(node.url, "python_gc_collections_total", {"generation": "0"})


def test_the_node_runs_few_garbage_collections_under_load(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    try:
        before = _young_collections(node)
        assert before > 0  # exposed: the imports made before the node started collected
        for n in range(1000):
            code, _ = request("POST", node.url + "/api/v1/transactions", b"gc-%d" % n)
            assert code == 202
        # with CPython's default thresholds, more than ten young collections here
        assert _young_collections(node) - before <= 5
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_node_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    code, body = submit_json(node.url, [b"before shutdown"], wait=True)
    assert code == 200, body
    started = time.monotonic()
    node.signal(sig)
    assert node.wait(10) == 0, node.logs()
    assert time.monotonic() - started < 5
    events = [r["event"] for r in node.records()]
    assert events.index("stopping") < events.index("stopped")
    assert "Traceback" not in node.logs()
    wal = tmp_path / "data" / "qudag.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "WAL was not checkpointed"


def test_console_script_and_module_start_the_same_node(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("qudag-node")
    assert script.is_file(), "the qudag-node console script is not installed"
    data = tmp_path / "data"
    by_module = NodeProcess(data, tmp_path / "module.log").start()
    code, body = submit_json(by_module.url, [b"kept across entry points"], wait=True)
    assert code == 200, body
    before = _status(by_module)
    assert by_module.stop() == 0
    by_script = NodeProcess(data, tmp_path / "script.log", command=[str(script), "run"]).start()
    after = _status(by_script)
    assert after["network"] == before["network"]
    assert after["log"] == before["log"]
    assert after["node"]["public_key"] == before["node"]["public_key"]  # type: ignore[index]
    assert by_script.stop() == 0


def test_identity_is_generated_once_and_kept(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    first = _status(node)["node"]
    first_network = _status(node)["network"]
    assert node.stop() == 0
    key_file = tmp_path / "data" / "node.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    seed = bytes.fromhex(key_file.read_text().strip())
    assert isinstance(first, dict)
    kept = Signer(seed)  # a node alone makes a key of the scheme of new networks
    assert kept.scheme is Scheme.MLDSA65_ED25519
    assert (kept.public_key.hex(), kept.node_id.hex()) == (first["public_key"], first["node_id"])
    assert isinstance(first_network, dict)
    assert first_network["scheme"] == "mldsa65-ed25519"
    node.start()
    second = _status(node)["node"]
    assert isinstance(second, dict)
    assert second["public_key"] == first["public_key"]
    assert _status(node)["network"] == first_network
    assert node.stop() == 0


def test_sigkill_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data, tmp_path / "node.log").start()
    load = Submitter(node.url)
    load.start()
    wait_until(lambda: _log_info(node)[0] >= 400, 60, "400 final transactions")
    final_length, final_hash = _log_info(node)
    wait_until(lambda: len(load.acked) >= final_length + 400, 60, "more acknowledged ones")
    node.kill()
    load.stop()
    acked = list(load.acked)
    assert final_length > 0

    node.start()
    wait_until(lambda: _all_final(node, acked), 60, "every acknowledged transaction to be final")
    code, body = request("GET", f"{node.url}/api/v1/log?from={final_length}&limit=1")
    assert code == 200
    assert body["entries"][0]["hash"] == final_hash
    length, _ = _log_info(node)
    assert length >= len(set(acked))
    assert node.stop() == 0
    with sqlite3.connect(data / "qudag.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_online_backup_restores_the_same_log(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()  # an Ed25519 node's backup restores as well
    env = {"NODE_PRIVATE_KEY": bytes(key).hex()}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start()
    for i in range(5):
        code, _ = submit_json(node.url, [f"seed-{i}-{k}".encode() for k in range(100)], wait=True)
        assert code == 200
    before, _ = _log_info(node)
    load = Submitter(node.url)
    load.start()
    wait_until(lambda: len(load.acked) >= 100, 60, "load before the backup")
    backup = tmp_path / "backup.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qudag_node",
            "backup",
            str(backup),
            "--data-dir",
            str(node.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    load.stop()
    assert result.returncode == 0, result.stderr
    restored_dir = tmp_path / "restored"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qudag_node",
            "restore",
            str(backup),
            "--data-dir",
            str(restored_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    twin = NodeProcess(restored_dir, tmp_path / "twin.log", env).start()
    length, log_hash = _log_info(twin)
    assert length >= before
    code, body = request("GET", f"{node.url}/api/v1/log?from={length}&limit=1")
    assert code == 200
    assert body["entries"][0]["hash"] == log_hash
    assert twin.stop() == 0
    assert node.stop() == 0


def test_secrets_never_leave_the_process(tmp_path: Path) -> None:
    key = os.urandom(64).hex()  # a composite key: both seeds
    token = "a9f3c5e7b1d2049e6c8a0f2d4b6e81357c9a1e3f5d7b0c2e4a6f8d1b3c5e7a90"  # noqa: S105
    env = {"NODE_PRIVATE_KEY": key, "PEER_AUTH_TOKEN": token, "LOG_LEVEL": "debug"}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start()
    seen = []
    for method, path, body, ctype in [
        ("GET", "/api/v1/status", None, ""),
        ("GET", "/metrics", None, ""),
        ("GET", "/health", None, ""),
        ("GET", "/ready", None, ""),
        ("POST", "/api/v1/transactions", b"{not json", "application/json"),
        ("POST", "/api/v1/transactions", b"", "application/octet-stream"),
        ("POST", "/api/v1/transactions", b"x", "text/plain"),
        ("POST", "/api/v1/transactions?wait=final", b"real tx", "application/octet-stream"),
        ("GET", "/api/v1/transactions/zz", None, ""),
        ("GET", "/api/v1/nope", None, ""),
    ]:
        code, answer = request(method, node.url + path, body, ctype or "application/octet-stream")
        assert code != 0
        seen.append(str(answer))
    assert node.stop() == 0
    everything = "\n".join([*seen, node.logs()])
    for secret in (key[:64], key[64:], token):  # neither seed, nor the token
        assert secret not in everything
        assert secret.upper() not in everything
    assert '"node_private_key": "<set>"' in node.logs()


def test_included_status_survives_a_restart(tmp_path: Path) -> None:
    env = {"QUDAG_MIN_ROUND_INTERVAL": "60"}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start()
    code, body = submit_json(node.url, [b"carried by round 1"])
    assert code == 202, body
    tx = body["ids"][0]
    code, before = request("GET", f"{node.url}/api/v1/transactions/{tx}")
    assert code == 200
    assert before["status"] == "included"
    assert node.stop() == 0
    node.start()
    code, after = request("GET", f"{node.url}/api/v1/transactions/{tx}")
    assert code == 200
    assert after == before
    assert node.stop() == 0


def test_integrity_is_checked_after_ready_and_logged(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    wait_until(
        lambda: any(r["event"] == "integrity_check_passed" for r in node.records()),
        30,
        "the integrity_check_passed log line",
    )
    records = node.records()
    events = [r["event"] for r in records]
    assert events.index("ready") < events.index("integrity_check_started")
    assert events.index("integrity_check_started") < events.index("integrity_check_passed")
    passed = records[events.index("integrity_check_passed")]
    assert isinstance(passed["seconds"], float | int)
    assert passed["seconds"] >= 0
    assert node.stop() == 0


@pytest.mark.parametrize(
    ("damaged", "failure", "after_ready"),
    [
        # pages a restart does not read: found by the check that runs after /ready
        ("transactions", "database integrity check failed: ", True),
        # the index the state is loaded through: found before the node takes requests
        ("vertices_round", "cannot load the state: ", False),
    ],
)
def test_a_damaged_database_stops_the_node_with_1(
    tmp_path: Path, damaged: str, failure: str, after_ready: bool
) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data, tmp_path / "node.log").start()
    code, body = submit_json(node.url, [os.urandom(200) for _ in range(3000)], wait=True)
    assert code == 200, body
    assert node.stop() == 0
    assert damage_table(data / "qudag.db", damaged) >= 1

    result = run_until_exit(data)
    assert result.code == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"qudag-node: node stopped: database {data}: {failure}"
    )
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert ("ready" in events) is after_ready
    assert "integrity_check_passed" not in events
    assert events[-1] == "stopped"


def test_a_database_that_cannot_be_written_fails_the_client_and_stops_the_node(
    tmp_path: Path,
) -> None:
    env = {"QUDAG_HEARTBEAT_INTERVAL": "3600"}  # idle: the node writes nothing by itself
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start()
    code, body = submit_json(node.url, [b"stored before the lock"], wait=True)
    assert code == 200, body
    # Another process holds the write lock past the node's busy timeout (5 s).
    holder = sqlite3.connect(tmp_path / "data" / "qudag.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, answer = submit_json(node.url, [b"never acknowledged"])
        assert code == 500, answer
        assert answer["error"]["code"] == "internal"
        assert node.wait(30) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "cannot write to the database" in node.logs()
    assert "database is locked" in node.logs()
    node.start()  # nothing was acknowledged that is not stored
    code, body = request("GET", node.url + "/api/v1/log?from=1&limit=10")
    assert code == 200, body
    assert body["length"] == 1
    assert node.stop() == 0

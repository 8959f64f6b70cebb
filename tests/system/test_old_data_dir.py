"""A data directory and a genesis file made before signature schemes were named run on
unchanged: the same Ed25519 network, key, genesis hash and log.

``ed25519_node/`` holds what such a node left behind: the genesis file of one validator
(no ``scheme`` field), its ``node.key`` (64 hex characters) and its database, kept as an
SQL dump (``qudag.sql``) so that it is text. That node finalized three transactions.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from hashlib import blake2b
from pathlib import Path
from typing import Any

import nacl.signing

from qudag_node.store import SCHEMA_VERSION
from tests.nodeproc import NodeProcess, request, submit_json

OLD = Path(__file__).resolve().parent / "ed25519_node"
GENESIS_HASH = "14e7bca72aa86b7538685e68d921137aee05ac6eb9c6176824fbce33e422010a"
PUBLIC_KEY = "16d87db845900e6cb41b1baa1ab639a855095ef4a855b9a7945504d0b4a01c17"
LOG = (3, "28212b0458fe54972683fda210f59f7fe42e84c3b48af99eed48cc45024a5a06")
OLD_TRANSACTIONS = (b"old one", b"old two", b"old three")


def old_node(root: Path) -> NodeProcess:
    """The old node's files copied under ``root``, its database rebuilt from the dump,
    as a node process of today's code (not started)."""
    data = root / "data"
    data.mkdir(mode=0o700, parents=True)
    key = data / "node.key"
    shutil.copy(OLD / "node.key", key)
    key.chmod(0o600)
    shutil.copy(OLD / "genesis.json", root / "genesis.json")
    with sqlite3.connect(data / "qudag.db") as db:
        db.executescript((OLD / "qudag.sql").read_text())
    db.close()
    env = {"NODE_ID": "node1", "QUDAG_GENESIS": str(root / "genesis.json")}
    return NodeProcess(data, root / "node.log", env)


def get(node: NodeProcess, path: str) -> Any:
    code, body = request("GET", node.url + path)
    assert code == 200, (path, body)
    return body


def test_an_old_ed25519_node_goes_on_where_it_stopped(tmp_path: Path) -> None:
    node = old_node(tmp_path).start()
    try:
        status = get(node, "/api/v1/status")
        assert status["network"]["scheme"] == "ed25519"
        assert status["network"]["genesis"] == GENESIS_HASH
        assert status["node"]["public_key"] == status["node"]["node_id"] == PUBLIC_KEY
        assert status["node"]["role"] == "validator"
        assert (status["log"]["length"], status["log"]["hash"]) == LOG
        for data in OLD_TRANSACTIONS:
            tx = blake2b(data, digest_size=32, person=b"qudag:tx").hexdigest()
            assert get(node, f"/api/v1/transactions/{tx}")["status"] == "final"

        # a vertex signed then still verifies as the API says: Ed25519 over its id
        [entry] = get(node, "/api/v1/log?from=1&limit=1")["entries"]
        vertex = get(node, f"/api/v1/vertices/{entry['vertex']}")
        assert (vertex["scheme"], vertex["author"]) == (1, PUBLIC_KEY)
        assert vertex["signing"] == {
            "scheme": "ed25519",
            "context": None,
            "message": entry["vertex"],
        }
        key = nacl.signing.VerifyKey(bytes.fromhex(PUBLIC_KEY))
        key.verify(bytes.fromhex(vertex["id"]), bytes.fromhex(vertex["signature"]))
        assert vertex["votes"][0]["validator"] == 0
        genesis = get(node, "/api/v1/genesis")
        assert (genesis["scheme"], genesis["hash"]) == ("ed25519", GENESIS_HASH)

        # and it keeps finalizing, across a restart
        code, body = submit_json(node.url, [b"new after the upgrade"], wait=True)
        assert (code, body["status"]) == (200, "final")
        assert node.stop() == 0
        node.start()
        status = get(node, "/api/v1/status")
        assert status["log"]["length"] == LOG[0] + 1
        assert status["network"]["genesis"] == GENESIS_HASH
    finally:
        node.stop()
    # nothing of the old node's files was rewritten
    assert (tmp_path / "data" / "node.key").read_text() == (OLD / "node.key").read_text()
    assert json.loads((tmp_path / "genesis.json").read_text()) == json.loads(
        (OLD / "genesis.json").read_text()
    )


def command(*args: str) -> None:
    """Run ``qudag-node ARGS`` as a process; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "qudag_node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def schema_of(data: Path) -> int:
    with contextlib.closing(sqlite3.connect(data / "qudag.db")) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_schema_3_database_migrates_in_place_and_its_backup_still_restores(
    tmp_path: Path,
) -> None:
    old = old_node(tmp_path / "old")
    assert schema_of(old.data_dir) == 3
    backup = tmp_path / "before-the-upgrade.db"
    command("backup", str(backup), "--data-dir", str(old.data_dir))

    node = old.start()  # today's node migrates the database in place
    try:
        status = get(node, "/api/v1/status")
        assert (status["log"]["length"], status["log"]["hash"]) == LOG
        assert status["retention"]["oldest_log_position"] == 1
        code, body = submit_json(node.url, [b"after the migration"], wait=True)
        assert (code, body["status"]) == (200, "final")
    finally:
        assert node.stop() == 0
    assert schema_of(old.data_dir) == SCHEMA_VERSION

    # the backup from before the migration, restored after it, opens and migrates again
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy(old.data_dir / "node.key", restored / "node.key")
    command("restore", str(backup), "--data-dir", str(restored))
    assert schema_of(restored) == 3
    env = {"NODE_ID": "node1", "QUDAG_GENESIS": str(tmp_path / "old" / "genesis.json")}
    node = NodeProcess(restored, tmp_path / "restored.log", env).start()
    try:
        status = get(node, "/api/v1/status")
        assert (status["log"]["length"], status["log"]["hash"]) == LOG
        entries = get(node, "/api/v1/log?from=1")["entries"]
        assert [e["seq"] for e in entries] == [1, 2, 3]
    finally:
        assert node.stop() == 0
    assert schema_of(restored) == SCHEMA_VERSION

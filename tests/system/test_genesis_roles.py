"""Real node processes given a four-validator genesis: validator and observer roles.

Alone, without any peer, a validator of a four-validator network stores what clients
submit but proposes nothing and is not ready: until a peer tells it where the network
stands, it cannot know whether its key already signed rounds in an earlier life. An
observer only stores what clients submit. Both expose the network's genesis.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, Signer
from qudag_node.core.genesis import Genesis
from tests.nodeproc import NodeProcess, request, submit_json

TOKEN = "c7a1e94f02b6d85e3a9c1f47b0d2e6a8539f1c7e4b2d0a68f3e5c9b71d4a2e06"  # noqa: S105 - a test value


@dataclass(frozen=True)
class GenesisFile:
    """A genesis file, the hash ``qudag-node genesis`` printed, and its validators' keys."""

    path: Path
    printed: str
    scheme: Scheme
    signers: list[Signer]

    def outsider(self) -> Signer:
        """A key of the network's scheme that is not a validator's."""
        return Signer(b"\x77" * PRIVATE_KEY_SIZES[self.scheme])


@pytest.fixture(params=list(Scheme), ids=lambda s: s.label)
def genesis_file(tmp_path: Path, request: pytest.FixtureRequest) -> GenesisFile:
    """A four-validator genesis of either scheme written by ``qudag-node genesis``."""
    scheme: Scheme = request.param
    signers = [Signer(bytes([0x30 + i]) * PRIVATE_KEY_SIZES[scheme]) for i in range(4)]
    out = tmp_path / "genesis.json"
    validators = ",".join(f"node{i + 1}={s.public_key.hex()}" for i, s in enumerate(signers))
    command = [sys.executable, "-m", "qudag_node", "genesis", "--network-id", "qudag-four"]
    result = subprocess.run(
        [*command, "--validators", validators, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"genesis hash ([0-9a-f]{64})", result.stderr)
    assert found is not None, result.stderr
    return GenesisFile(out, found.group(1), scheme, signers)


def _status(node: NodeProcess) -> dict[str, object]:
    code, body = request("GET", node.url + "/api/v1/status")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def _section(node: NodeProcess, name: str) -> dict[str, object]:
    section = _status(node)[name]
    assert isinstance(section, dict)
    return section


def test_a_validator_without_peers_stores_but_waits(
    tmp_path: Path, genesis_file: GenesisFile
) -> None:
    path, printed, signers = genesis_file.path, genesis_file.printed, genesis_file.signers
    env = {
        "QUDAG_GENESIS": str(path),
        "NODE_PRIVATE_KEY": signers[1].seed().hex(),
        "NODE_ID": "node2",
        "PEER_AUTH_TOKEN": TOKEN,
    }
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start(ready=False)
    try:
        network = _section(node, "network")
        assert network["genesis"] == printed
        assert network["id"] == "qudag-four"
        assert (network["f"], network["quorum"]) == (1, 3)
        assert network["scheme"] == genesis_file.scheme.label
        validators = network["validators"]
        assert isinstance(validators, list)
        assert [v["public_key"] for v in validators] == [s.public_key.hex() for s in signers]
        assert [v["node_id"] for v in validators] == [s.node_id.hex() for s in signers]
        assert _section(node, "node")["role"] == "validator"
        assert _section(node, "node")["node_id"] == signers[1].node_id.hex()
        # the genesis as the file holds it, with the node ids and its canonical bytes
        code, doc = request("GET", node.url + "/api/v1/genesis")
        assert code == 200, doc
        written = json.loads(path.read_text())
        assert set(doc) == {*written, "encoding"}
        assert all(doc[k] == written[k] for k in ("network_id", "scheme", "hash"))
        names_and_keys = [
            {"name": v["name"], "public_key": v["public_key"]} for v in doc["validators"]
        ]
        assert names_and_keys == written["validators"]
        assert [v["id"] for v in doc["validators"]] == [s.node_id.hex() for s in signers]
        decoded = Genesis.decode(bytes.fromhex(doc["encoding"]))
        assert (decoded.hash.hex(), decoded.scheme) == (printed, genesis_file.scheme)

        code, body = submit_json(node.url, [b"needs three votes"])
        assert code == 202
        [tx] = body["ids"]
        code, ready = request("GET", node.url + "/ready")
        assert code == 503
        assert ready["checks"]["sync"]["detail"] == "no peer has told us its position yet"
        assert _section(node, "sync")["catching_up"] is True
        code, record = request("GET", f"{node.url}/api/v1/transactions/{tx}")
        assert (code, record["status"]) == (200, "pending")
        assert _section(node, "dag")["round"] == 0

        # alone, it cannot finalize: a client waiting for finality gets a timeout
        code, body = request(
            "POST",
            f"{node.url}/api/v1/transactions?wait=final&timeout=0.5",
            b"needs three votes",
        )
        assert (code, body["error"]["code"]) == (504, "timeout")
        assert node.stop() == 0

        node.start(ready=False)  # the transaction is still held after a restart
        assert _section(node, "transactions")["pending"] == 1
        code, again = request("GET", f"{node.url}/api/v1/transactions/{tx}")
        assert (code, again["status"]) == (200, "pending")
    finally:
        node.stop()


def test_a_network_node_needs_the_peer_token(tmp_path: Path, genesis_file: GenesisFile) -> None:
    stderr = _start_fails_with_2(tmp_path, genesis_file.path)
    assert "PEER_AUTH_TOKEN is not set" in stderr


def test_a_node_outside_the_validator_set_is_an_observer(
    tmp_path: Path, genesis_file: GenesisFile
) -> None:
    path, printed = genesis_file.path, genesis_file.printed
    outsider = genesis_file.outsider().seed()
    env = {"QUDAG_GENESIS": str(path), "NODE_PRIVATE_KEY": outsider.hex(), "PEER_AUTH_TOKEN": TOKEN}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start(ready=False)
    try:
        assert _section(node, "node")["role"] == "observer"
        assert _section(node, "network")["genesis"] == printed
        code, body = submit_json(node.url, [b"for the validators"])
        assert code == 202
        [tx] = body["ids"]
        code, record = request("GET", f"{node.url}/api/v1/transactions/{tx}")
        assert (code, record["status"]) == (200, "pending")
        assert _section(node, "transactions")["pending"] == 1
        assert _section(node, "dag")["round"] == 0  # an observer never proposes
    finally:
        node.stop()


def test_a_bad_genesis_file_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "genesis.json"
    broken.write_text('{"network_id": "x", "validators": []}\n')
    stderr = _start_fails_with_2(tmp_path, broken)
    assert "QUDAG_GENESIS" in stderr
    assert str(broken) in stderr


def _start_fails_with_2(tmp_path: Path, genesis: Path) -> str:
    """Start a node with ``genesis`` (and no token); it must exit 2. Its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "qudag_node", "run", "--data-dir", str(tmp_path / "data")],
        env={"QUDAG_GENESIS": str(genesis), "PATH": "/usr/bin:/bin", "QUDAG_API_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_a_node_without_a_key_makes_one_of_its_networks_scheme(
    tmp_path: Path, genesis_file: GenesisFile
) -> None:
    env = {"QUDAG_GENESIS": str(genesis_file.path), "PEER_AUTH_TOKEN": TOKEN}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start(ready=False)
    try:
        shown = _section(node, "node")
    finally:
        node.stop()
    kept = Signer(bytes.fromhex((tmp_path / "data" / "node.key").read_text()))
    assert kept.scheme is genesis_file.scheme
    assert (shown["role"], shown["node_id"]) == ("observer", kept.node_id.hex())

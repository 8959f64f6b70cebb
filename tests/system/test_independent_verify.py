"""Anyone can verify: vertices, certificates and certified checkpoints of a running
four-node testnet, taken through the API, verify with the independent verifier
(dilithium-py and PyNaCl, no code of the node) against the genesis file the testnet
wrote.

The module runs one testnet for all of its tests, so it is one ``xdist_group``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.ports import free_port_block
from tests.independent import verifier
from tests.independent.verifier import Refused
from tests.nodeproc import request, submit_json, wait_until
from tests.system.test_testnet_cli import LocalNet, NodeLine, processes_using

pytestmark = pytest.mark.xdist_group("independent_verify")

NODES = 4
#: Transactions submitted, one batch at a time, to the nodes in turn.
BATCHES = 8
#: Vertices verified at most (each costs a few pure-Python ML-DSA verifications).
MOST_VERTICES = 12
#: Rounds between checkpoints: small, so that the testnet makes several in the test.
CHECKPOINT_INTERVAL = 4


@dataclass(frozen=True)
class RunningTestnet:
    """The running testnet: its directory and the nodes that came up."""

    directory: Path
    nodes: list[NodeLine]


def get(url: str) -> Any:
    """The JSON answer of a GET that must succeed."""
    code, body = request("GET", url, timeout=10)
    assert code == 200, (url, code, body)
    return body


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    """A four-node testnet of ``qudag-node testnet``, stopped (or killed) at the end."""
    directory = tmp_path_factory.mktemp("independent") / "testnet"
    api = free_port_block(NODES)
    p2p = free_port_block(NODES, avoid=range(api, api + NODES))
    options = ["--checkpoint-interval", str(CHECKPOINT_INTERVAL)]
    net = LocalNet(directory, api, p2p, NODES, options)
    try:
        nodes = net.wait_up()
        assert len(nodes) == NODES, net.stdout
        yield RunningTestnet(directory, nodes)
        assert net.stop(signal.SIGTERM) == 0
    finally:
        net.kill()
        for pid in processes_using(directory):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def network(testnet: RunningTestnet) -> verifier.Network:
    """The genesis, from the file the testnet wrote (not from any node)."""
    return verifier.read_genesis_file((testnet.directory / "genesis.json").read_text())


def test_the_genesis_of_the_api_is_the_genesis_file(
    testnet: RunningTestnet, network: verifier.Network
) -> None:
    assert network.scheme == verifier.COMPOSITE  # a new network signs with the composite
    for node in testnet.nodes:
        doc = get(f"{node.url}/api/v1/genesis")
        assert doc["scheme"] == network.scheme
        assert doc["hash"] == network.hash.hex()
        assert doc["encoding"] == network.encoding.hex()
        assert doc["validators"] == [
            {"name": m.name, "id": m.node_id.hex(), "public_key": m.public_key.hex()}
            for m in network.members
        ]


def final_vertices(testnet: RunningTestnet) -> list[str]:
    """Submit :data:`BATCHES` batches to the nodes in turn, each until final; the ids of
    the vertices that carried them, in log order, and of their parents."""
    for k in range(BATCHES):
        node = testnet.nodes[k % NODES]
        code, body = submit_json(node.url, [f"anyone can verify {k}".encode()], wait=True)
        assert (code, body["status"]) == (200, "final"), body
    first = testnet.nodes[0].url
    wait_until(
        lambda: get(f"{first}/api/v1/status")["log"]["length"] >= BATCHES, 30, "every batch logged"
    )
    entries = get(f"{first}/api/v1/log?from=1&limit={BATCHES}")["entries"]
    ids: list[str] = []
    for entry in entries:
        vertex = get(f"{first}/api/v1/vertices/{entry['vertex']}")
        for vid in (entry["vertex"], *vertex["parents"]):
            if vid not in ids:
                ids.append(vid)
    return ids[:MOST_VERTICES]


def test_vertices_and_their_votes_verify_independently(
    testnet: RunningTestnet, network: verifier.Network
) -> None:
    ids = final_vertices(testnet)
    assert len(ids) >= 4, ids
    authors = set()
    votes = 0
    started = time.monotonic()
    for k, vid in enumerate(ids):
        document = get(f"{testnet.nodes[k % NODES].url}/api/v1/vertices/{vid}")
        result = verifier.verify_vertex(network, document)
        assert result.id.hex() == vid
        assert result.certified, vid
        assert len(result.voters) >= network.quorum
        authors.add(result.author.name)
        votes += len(result.voters)
    seconds = time.monotonic() - started
    assert len(authors) >= 2, "vertices of several validators were checked"
    print(
        f"\nindependently verified {len(ids)} vertices of {len(authors)} validators and"
        f" {votes} votes in {seconds:.2f} s"
    )

    # the same document with one byte of a vote changed is refused
    document = get(f"{testnet.nodes[0].url}/api/v1/vertices/{ids[0]}")
    vote = bytearray.fromhex(document["votes"][-1]["signature"])
    vote[100] ^= 1
    document["votes"][-1]["signature"] = vote.hex()
    certificate = bytearray.fromhex(document["certificate"])
    certificate[-len(vote) :] = vote
    document["certificate"] = certificate.hex()
    with pytest.raises(Refused) as refused:
        verifier.verify_vertex(network, document)
    assert refused.value.reason == "bad_certificate"


def test_certified_checkpoints_verify_independently_and_agree(
    testnet: RunningTestnet, network: verifier.Network
) -> None:
    for k in range(NODES):  # rounds move on under load, and leaders commit
        code, body = submit_json(testnet.nodes[k].url, [f"checkpointed {k}".encode()], wait=True)
        assert (code, body["status"]) == (200, "final"), body

    def certified_everywhere() -> bool:
        held = [get(f"{n.url}/api/v1/status")["checkpoint"] for n in testnet.nodes]
        return all(c is not None for c in held)

    wait_until(certified_everywhere, 60, "a checkpoint certified on every node")
    first = testnet.nodes[0].url
    document = get(f"{first}/api/v1/checkpoints/latest")
    started = time.monotonic()
    checked = verifier.verify_checkpoint(network, document)
    seconds = time.monotonic() - started
    assert checked.round // CHECKPOINT_INTERVAL == checked.number
    assert len(checked.signers) >= network.quorum
    print(
        f"\nindependently verified checkpoint {checked.number} (round {checked.round},"
        f" log {checked.log_length}) signed by {len(checked.signers)} validators"
        f" in {seconds:.2f} s"
    )
    # every node that certified that number holds the same checkpoint
    for node in testnet.nodes[1:]:
        code, theirs = request("GET", f"{node.url}/api/v1/checkpoints/{checked.number}", timeout=10)
        if code == 200:
            assert theirs["encoding"] == document["encoding"], node.url
            verifier.verify_checkpoint(network, theirs)
        else:
            assert code == 404, (node.url, code, theirs)
    # the log position it names holds the hash it names, on this node
    if checked.log_length:
        log = get(f"{first}/api/v1/log?from={checked.log_length}&limit=1")
        assert log["entries"][0]["hash"] == checked.log_hash.hex()
    # one signature byte changed is refused
    signature = bytearray.fromhex(document["signatures"][-1]["signature"])
    signature[100] ^= 1
    document["signatures"][-1]["signature"] = signature.hex()
    certificate = bytearray.fromhex(document["certificate"])
    certificate[-len(signature) :] = signature
    document["certificate"] = certificate.hex()
    with pytest.raises(Refused) as refused:
        verifier.verify_checkpoint(network, document)
    assert refused.value.reason == "bad_checkpoint"

"""A fresh observer joins a running four-node testnet by state sync.

The testnet (``qudag-node testnet``, Ed25519 keys) is driven under load until its
validators have certified a checkpoint (one every ``checkpoint_interval`` rounds,
signed by each validator over the checkpoint it computed itself). Then an observer
starts on an empty data dir with the testnet's genesis, token and peers: it must join
from the latest certified checkpoint rather than replay, hold no log entry at or below
the checkpoint (``410 pruned``, with backfill off), and its log's running hash at a
later position must equal the validators'. A second observer, with backfill on, then
fetches the log before its checkpoint from the validators and ends up holding the whole
log, entry for entry the validators'.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bench.ports import free_port_block
from tests.nodeproc import NodeProcess, request, submit_json, wait_until
from tests.system.test_testnet_cli import LocalNet, NodeLine, processes_using

pytestmark = pytest.mark.xdist_group("statesync_join")

NODES = 4
#: Rounds between checkpoints on this testnet (the same on every node, the observer too).
INTERVAL = 4
#: Seconds allowed for the testnet to certify a checkpoint, and for the join.
DEADLINE = 180.0


def get(url: str) -> dict[str, object]:
    """The JSON answer of a GET that must succeed."""
    code, body = request("GET", url, timeout=10)
    assert code == 200, (url, code, body)
    assert isinstance(body, dict)
    return body


def committed_round(url: str) -> int:
    dag = get(f"{url}/api/v1/status")["dag"]
    assert isinstance(dag, dict)
    return int(dag["committed_round"])


def log_length(url: str) -> int:
    log = get(f"{url}/api/v1/status")["log"]
    assert isinstance(log, dict)
    return int(log["length"])


def reaches(url: str, position: int) -> Callable[[], bool]:
    """Whether the node at ``url`` holds log position ``position`` yet."""
    return lambda: log_length(url) >= position


def whole_log(url: str, length: int) -> list[object]:
    """Entries 1..``length`` of the node's log, a page at a time."""
    entries: list[object] = []
    while len(entries) < length:
        page = get(f"{url}/api/v1/log?from={len(entries) + 1}&limit=1000")["entries"]
        assert isinstance(page, list)
        assert page
        entries += page
    return entries[:length]


def backfilled(url: str) -> bool:
    """Whether the node at ``url`` joined by state sync and then backfilled its log
    from position 1 (before the join its base is 0 too: it holds nothing)."""
    sync = get(f"{url}/api/v1/status")["sync"]
    assert isinstance(sync, dict)
    backfill = sync["backfill"]
    return sync["state_sync"]["done"] >= 1 and backfill["base"] == 0 and not backfill["active"]


def logged(node: NodeProcess, *events: str) -> Callable[[], bool]:
    """Whether ``node`` has logged every one of ``events``."""
    return lambda: set(events) <= {r.get("event") for r in node.records()}


def start_joiner(
    tmp_path: Path, name: str, directory: Path, nodes: Sequence[NodeLine], backfill: str
) -> NodeProcess:
    """An observer started on an empty data dir with the testnet's genesis and peers."""
    joiner = NodeProcess(
        tmp_path / name,
        tmp_path / f"{name}.log",
        {
            "NODE_ID": name,
            "QUDAG_GENESIS": str(directory / "genesis.json"),
            "PEER_AUTH_TOKEN": (directory / "peer-token").read_text().strip(),
            "QUDAG_PEERS": ",".join(f"127.0.0.1:{n.p2p_port}" for n in nodes),
            "QUDAG_CHECKPOINT_INTERVAL": str(INTERVAL),
            "QUDAG_BACKFILL": backfill,
        },
    )
    joiner.start(ready=False)
    return joiner


def holds_the_whole_log(archive: NodeProcess, validator: str) -> None:
    """Wait for ``archive`` to join and backfill; its log is then the validator's."""
    target = log_length(validator)
    wait_until(reaches(archive.url, target), DEADLINE, "the archive to join and catch up")
    wait_until(lambda: backfilled(archive.url), DEADLINE, "the archive's join and backfill")
    wait_until(logged(archive, "state_sync_installed", "backfill_done"), DEADLINE, "their logs")
    assert whole_log(archive.url, target) == whole_log(validator, target)


def test_a_fresh_observer_joins_from_the_latest_certified_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "testnet"
    api = free_port_block(NODES)
    p2p = free_port_block(NODES, avoid=range(api, api + NODES))
    net = LocalNet(
        directory,
        api,
        p2p,
        NODES,
        options=("--scheme", "ed25519", "--checkpoint-interval", str(INTERVAL)),
    )
    observer: NodeProcess | None = None
    archive: NodeProcess | None = None
    try:
        nodes = net.wait_up()
        urls = [n.url for n in nodes]
        sent = 0

        def load_until_checkpoint() -> bool:
            nonlocal sent
            code, _ = submit_json(
                urls[sent % NODES], [f"tx {sent} {k}".encode() for k in range(50)]
            )
            assert code == 202
            sent += 1
            return committed_round(urls[0]) > 3 * INTERVAL

        wait_until(load_until_checkpoint, DEADLINE, "a certified checkpoint")
        observer = start_joiner(tmp_path, "observer", directory, nodes, backfill="off")
        target = log_length(urls[0])

        def joined_and_caught_up() -> bool:
            submit_json(urls[0], [f"later {sent}".encode()])
            status = get(f"{observer.url}/api/v1/status")
            sync, log = status["sync"], status["log"]
            assert isinstance(sync, dict)
            assert isinstance(log, dict)
            return bool(sync["state_sync"]["done"]) and int(log["length"]) > target

        wait_until(joined_and_caught_up, DEADLINE, "the observer to join and pass the log")
        wait_until(logged(observer, "state_sync_installed"), DEADLINE, "its log")
        state_sync = get(f"{observer.url}/api/v1/status")["sync"]
        assert isinstance(state_sync, dict)
        assert state_sync["state_sync"]["done"] == 1

        code, body = request("GET", f"{observer.url}/api/v1/log?from=1&limit=1")
        assert code == 410, body
        assert body["error"]["code"] == "pruned"
        base = int(body["base"])
        assert base > 0
        position = log_length(observer.url)
        ours = get(f"{observer.url}/api/v1/log?from={position}&limit=1")["entries"]
        for url in urls:
            wait_until(reaches(url, position), DEADLINE, f"{url} to reach {position}")
            theirs = get(f"{url}/api/v1/log?from={position}&limit=1")["entries"]
            assert theirs == ours

        archive = start_joiner(tmp_path, "archive", directory, nodes, backfill="on")
        holds_the_whole_log(archive, urls[0])
    finally:
        for joiner in (observer, archive):
            if joiner is not None and joiner.proc is not None:
                joiner.signal(signal.SIGTERM)
                joiner.wait(30)
        net.kill()
        for pid in processes_using(tmp_path):
            os.kill(pid, signal.SIGKILL)

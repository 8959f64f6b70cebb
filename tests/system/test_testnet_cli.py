"""``qudag-node testnet``: several real node processes, started and stopped as one."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.ports import free_port_block
from qudag_node.core.crypto import Scheme, Signer
from qudag_node.genesis_file import genesis_from_json
from tests.nodeproc import request, submit_json, wait_until
from tests.system.test_cli import ROOT, cli, command_env

NODES = 3
#: Seconds the testnet may take to bring every node up, or to stop them all.
DEADLINE = 90.0
NODE_LINE = re.compile(
    r"^(node\d+)  (http://127\.0\.0\.1:\d+)  peer port (\d+)  pid (\d+)  log (\S+)$"
)


@dataclass(frozen=True)
class NodeLine:
    """What the command printed about one node that came up."""

    name: str
    url: str
    p2p_port: int
    pid: int
    log: Path


def net_args(
    directory: Path, api_port: int, p2p_port: int, nodes: int = NODES, options: Sequence[str] = ()
) -> list[str]:
    """The arguments of a testnet of ``nodes`` nodes (``options`` after them)."""
    return [
        "testnet",
        *("--nodes", str(nodes), "--dir", str(directory)),
        *("--api-port", str(api_port), "--p2p-port", str(p2p_port), "--sync-interval", "1"),
        *options,
    ]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_using(directory: Path) -> list[int]:
    """Ids of the running processes whose QUDAG_DATA_DIR lies in ``directory``."""
    marker = f"QUDAG_DATA_DIR={directory}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if any(v.startswith(marker) for v in variables):
            found.append(int(entry.name))
    return found


class LocalNet:
    """One ``python -m qudag_node testnet`` process, its output read line by line."""

    def __init__(
        self,
        directory: Path,
        api_port: int,
        p2p_port: int,
        nodes: int = NODES,
        options: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        args = net_args(directory, api_port, p2p_port, nodes, options)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qudag_node", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=command_env(),
            cwd=ROOT,
        )
        self.stdout: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next_line(self) -> str:
        """The next line of stdout; fails at its end or after the deadline."""
        try:
            line = self._lines.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError(f"no output within {DEADLINE} s: {self.stdout}") from None
        if line is None:
            raise AssertionError(f"output ended: {self.stdout}\n{self.stderr()}")
        self.stdout.append(line)
        return line

    def wait_up(self) -> list[NodeLine]:
        """Read until the line on how to stop; the lines of the nodes that came up."""
        nodes = []
        while "Ctrl-C" not in (line := self.next_line()):
            if found := NODE_LINE.match(line):
                name, url, p2p, pid, log = found.groups()
                nodes.append(NodeLine(name, url, int(p2p), int(pid), Path(log)))
        return sorted(nodes, key=lambda n: n.name)

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig``; the exit code."""
        self.proc.send_signal(sig)
        return self.proc.wait(DEADLINE)

    def rest(self) -> list[str]:
        """The rest of stdout, after the process exited."""
        while (line := self._lines.get(timeout=DEADLINE)) is not None:
            self.stdout.append(line)
        return self.stdout

    def stderr(self) -> str:
        """Everything on stderr (waits for the process to exit)."""
        assert self.proc.stderr is not None
        self.proc.wait(DEADLINE)
        return self.proc.stderr.read()

    def kill(self) -> None:
        """SIGKILL the command if it still runs (its nodes stay; see the fixture)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)


@pytest.fixture
def ports() -> tuple[int, int]:
    """Free bases for the API ports and the peer ports."""
    api = free_port_block(NODES)
    return api, free_port_block(NODES, avoid=range(api, api + NODES))


@pytest.fixture
def testnet_dir(tmp_path: Path) -> Iterator[Path]:
    """The testnet directory; any node process still using it is killed at teardown."""
    directory = tmp_path / "testnet"
    yield directory
    for pid in processes_using(directory):
        os.kill(pid, signal.SIGKILL)


def check_files(directory: Path, scheme: Scheme = Scheme.MLDSA65_ED25519) -> None:
    """The token (64 hex characters) and the keys (of ``scheme``: 64 or 128) are in files
    only their owner reads."""
    token_file = directory / "peer-token"
    token = token_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", token)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    for i in range(1, NODES + 1):
        key_file = directory / f"node{i}" / "node.key"
        size = 64 if scheme is Scheme.ED25519 else 128
        assert re.fullmatch(f"[0-9a-f]{{{size}}}\n", key_file.read_text())
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        log = (directory / f"node{i}" / "node.log").read_text()
        assert '"event": "ready"' in log
        assert token.strip() not in log


def status(url: str) -> dict[str, Any]:
    """The node's status document."""
    code, body = request("GET", f"{url}/api/v1/status")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def run_until_up(
    directory: Path, ports: tuple[int, int], *more: str
) -> tuple[LocalNet, list[NodeLine]]:
    """Start the testnet (``more``: further arguments) and wait for all of its nodes."""
    net = LocalNet(directory, *ports, options=more)
    try:
        nodes = net.wait_up()
    except AssertionError:
        net.kill()
        raise
    assert [n.name for n in nodes] == [f"node{i}" for i in range(1, NODES + 1)], net.stdout
    return net, nodes


def test_the_nodes_come_up_as_validators_and_sigint_stops_them(
    testnet_dir: Path, ports: tuple[int, int]
) -> None:
    net, nodes = run_until_up(testnet_dir, ports)
    genesis = genesis_from_json((testnet_dir / "genesis.json").read_text(), "genesis.json")
    assert genesis.scheme is Scheme.MLDSA65_ED25519  # the default of new networks
    keys = {v.name: v.public_key.hex() for v in genesis.validators}
    ids = {v.name: node.hex() for v, node in zip(genesis.validators, genesis.ids, strict=True)}
    api, p2p = ports
    for i, node in enumerate(nodes):
        assert node.url == f"http://127.0.0.1:{api + i}"
        assert node.p2p_port == p2p + i
        assert ROOT / node.log == testnet_dir / node.name / "node.log"
        assert request("GET", f"{node.url}/health")[0] == 200
        doc = status(node.url)
        assert doc["network"]["id"] == "qudag-local-testnet"
        assert doc["network"]["genesis"] == genesis.hash.hex()
        assert doc["node"]["id"] == node.name
        assert doc["node"]["role"] == "validator"
        assert doc["network"]["scheme"] == "mldsa65-ed25519"
        assert doc["node"]["public_key"] == keys[node.name]
        assert doc["node"]["node_id"] == ids[node.name]
        assert doc["p2p"]["port"] == node.p2p_port
        assert doc["node"]["peer_transport"] == "tls"  # the default of new networks
    assert len(set(keys.values())) == NODES
    assert sorted(processes_using(testnet_dir)) == sorted(n.pid for n in nodes)

    # they form one network: a transaction submitted at one is final at every one
    code, body = submit_json(nodes[0].url, [b"testnet"], wait=True)
    assert (code, body["status"]) == (200, "final")
    wait_until(
        lambda: len({json.dumps(status(n.url)["log"]) for n in nodes}) == 1,
        30,
        "the same log everywhere",
    )
    assert status(nodes[-1].url)["log"]["length"] == 1

    assert net.stop(signal.SIGINT) == 0
    assert not [n.pid for n in nodes if pid_alive(n.pid)], "every node process is gone"
    assert processes_using(testnet_dir) == []
    assert net.rest()[-1] == f"{NODES} nodes stopped"
    token = (testnet_dir / "peer-token").read_text().strip()
    assert token not in "\n".join(net.stdout) + net.stderr()


def test_a_rerun_reuses_the_keys_and_another_size_is_refused(
    testnet_dir: Path, ports: tuple[int, int]
) -> None:
    net, nodes = run_until_up(testnet_dir, ports)
    first = {n.name: status(n.url)["node"]["public_key"] for n in nodes}
    genesis_text = (testnet_dir / "genesis.json").read_text()
    assert net.stop(signal.SIGTERM) == 0
    check_files(testnet_dir)

    net, nodes = run_until_up(testnet_dir, ports)
    again = {n.name: status(n.url)["node"]["public_key"] for n in nodes}
    assert net.stop(signal.SIGTERM) == 0
    assert again == first
    assert (testnet_dir / "genesis.json").read_text() == genesis_text
    assert "(reused)" in net.stdout[0]

    result = cli("testnet", "--nodes", "2", "--dir", str(testnet_dir))
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"qudag-node: {testnet_dir} holds a testnet of 3 nodes, not 2; "
        "run with --nodes 3 or use another --dir"
    )


def test_an_ed25519_testnet_made_before_schemes_were_named_is_reused_as_it_is(
    testnet_dir: Path, ports: tuple[int, int]
) -> None:
    """Its files as the testnet command wrote them then (a genesis file without a scheme,
    64-hex-character keys): rerun with the composite default, it stays that network."""
    signers = [Signer(bytes([0x30 + i]) * 32) for i in range(1, NODES + 1)]
    testnet_dir.mkdir()
    for i, signer in enumerate(signers, start=1):
        (testnet_dir / f"node{i}").mkdir(mode=0o700)
        key = testnet_dir / f"node{i}" / "node.key"
        key.write_text(signer.seed().hex() + "\n")
        key.chmod(0o600)
    document = {
        "network_id": "qudag-local-testnet",
        "validators": [
            {"name": f"node{i}", "public_key": s.public_key.hex()}
            for i, s in enumerate(signers, start=1)
        ],
    }
    (testnet_dir / "genesis.json").write_text(json.dumps(document, indent=2) + "\n")
    token = testnet_dir / "peer-token"
    token.write_text("6f1c0e3b9a27d4855c2e7a1f0b9d3c64e8a2f5071b6c9d3e4a5f6b7c8d9e0f12\n")
    token.chmod(0o600)
    old_text = (testnet_dir / "genesis.json").read_text()

    net, nodes = run_until_up(testnet_dir, ports)
    assert "(reused)" in net.stdout[0]
    genesis = genesis_from_json(old_text, "genesis.json")
    for node, signer in zip(nodes, signers, strict=True):
        doc = status(node.url)
        assert doc["network"]["scheme"] == "ed25519"
        assert doc["network"]["genesis"] == genesis.hash.hex()
        assert doc["node"]["public_key"] == doc["node"]["node_id"] == signer.public_key.hex()
    code, body = submit_json(nodes[0].url, [b"old testnet"], wait=True)
    assert (code, body["status"]) == (200, "final")
    assert net.stop(signal.SIGTERM) == 0
    assert (testnet_dir / "genesis.json").read_text() == old_text, "left as it was"
    check_files(testnet_dir, Scheme.ED25519)


def test_a_new_ed25519_testnet_on_request(testnet_dir: Path, ports: tuple[int, int]) -> None:
    net, nodes = run_until_up(testnet_dir, ports, "--scheme", "ed25519")
    assert {status(n.url)["network"]["scheme"] for n in nodes} == {"ed25519"}
    assert net.stop(signal.SIGTERM) == 0
    check_files(testnet_dir, Scheme.ED25519)
    document = json.loads((testnet_dir / "genesis.json").read_text())
    assert document["scheme"] == "ed25519"


def test_a_testnet_linked_in_clear_on_request(testnet_dir: Path, ports: tuple[int, int]) -> None:
    net, nodes = run_until_up(testnet_dir, ports, "--peer-transport", "plain")
    try:
        assert {status(n.url)["node"]["peer_transport"] for n in nodes} == {"plain"}
    finally:
        assert net.stop(signal.SIGTERM) == 0


def test_a_busy_port_is_named_and_nothing_starts(testnet_dir: Path, ports: tuple[int, int]) -> None:
    api, p2p = ports
    with socket.create_server(("127.0.0.1", p2p + 1)):
        result = cli(*net_args(testnet_dir, api, p2p))
    assert result.code == 2
    assert f"port {p2p + 1} (peer port of node2) is in use" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not NODE_LINE.search(result.stdout)
    assert processes_using(testnet_dir) == []


def test_a_node_that_exits_early_stops_the_testnet_with_1(
    testnet_dir: Path, ports: tuple[int, int]
) -> None:
    (testnet_dir / "node2").mkdir(parents=True)
    (testnet_dir / "node2" / "qudag.db").write_text("not a database\n")
    net = LocalNet(testnet_dir, *ports)
    try:
        code = net.proc.wait(DEADLINE)
    finally:
        net.kill()
    stderr = net.stderr()
    assert code == 1, stderr
    assert "--- the end of " in stderr
    assert "is not a usable database" in stderr, "the tail of node2's log is shown"
    assert stderr.splitlines()[-1] == ("qudag-node: node2 exited with code 1; stopped the testnet")
    assert processes_using(testnet_dir) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be from 1 to 32"),
        (["--nodes", "33"], "--nodes must be from 1 to 32"),
        (["--api-port", "7000"], "--api-port ports 7000-7003 overlap --p2p-port ports 7001-7004"),
        (["--api-port", "65535"], "--api-port must be from 1 to 65532 so that 4 ports fit"),
        (["--sync-interval", "0.01"], "--sync-interval must be a number of seconds"),
        (["--checkpoint-interval", "1"], "--checkpoint-interval must be"),
        (["--peer-transport", "ssl"], "--peer-transport: invalid choice: 'ssl'"),
    ],
)
def test_invalid_options_exit_2_before_anything_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("testnet", "--dir", str(tmp_path / "testnet"), *args)
    assert result.code == 2
    assert message in result.stderr
    assert not (tmp_path / "testnet").exists()


def test_help_describes_the_options() -> None:
    result = cli("testnet", "--help")
    assert result.code == 0
    for flag in (
        "--nodes",
        "--dir",
        "--api-port",
        "--p2p-port",
        "--sync-interval",
        "--checkpoint-interval",
        "--peer-transport",
    ):
        assert flag in result.stdout

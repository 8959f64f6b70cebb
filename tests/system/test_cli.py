"""The ``qudag-node`` command, run as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest

from bench.ports import free_ports
from qudag_node.config import PLATFORM_ENV, SETTINGS, flag_name, load_settings
from qudag_node.core.crypto import PUBLIC_KEY_SIZES, Scheme, Signer, tx_id
from qudag_node.core.genesis import NAME_RULE
from qudag_node.genesis_file import genesis_from_json
from tests.conftest import NodeFactory

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = (
    "run",
    "keygen",
    "network-env",
    "genesis",
    "testnet",
    "status",
    "submit",
    "backup",
    "restore",
)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: A composite key pair in hex: the two 32-byte seeds; ML-DSA-65's key and Ed25519's.
HEX128 = re.compile(r"^[0-9a-f]{128}$")
HEX3968 = re.compile(r"^[0-9a-f]{3968}$")
TIMEOUT = 60.0
#: Variables that would change what the command does; the tests set their own.
_OURS = {s.env for s in SETTINGS} | {"QUDAG_CONFIG", *PLATFORM_ENV}


@dataclass(frozen=True)
class Result:
    """A finished command."""

    code: int
    stdout: str
    stderr: str


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a command: ours cleared, the source tree importable."""
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Result:
    """Run ``python -m qudag_node ARGS`` to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "qudag_node", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=command_env(env),
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def run_until_exit(data: Path, **env: str) -> Result:
    """``qudag-node run`` on ``data`` (ports chosen by the system, JSON logs) until it
    exits; ``env`` adds or overrides settings."""
    return cli(
        "run",
        env={
            "QUDAG_DATA_DIR": str(data),
            "QUDAG_API_PORT": "0",
            "QUDAG_P2P_PORT": "0",
            "QUDAG_LOG_FORMAT": "json",
            **env,
        },
    )


async def acli(*args: str, stdin: bytes = b"", stderr: int = subprocess.PIPE) -> Result:
    """Like :func:`cli`, without blocking the event loop (a node may be serving in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qudag_node",
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=command_env(),
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), (err or b"").decode())


def read_terminal(leader: int) -> str:
    """Everything written to a pseudo-terminal whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def one_line(text: str) -> str:
    """The single line of ``text``; fails when there are more or none."""
    found = text.splitlines()
    assert len(found) == 1, text
    return found[0]


@pytest.mark.parametrize("args", [(), *((name,) for name in SUBCOMMANDS)])
def test_help(args: tuple[str, ...]) -> None:
    result = cli(*args, "--help")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"usage: qudag-node {' '.join(args)}".rstrip())


def test_top_level_help_lists_subcommands_and_exit_codes() -> None:
    result = cli("--help")
    for name in SUBCOMMANDS:
        assert name in result.stdout
    assert "Exit codes" in result.stdout


def test_run_help_has_a_flag_for_every_setting_but_the_secrets() -> None:
    text = cli("run", "--help").stdout
    assert "--config" in text
    for s in SETTINGS:
        assert (flag_name(s) in text) is not s.secret, s.name


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = cli("frobnicate")
    assert result.code == 2
    assert "invalid choice" in result.stderr


@pytest.mark.parametrize("args", [("run",), ()])
def test_invalid_setting_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, env={"QUDAG_API_PORT": "notaport", "QUDAG_DATA_DIR": str(tmp_path)})
    assert result.code == 2
    line = one_line(result.stderr)
    assert line.startswith("qudag-node: ")
    assert "QUDAG_API_PORT" in line
    assert "environment" in line
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_invalid_flag_names_the_command_line(tmp_path: Path) -> None:
    result = cli("run", "--api-port", "99999", "--data-dir", str(tmp_path))
    assert result.code == 2
    assert "QUDAG_API_PORT (from command line)" in one_line(result.stderr)


def test_bad_private_key_is_not_echoed(tmp_path: Path) -> None:
    value = "zz" + "5ec7e7" * 10 + "ab"
    result = cli("run", env={"NODE_PRIVATE_KEY": value, "QUDAG_DATA_DIR": str(tmp_path)})
    assert result.code == 2
    assert "NODE_PRIVATE_KEY" in one_line(result.stderr)
    assert value not in result.stderr
    assert value not in result.stdout


@pytest.mark.parametrize("source", ["QUDAG_VALIDATORS", "QUDAG_GENESIS"])
def test_a_node_key_of_another_scheme_than_its_network_stops_the_start(
    tmp_path: Path, source: str
) -> None:
    """An Ed25519 key on a composite network: exit 2, one line saying what to do, before
    the data dir is touched."""
    network = parse_dotenv(cli("network-env", "--nodes", "2").stdout)
    value = network["QUDAG_VALIDATORS"]
    if source == "QUDAG_GENESIS":
        genesis = tmp_path / "genesis.json"
        made = cli(
            "genesis", "--network-id", "pq-lab", "--validators", value, "--out", str(genesis)
        )
        assert made.code == 0, made.stderr
        value = str(genesis)
    key = bytes(nacl.signing.SigningKey.generate()).hex()
    data = tmp_path / "data"
    result = cli("run", env={"NODE_PRIVATE_KEY": key, source: value, "QUDAG_DATA_DIR": str(data)})
    assert result.code == 2
    assert one_line(result.stderr) == (
        "qudag-node: the node key is a ed25519 key but the network signs with"
        " mldsa65-ed25519: give NODE_PRIVATE_KEY a key made with"
        " qudag-node keygen --scheme mldsa65-ed25519"
    )
    assert key not in result.stderr + result.stdout
    assert not (data / "node.key").exists()


def test_secret_in_config_file_is_refused(tmp_path: Path) -> None:
    key = bytes(nacl.signing.SigningKey.generate()).hex()
    path = tmp_path / "node.toml"
    path.write_text(f'node_private_key = "{key}"\n')
    result = cli("run", "--config", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.code == 2
    assert "NODE_PRIVATE_KEY" in one_line(result.stderr)
    assert key not in result.stderr + result.stdout


def test_keygen_json_makes_a_composite_key_by_default() -> None:
    result = cli("keygen", "--json")
    assert result.code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"private_key", "public_key"}
    assert HEX128.match(doc["private_key"])
    assert HEX3968.match(doc["public_key"])
    derived = Signer(bytes.fromhex(doc["private_key"]))
    assert derived.scheme is Scheme.MLDSA65_ED25519
    assert derived.public_key.hex() == doc["public_key"]
    # the key's second half is an Ed25519 seed: its public key ends the composite's
    ed25519_seed = bytes.fromhex(doc["private_key"])[32:]
    ed25519_key = bytes(nacl.signing.SigningKey(ed25519_seed).verify_key)
    assert doc["public_key"].endswith(ed25519_key.hex())
    assert doc != json.loads(cli("keygen", "--json").stdout), "every key is new"


def test_keygen_json_of_an_ed25519_key() -> None:
    result = cli("keygen", "--json", "--scheme", "ed25519")
    assert result.code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"private_key", "public_key"}
    assert HEX64.match(doc["private_key"])
    assert HEX64.match(doc["public_key"])
    derived = nacl.signing.SigningKey(bytes.fromhex(doc["private_key"])).verify_key
    assert bytes(derived).hex() == doc["public_key"]


@pytest.mark.parametrize(("scheme", "private_size"), [("ed25519", 64), ("mldsa65-ed25519", 128)])
def test_keygen_plain(scheme: str, private_size: int) -> None:
    result = cli("keygen", "--scheme", scheme)
    assert result.code == 0
    private_line, public_line = result.stdout.splitlines()
    private = private_line.removeprefix("private_key: ")
    public = public_line.removeprefix("public_key: ")
    assert re.fullmatch(f"[0-9a-f]{{{private_size}}}", private)
    size = PUBLIC_KEY_SIZES[Scheme.from_label(scheme)]
    assert re.fullmatch(f"[0-9a-f]{{{2 * size}}}", public)
    assert Signer(bytes.fromhex(private)).public_key.hex() == public
    assert "secret" in one_line(result.stderr)
    assert private not in result.stderr


def test_keygen_refuses_an_unknown_scheme() -> None:
    result = cli("keygen", "--scheme", "dilithium3")
    assert result.code == 2
    assert "invalid choice: 'dilithium3'" in result.stderr
    assert result.stdout == ""


def new_public_key(*scheme: str) -> str:
    """The public key of a fresh key pair made by ``qudag-node keygen`` (``scheme``: its
    arguments, e.g. ``--scheme ed25519``)."""
    result = cli("keygen", "--json", *scheme)
    assert result.code == 0, result.stderr
    key: str = json.loads(result.stdout)["public_key"]
    return key


def printed_genesis_hash(stderr: str) -> str:
    """The genesis hash in the one line ``qudag-node genesis`` writes to stderr."""
    found = re.fullmatch(r"qudag-node: genesis hash ([0-9a-f]{64}) \(.*\)", one_line(stderr))
    assert found, stderr
    return found[1]


def test_genesis_writes_a_file_the_settings_load(tmp_path: Path) -> None:
    keys = [new_public_key() for _ in range(4)]
    out = tmp_path / "genesis.json"
    result = cli(
        "genesis",
        "--network-id",
        "qudag-lab",
        *(arg for i, key in enumerate(keys[:3], 1) for arg in ("--validator", f"node{i}={key}")),
        "--validators",
        f"node4={keys[3].upper()}",
        "--out",
        str(out),
    )
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    printed = printed_genesis_hash(result.stderr)
    assert "network qudag-lab, 4 validators" in result.stderr
    assert str(out) in result.stderr

    settings = load_settings({"QUDAG_GENESIS": str(out), "NODE_ID": "observer"})
    genesis = settings.genesis(bytes.fromhex(new_public_key()))
    assert genesis.hash.hex() == printed
    assert genesis.network_id == "qudag-lab"
    assert genesis.scheme is Scheme.MLDSA65_ED25519
    assert [(v.name, v.public_key.hex()) for v in genesis.validators] == [
        (f"node{i}", key) for i, key in enumerate(keys, 1)
    ]
    document = json.loads(out.read_text())
    assert (document["scheme"], document["hash"]) == ("mldsa65-ed25519", printed)
    assert out.stat().st_size < 20_000, "4 composite validators: still one small file"


def test_genesis_of_ed25519_keys_names_its_scheme(tmp_path: Path) -> None:
    keys = [new_public_key("--scheme", "ed25519") for _ in range(2)]
    result = cli("genesis", "--network-id", "old-lab", "--validators", f"a={keys[0]},b={keys[1]}")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["scheme"] == "ed25519"
    assert genesis_from_json(result.stdout, "stdout").scheme is Scheme.ED25519


def test_genesis_refuses_keys_of_two_schemes(tmp_path: Path) -> None:
    ed25519, composite = new_public_key("--scheme", "ed25519"), new_public_key()
    result = cli("genesis", "--network-id", "lab", "--validators", f"a={ed25519},b={composite}")
    assert result.code == 2
    assert one_line(result.stderr) == (
        "qudag-node: invalid genesis: validator b: a ed25519 public key is 32 bytes"
    )
    assert result.stdout == ""


def test_genesis_to_stdout_matches_the_file(tmp_path: Path) -> None:
    key1, key2 = new_public_key(), new_public_key()
    args = ("genesis", "--network-id", "lab", "--validators", f"a={key1},b={key2}")
    to_stdout = cli(*args)
    assert to_stdout.code == 0, to_stdout.stderr
    genesis = genesis_from_json(to_stdout.stdout, "stdout")
    assert genesis.hash.hex() == printed_genesis_hash(to_stdout.stderr)
    assert [v.name for v in genesis.validators] == ["a", "b"]

    out = tmp_path / "g.json"
    assert cli(*args, "--out", str(out)).code == 0
    assert out.read_text() == to_stdout.stdout


def test_genesis_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "genesis.json"
    out.write_text("precious")
    args = ("genesis", "--network-id", "lab", "--validator", f"a={new_public_key()}")
    refused = cli(*args, "--out", str(out))
    assert refused.code == 2
    line = one_line(refused.stderr)
    assert line == f"qudag-node: {out} exists; use --force to overwrite it"
    assert out.read_text() == "precious"

    forced = cli(*args, "--out", str(out), "--force")
    assert forced.code == 0, forced.stderr
    assert genesis_from_json(out.read_text(), str(out)).hash.hex() == printed_genesis_hash(
        forced.stderr
    )


def test_genesis_into_a_missing_directory_fails(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "genesis.json"
    result = cli(
        "genesis", "--network-id", "lab", "--validator", f"a={new_public_key()}", "--out", str(out)
    )
    assert result.code == 1
    assert one_line(result.stderr).startswith(f"qudag-node: cannot write {out}: ")
    assert not out.parent.exists()


KEY_A = "0a" * 32
KEY_B = "0b" * 32


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--validator", f"a={KEY_A}"), "give the network id with --network-id ID"),
        (
            ("--network-id", "bad id!", "--validator", f"a={KEY_A}"),
            f"--network-id must be {NAME_RULE}",
        ),
        (("--network-id", "lab"), "give at least one --validator NAME=PUBLIC_KEY"),
        (
            ("--network-id", "lab", "--validators", " , "),
            "give at least one --validator NAME=PUBLIC_KEY",
        ),
        (
            ("--network-id", "lab", "--validator", "a=1234"),
            "invalid validators: entry 1 (a): a public key is 32 bytes (ed25519)"
            " or 1984 bytes (mldsa65-ed25519)",
        ),
        (
            ("--network-id", "lab", "--validator", KEY_A),
            "invalid validators: entry 1 is not NAME=PUBLIC_KEY",
        ),
        (
            ("--network-id", "lab", "--validator", f"a={KEY_A}", "--validators", f"b={KEY_A}"),
            "invalid validators: entry 2 (b): public key already used by entry 1 (a)",
        ),
        (
            ("--network-id", "lab", "--validators", f"a={KEY_A},a={KEY_B}"),
            "invalid validators: entry 2 (a): name already used by entry 1 (a)",
        ),
        (
            ("--network-id", "lab", "--validator", f"a={KEY_A}", "--force"),
            "--force needs --out PATH",
        ),
    ],
)
def test_genesis_usage_errors(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    result = cli("genesis", *args, cwd=tmp_path)
    assert result.code == 2
    assert one_line(result.stderr) == f"qudag-node: {expected}"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def parse_dotenv(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of ``qudag-node network-env``, after its comment line."""
    first, *lines = text.splitlines()
    assert first.startswith("# "), text
    pairs = {}
    for line in lines:
        key, sep, value = line.partition("=")
        assert sep, line
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), line
        pairs[key] = value
    return pairs


def network_signers(
    env: dict[str, str], count: int, scheme: Scheme = Scheme.MLDSA65_ED25519
) -> list[Signer]:
    """The keys ``NODE1_PRIVATE_KEY`` .. in ``env``, each of ``scheme``."""
    keys = []
    for i in range(1, count + 1):
        private = env[f"NODE{i}_PRIVATE_KEY"]
        assert (HEX64 if scheme is Scheme.ED25519 else HEX128).match(private)
        keys.append(Signer(bytes.fromhex(private)))
    assert {key.scheme for key in keys} == {scheme}
    return keys


@pytest.mark.parametrize(
    ("args", "scheme"),
    [((), Scheme.MLDSA65_ED25519), (("--scheme", "ed25519"), Scheme.ED25519)],
    ids=["default", "ed25519"],
)
def test_network_env_prints_a_network_its_nodes_accept(
    args: tuple[str, ...], scheme: Scheme
) -> None:
    result = cli("network-env", "--nodes", "4", *args)
    assert result.code == 0, result.stderr
    assert f"({scheme.label} keys)" in result.stdout.splitlines()[0]
    env = parse_dotenv(result.stdout)
    names = [f"NODE{i}_PRIVATE_KEY" for i in range(1, 5)]
    assert list(env) == [*names, "PEER_AUTH_TOKEN", "QUDAG_VALIDATORS"]
    assert HEX64.match(env["PEER_AUTH_TOKEN"])
    signers = network_signers(env, 4, scheme)
    assert len({s.public_key for s in signers}) == 4
    expected = [(f"node{i}", s.public_key) for i, s in enumerate(signers, 1)]
    for i, signer in enumerate(signers, 1):
        settings = load_settings(
            {
                "NODE_ID": f"node{i}",
                "NETWORK_MODE": "testnet",
                "NODE_PRIVATE_KEY": env[f"NODE{i}_PRIVATE_KEY"],
                "PEER_AUTH_TOKEN": env["PEER_AUTH_TOKEN"],
                "QUDAG_VALIDATORS": env["QUDAG_VALIDATORS"],
                "QUDAG_PEERS": "node1:7000",
            }
        )
        genesis = settings.genesis(signer.public_key)
        assert genesis.scheme is scheme
        assert [(v.name, v.public_key) for v in genesis.validators] == expected
        assert genesis.index_of(signer.node_id) == i - 1, f"node{i} is validator {i}"
    for value in env.values():
        assert value not in result.stderr
    other = parse_dotenv(cli("network-env", "--nodes", "4", *args).stdout)
    assert not set(env.values()) & set(other.values()), "every network is new"


def test_network_env_writes_a_private_file_and_prints_no_secret(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    result = cli("network-env", "--nodes", "2", "--output", str(out))
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert str(out) in one_line(result.stderr)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    env = parse_dotenv(text)
    assert len(network_signers(env, 2)) == 2
    assert "NODE3_PRIVATE_KEY" not in env
    for name in ("NODE1_PRIVATE_KEY", "NODE2_PRIVATE_KEY", "PEER_AUTH_TOKEN"):
        assert env[name] not in result.stderr

    again = cli("network-env", "--nodes", "2", "--output", str(out))
    assert again.code == 2
    assert one_line(again.stderr) == f"qudag-node: {out} exists; not overwriting it"
    assert out.read_text() == text


@pytest.mark.parametrize(
    "args", [("--nodes", "0"), ("--nodes", "33"), ("--nodes", "four"), ()], ids=str
)
def test_network_env_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = cli("network-env", *args, "--output", str(tmp_path / ".env"))
    assert result.code == 2
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_status_of_an_unreachable_node() -> None:
    port = free_ports(1)[0]
    result = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert result.code == 1
    line = one_line(result.stderr)
    assert line.startswith("qudag-node: cannot reach the node at ")
    assert f"127.0.0.1:{port}" in line
    assert result.stdout == ""


def test_status_default_url_follows_the_api_port() -> None:
    port = free_ports(1)[0]
    result = cli("status", env={"QUDAG_API_PORT": str(port)})
    assert result.code == 1
    assert f"http://127.0.0.1:{port}/api/v1/status" in one_line(result.stderr)


def test_url_must_be_http() -> None:
    result = cli("status", "--url", "file:///etc/passwd")
    assert result.code == 2
    assert "http://" in one_line(result.stderr)


def test_submit_to_an_unreachable_node() -> None:
    result = cli("submit", "hello", "--url", f"http://127.0.0.1:{free_ports(1)[0]}")
    assert result.code == 1
    assert "cannot reach the node" in one_line(result.stderr)


def test_submit_takes_data_or_a_file_not_both(tmp_path: Path) -> None:
    path = tmp_path / "tx"
    path.write_bytes(b"x")
    result = cli("submit", "hello", "--file", str(path), "--url", "http://127.0.0.1:1")
    assert result.code == 2
    assert "not both" in one_line(result.stderr)


def test_submit_without_data_on_a_terminal_is_a_usage_error() -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qudag_node", "submit", "--url", "http://127.0.0.1:1"],
            stdin=follower,
            capture_output=True,
            text=True,
            env=command_env(),
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert "DATA, --file PATH or on stdin" in one_line(done.stderr)


def test_backup_needs_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "backup.db"
    result = cli("backup", str(target), "--data-dir", str(tmp_path / "data"))
    assert result.code == 1
    assert "is not a directory" in one_line(result.stderr)
    assert not target.parent.exists()


def test_backup_refuses_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    target.write_bytes(b"precious")
    result = cli("backup", str(target), "--data-dir", str(tmp_path / "data"))
    assert result.code == 1
    line = one_line(result.stderr)
    assert str(target) in line
    assert "exists" in line
    assert target.read_bytes() == b"precious"


async def test_status_and_submit_against_a_node(node_factory: NodeFactory) -> None:
    node = await node_factory()
    status = await acli("status", "--url", node.url)
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["node"]["id"] == node.settings.node_id

    stored = await acli("submit", "hello", "--url", node.url)
    assert stored.code == 0, stored.stderr
    assert json.loads(stored.stdout) == {"ids": [tx_id(b"hello").hex()]}

    piped = await acli("submit", "--url", node.url, "--wait", "--timeout", "20", stdin=b"\x00\xff")
    assert piped.code == 0, piped.stderr
    assert json.loads(piped.stdout) == {"ids": [tx_id(b"\x00\xff").hex()], "status": "final"}

    # timeouts Python spells with an exponent still reach the node as plain decimals
    waited = await acli("submit", "long", "--url", node.url, "--wait", "--timeout", "1e9")
    assert waited.code == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "final"
    short = await acli("submit", "short", "--url", node.url, "--wait", "--timeout", "1e-7")
    assert short.code == 1
    assert one_line(short.stderr).startswith("qudag-node: timeout: not final after 0.001 s")

    refused = await acli("submit", "-", "--url", node.url, stdin=b"")
    assert refused.code == 1
    assert one_line(refused.stderr).startswith("qudag-node: empty_transaction: ")


async def test_backup_and_restore_commands(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = await node_factory()
    assert (await acli("submit", "kept", "--url", node.url, "--wait")).code == 0
    target = tmp_path / "backup.db"

    backup = await acli("backup", str(target), "--data-dir", str(node.data_dir))
    assert backup.code == 0, backup.stderr
    assert backup.stderr == "", "no progress off a terminal"
    summary = re.fullmatch(
        r"backup: (\d+) pages, (\d+) bytes in [0-9.]+ s from .+ to .+\n", backup.stdout
    )
    assert summary, backup.stdout
    assert int(summary[1]) > 0
    assert int(summary[2]) == target.stat().st_size

    occupied = await acli("restore", str(target), "--data-dir", str(node.data_dir))
    assert occupied.code == 1
    assert "already holds a database" in one_line(occupied.stderr)

    fresh = tmp_path / "fresh"
    restored = await acli("restore", str(target), "--data-dir", str(fresh))
    assert restored.code == 0, restored.stderr
    assert (fresh / "qudag.db").read_bytes() == target.read_bytes()


async def test_backup_shows_progress_on_a_terminal(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    node = await node_factory()
    target = tmp_path / "backup.db"
    leader, follower = pty.openpty()
    try:
        try:
            backup = await acli(
                "backup", str(target), "--data-dir", str(node.data_dir), stderr=follower
            )
        finally:
            os.close(follower)
        shown = read_terminal(leader)
    finally:
        os.close(leader)
    assert backup.code == 0
    assert re.search(r"\rbackup: 100% \((\d+)/\1 pages\)", shown), shown
    assert shown.endswith("\n")
    assert backup.stdout.startswith("backup: ")

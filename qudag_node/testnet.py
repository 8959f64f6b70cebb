"""A local testnet: N validator nodes on this machine, one ``qudag-node run`` process each.

:func:`run` keeps everything in one directory::

    DIR/genesis.json        network qudag-local-testnet, validators node1..nodeN
    DIR/peer-token          the shared PEER_AUTH_TOKEN (mode 0600)
    DIR/nodeI/node.key      nodeI's private key (mode 0600), read by the node itself
    DIR/nodeI/node.log      nodeI's output (appended to on every run)

A second run reuses the directory, so the nodes keep their keys and databases. The nodes
listen on 127.0.0.1 only: node I serves its API on ``api_port + I - 1`` and its peer
links on ``p2p_port + I - 1``, and knows every other node as a peer. The nodes run in
their own session, so a Ctrl-C reaches only this process, which then stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from qudag_node import config
from qudag_node.core.crypto import DEFAULT_SCHEME, Scheme
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import PublicKey
from qudag_node.failure import NodeFailure
from qudag_node.genesis_file import (
    GenesisFileError,
    genesis_from_json,
    genesis_to_json,
    validators_genesis,
)
from qudag_node.keyfile import KEY_FILENAME, key_file

NETWORK_ID = "qudag-local-testnet"
MAX_NODES = 32
HOST = "127.0.0.1"
GENESIS_FILENAME = "genesis.json"
TOKEN_FILENAME = "peer-token"  # noqa: S105 (a file name)
LOG_FILENAME = "node.log"
#: Seconds every node has to answer ``GET /health`` with 200 after it was started.
START_TIMEOUT = 60.0
#: Seconds the nodes have to exit after SIGTERM before they get SIGKILL.
STOP_TIMEOUT = 30.0
#: Lines of a failed node's log that are shown.
TAIL_LINES = 20
#: Variables of the caller's environment that the nodes do not inherit.
CLEARED_PREFIXES = ("QUDAG_", "NODE_", "PEER_", "FLY_")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class LaunchError(Exception):
    """The testnet cannot start, or stopped on a failure; the message is one line.

    ``exit_code`` is :data:`EXIT_USAGE` for the caller's input (options, the directory,
    a busy port) and :data:`EXIT_FAILURE` for a node that failed at run time.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Options:
    """What to run: ``nodes`` nodes in ``directory`` on consecutive ports from the bases."""

    nodes: int = 4
    directory: Path = Path("testnet")
    api_port: int = 8081
    p2p_port: int = 7001
    sync_interval: float = 5.0
    checkpoint_interval: int = 100
    scheme: Scheme = DEFAULT_SCHEME  # of new keys: existing ones keep theirs
    peer_transport: str = config.PEER_TRANSPORTS[0]  # every node the same: links need both ends


@dataclass(frozen=True)
class NodeSpec:
    """One node of the testnet: its name, its files and its ports."""

    name: str
    data_dir: Path
    api_port: int
    p2p_port: int

    @property
    def url(self) -> str:
        """Base URL of the node's API."""
        return f"http://{HOST}:{self.api_port}"

    @property
    def log_path(self) -> Path:
        """Where the node's output goes."""
        return self.data_dir / LOG_FILENAME


@dataclass(frozen=True)
class Layout:
    """A prepared testnet directory."""

    genesis: Genesis
    token: str
    created: bool


@dataclass
class _Running:
    """A started node process."""

    spec: NodeSpec
    proc: asyncio.subprocess.Process
    log_offset: int


def run(options: Options) -> int:
    """Prepare ``options.directory``, run the nodes until SIGINT or SIGTERM, stop them.

    Returns :data:`EXIT_OK` after a clean stop; raises :class:`LaunchError` otherwise.
    """
    check_options(options)
    layout = prepare(options)
    specs = node_specs(options)
    check_ports_free(specs)
    count = f"{options.nodes} validator{'' if options.nodes == 1 else 's'}"
    state = "created" if layout.created else "reused"
    _out(
        f"testnet {NETWORK_ID}: {count}, genesis {layout.genesis.hash.hex()}, "
        f"files in {options.directory} ({state})"
    )
    return asyncio.run(_serve(specs, node_env(options, specs, layout.token), layout.token))


# --- options and files -------------------------------------------------------------


def check_options(options: Options) -> None:
    """Raise :class:`LaunchError` (usage) for options no testnet can run with."""
    n = options.nodes
    if not 1 <= n <= MAX_NODES:
        raise LaunchError(f"--nodes must be from 1 to {MAX_NODES}", EXIT_USAGE)
    ranges = {}
    for flag, base in (("--api-port", options.api_port), ("--p2p-port", options.p2p_port)):
        if not 1 <= base <= 65536 - n:
            raise LaunchError(
                f"{flag} must be from 1 to {65536 - n} so that {n} ports fit", EXIT_USAGE
            )
        ranges[flag] = range(base, base + n)
    api, p2p = ranges["--api-port"], ranges["--p2p-port"]
    if api.start < p2p.stop and p2p.start < api.stop:
        raise LaunchError(
            f"--api-port ports {api.start}-{api.stop - 1} overlap "
            f"--p2p-port ports {p2p.start}-{p2p.stop - 1}",
            EXIT_USAGE,
        )
    try:
        config.BY_NAME["dag_sync_interval"].parse(f"{options.sync_interval:g}")
    except ValueError as e:
        raise LaunchError(f"--sync-interval {e}", EXIT_USAGE) from None
    try:
        config.BY_NAME["checkpoint_interval"].parse(str(options.checkpoint_interval))
    except ValueError as e:
        raise LaunchError(f"--checkpoint-interval {e}", EXIT_USAGE) from None


def node_specs(options: Options) -> list[NodeSpec]:
    """The nodes of the testnet, node1 first."""
    root = options.directory.absolute()
    return [
        NodeSpec(f"node{i}", root / f"node{i}", options.api_port + i - 1, options.p2p_port + i - 1)
        for i in range(1, options.nodes + 1)
    ]


def prepare(options: Options) -> Layout:
    """Create or reuse the directory: a key per node, the peer token, the genesis file.

    Raises :class:`LaunchError` (usage) when the directory holds something else, such
    as a testnet of another size.
    """
    root = options.directory
    genesis_path = root / GENESIS_FILENAME
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaunchError(f"cannot create {root}: {e.strerror}", EXIT_USAGE) from None
    existing = _read_genesis(genesis_path)
    _check_size(root, existing, options.nodes)
    keys = [_node_key(root / f"node{i}", options.scheme) for i in range(1, options.nodes + 1)]
    validators = tuple(Validator(f"node{i}", key) for i, key in enumerate(keys, start=1))
    try:
        genesis = validators_genesis(NETWORK_ID, validators)
    except ValueError as e:
        raise LaunchError(
            f"the node keys in {root} do not make one network: {e}", EXIT_USAGE
        ) from None
    if existing is None:
        _write_new(genesis_path, genesis_to_json(genesis), mode=0o644)
    elif existing.hash != genesis.hash:
        raise LaunchError(
            f"{genesis_path} does not match the node keys in {root}; remove it to write it anew",
            EXIT_USAGE,
        )
    token, token_created = _token(root / TOKEN_FILENAME)
    return Layout(genesis, token, existing is None or token_created)


def _read_genesis(path: Path) -> Genesis | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise LaunchError(f"cannot read {path}: {e}", EXIT_USAGE) from None
    try:
        genesis = genesis_from_json(text, str(path))
    except GenesisFileError as e:
        raise LaunchError(str(e), EXIT_USAGE) from None
    if genesis.network_id != NETWORK_ID:
        raise LaunchError(
            f"{path} is for network {genesis.network_id}, not {NETWORK_ID}; use another --dir",
            EXIT_USAGE,
        )
    return genesis


def _check_size(root: Path, existing: Genesis | None, nodes: int) -> None:
    """Refuse a directory that holds a testnet of another size than ``nodes``."""
    if existing is not None:
        names = [v.name for v in existing.validators]
        if names == [f"node{i}" for i in range(1, nodes + 1)]:
            return
        size = existing.n
        raise LaunchError(
            f"{root} holds a testnet of {size} node{'' if size == 1 else 's'}, not {nodes}; "
            f"run with --nodes {size} or use another --dir",
            EXIT_USAGE,
        )
    extra = root / f"node{nodes + 1}" / KEY_FILENAME
    if extra.exists():
        raise LaunchError(
            f"{root} holds a testnet of more than {nodes} nodes ({extra} exists); "
            f"use another --dir",
            EXIT_USAGE,
        )


def _node_key(data_dir: Path, scheme: Scheme) -> PublicKey:
    """The public key of the node keeping its data in ``data_dir``; creates the key once
    (of ``scheme``), in the file the node itself reads."""
    try:
        data_dir.mkdir(mode=0o700, exist_ok=True)
        signer, _ = key_file(data_dir / KEY_FILENAME, scheme)
    except OSError as e:
        raise LaunchError(f"cannot use {data_dir}: {e.strerror}", EXIT_USAGE) from None
    except NodeFailure as e:
        raise LaunchError(str(e), EXIT_USAGE) from None
    return signer.public_key


def _token(path: Path) -> tuple[str, bool]:
    """The shared peer token kept in ``path``, and whether it was created now."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = secrets.token_hex(32)
        _write_new(path, token + "\n")
        return token, True
    except (OSError, UnicodeDecodeError):
        raise LaunchError(f"cannot read the peer token in {path}", EXIT_USAGE) from None
    try:
        config.BY_NAME["peer_auth_token"].parse(token)
    except ValueError as e:
        raise LaunchError(f"the peer token in {path} {e}", EXIT_USAGE) from None
    return token, False


def _write_new(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` (it must not exist) with ``text``, durably, with file ``mode``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise LaunchError(f"cannot write {path}: {e.strerror}", EXIT_USAGE) from None


# --- ports and environment ---------------------------------------------------------


def check_ports_free(specs: list[NodeSpec]) -> None:
    """Raise :class:`LaunchError` (usage) naming the first port something else holds."""
    for spec in specs:
        for kind, port in (("API", spec.api_port), ("peer", spec.p2p_port)):
            if not port_is_free(port):
                raise LaunchError(
                    f"port {port} ({kind} port of {spec.name}) is in use on {HOST}; "
                    f"free it or choose other ports",
                    EXIT_USAGE,
                )


def port_is_free(port: int) -> bool:
    """Whether a TCP listener could bind ``HOST:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node does
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def node_env(options: Options, specs: list[NodeSpec], token: str) -> dict[str, dict[str, str]]:
    """Each node's environment by name: ours without node settings, plus its own."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    genesis = str((options.directory / GENESIS_FILENAME).absolute())
    out = {}
    for spec in specs:
        peers = ",".join(f"{HOST}:{s.p2p_port}" for s in specs if s is not spec)
        out[spec.name] = {
            **base,
            "NODE_ID": spec.name,
            "QUDAG_DATA_DIR": str(spec.data_dir),
            "QUDAG_API_HOST": HOST,
            "QUDAG_API_PORT": str(spec.api_port),
            "QUDAG_P2P_PORT": str(spec.p2p_port),
            "QUDAG_PEERS": peers,
            "QUDAG_GENESIS": genesis,
            "PEER_AUTH_TOKEN": token,
            "DAG_SYNC_INTERVAL": f"{options.sync_interval:g}",
            "QUDAG_CHECKPOINT_INTERVAL": str(options.checkpoint_interval),
            "QUDAG_PEER_TRANSPORT": options.peer_transport,
            "QUDAG_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    return out


# --- running -----------------------------------------------------------------------


async def _serve(specs: list[NodeSpec], envs: dict[str, dict[str, str]], token: str) -> int:
    """Start the nodes, wait for them, run until a signal, stop them."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running: list[_Running] = []
    try:
        for spec in specs:
            running.append(await _spawn(spec, envs[spec.name]))
        failure = await _supervise(running, stop, token)
    finally:
        codes = await _stop_all(running)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if failure is not None:
        raise LaunchError(f"{failure}; stopped the testnet")
    _report_stopped(running, codes)
    return EXIT_OK


async def _supervise(running: list[_Running], stop: asyncio.Event, token: str) -> str | None:
    """Wait for the nodes to come up, then for a signal; a failure's message, or None."""
    exits: dict[asyncio.Task[Any], _Running] = {
        asyncio.create_task(r.proc.wait()): r for r in running
    }
    stopping: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    try:
        failure = await _start_up(running, exits, stopping, token)
        if failure is not None or stop.is_set():
            return failure
        _out(f"{_count(running)} up; press Ctrl-C (or send SIGTERM) to stop them")
        done, _ = await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
        return _first_exit(done, exits, token)
    finally:
        for task in [*exits, stopping]:
            task.cancel()
        await asyncio.gather(*exits, stopping, return_exceptions=True)


async def _spawn(spec: NodeSpec, env: dict[str, str]) -> _Running:
    """Start one node with its output appended to its log file."""
    try:
        with spec.log_path.open("ab") as log:
            offset = log.tell()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "qudag_node",
                "run",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us; we stop the nodes
            )
    except OSError as e:
        raise LaunchError(f"cannot start {spec.name}: {e.strerror}") from None
    return _Running(spec, proc, offset)


async def _start_up(
    running: list[_Running],
    exits: dict[asyncio.Task[Any], _Running],
    stopping: asyncio.Task[Any],
    token: str,
) -> str | None:
    """Wait until every node is healthy, printing each; a failure's message, or None."""
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        waiting: dict[asyncio.Task[Any], _Running] = {
            asyncio.create_task(_until_healthy(session, r.spec)): r for r in running
        }
        try:
            while waiting and not stopping.done():
                remaining = deadline - time.monotonic()
                done, _ = await asyncio.wait(
                    {*waiting, *exits, stopping},
                    timeout=max(remaining, 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    late = next(r for r in running if r in waiting.values())
                    _show_tail(late, token)
                    return f"{late.spec.name} did not answer /health within {START_TIMEOUT:g} s"
                failure = _first_exit(done, exits, token)
                if failure is not None:
                    return failure
                for task in done & waiting.keys():
                    _announce(waiting.pop(task))
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
    return None


async def _until_healthy(session: aiohttp.ClientSession, spec: NodeSpec) -> None:
    """Poll ``GET /health`` until it answers 200."""
    delay = 0.05
    timeout = aiohttp.ClientTimeout(total=2.0)
    while True:
        try:
            async with session.get(f"{spec.url}/health", timeout=timeout) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _first_exit(
    done: set[asyncio.Task[Any]], exits: dict[asyncio.Task[Any], _Running], token: str
) -> str | None:
    """If a node exited: show the end of its log and return the message saying so."""
    exited = [exits[task] for task in done if task in exits]
    if not exited:
        return None
    node = exited[0]
    _show_tail(node, token)
    return f"{node.spec.name} exited with code {node.proc.returncode}"


async def _stop_all(running: list[_Running]) -> dict[str, int]:
    """SIGTERM every node still running, SIGKILL after the deadline; exit codes by name."""
    live = [r for r in running if r.proc.returncode is None]
    for r in live:
        _send(r.proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(r.proc.wait() for r in live)), STOP_TIMEOUT)
    except TimeoutError:
        for r in running:
            if r.proc.returncode is None:
                _say(f"{r.spec.name} did not stop within {STOP_TIMEOUT:g} s; killing it")
                _send(r.proc, signal.SIGKILL)
        await asyncio.gather(*(r.proc.wait() for r in live))
    return {r.spec.name: r.proc.returncode for r in running if r.proc.returncode is not None}


def _send(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        proc.send_signal(sig)


# --- output ------------------------------------------------------------------------


def _out(line: str) -> None:
    print(line, flush=True)


def _say(line: str) -> None:
    print(f"qudag-node: {line}", file=sys.stderr, flush=True)


def _announce(node: _Running) -> None:
    spec = node.spec
    _out(
        f"{spec.name}  {spec.url}  peer port {spec.p2p_port}  "
        f"pid {node.proc.pid}  log {_shown(spec.log_path)}"
    )


def _report_stopped(running: list[_Running], codes: dict[str, int]) -> None:
    failed = {name: code for name, code in codes.items() if code != 0}
    for name, code in failed.items():
        _say(f"{name} exited with code {code} while stopping; see its log")
    _out(f"{_count(running)} stopped")


def _count(running: list[_Running]) -> str:
    return f"{len(running)} node{'' if len(running) == 1 else 's'}"


def _show_tail(node: _Running, token: str) -> None:
    """Print the end of what ``node`` wrote in this run to stderr, the token redacted."""
    try:
        with node.spec.log_path.open("rb") as fh:
            fh.seek(node.log_offset)
            text = fh.read().decode(errors="replace")
    except OSError as e:
        _say(f"cannot read {_shown(node.spec.log_path)}: {e.strerror}")
        return
    lines = text.replace(token, "<redacted>").splitlines()[-TAIL_LINES:]
    print(f"--- the end of {_shown(node.spec.log_path)} ---", file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    print("---", file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

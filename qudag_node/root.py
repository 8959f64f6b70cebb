"""The composition root: every part of a node built as a local, wired, and run in one
TaskGroup; the whole shutdown bounded by ``QUDAG_SHUTDOWN_TIMEOUT``.

:func:`serve` opens the data dir (key, genesis, database), loads the engine from the
state on disk, builds the verifier, metrics, syncer, peer links, discovery, the client
submissions, the node (:class:`~qudag_node.node.Node`: the task that steps the engine
through the pump), the quorum watch, the read side (:class:`~qudag_node.view.NodeView`)
and the API, and runs them until ``shutdown_trigger`` returns. The shutdown then
refuses new submissions and answers finality waiters, closes the API (in-flight
requests finish), stops the links, syncer and discovery, and lets the pump commit what
is queued, under one deadline: past ``QUDAG_SHUTDOWN_TIMEOUT`` whatever still runs is
cancelled and the node stops with :class:`~qudag_node.failure.NodeFailure`. The
database is closed last, whatever happened, and never cut short.
:func:`serve_until_signalled` is the process's: SIGTERM and SIGINT trigger the
shutdown, and a watchdog thread ends the process if even the event loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qudag_node import __version__
from qudag_node.api import make_app, start_api
from qudag_node.config import ConfigError, Settings
from qudag_node.core.backfill import Backfill
from qudag_node.core.crypto import Signer, log_hash_start
from qudag_node.core.engine import Engine, Role
from qudag_node.core.genesis import Genesis
from qudag_node.core.joining import InstallCheckpoint, Joining
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId
from qudag_node.discovery import Discovery, Resolver
from qudag_node.disk import DiskGuard
from qudag_node.failure import NodeFailure, stop_cause
from qudag_node.gossip import LinkLimits, PeerNetwork
from qudag_node.inbox import PeerInbox
from qudag_node.keyfile import KEY_FILENAME, load_signer, write_key
from qudag_node.linktls import LinkTls
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.node import Node, engine_time
from qudag_node.quorum import QuorumWatch
from qudag_node.retention import Pruner, RetentionSettings
from qudag_node.store import Store, StoreError, accept, is_disk_full
from qudag_node.stream import Broadcaster
from qudag_node.submissions import Submissions
from qudag_node.sync import Syncer
from qudag_node.tracing import start_tracing
from qudag_node.verifier import ThreadedVerifier, worker_count
from qudag_node.view import NodeView

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

log = get_logger("qudag.node")


@dataclass(frozen=True, slots=True)
class Started:
    """Where a node that has started listens."""

    api_port: int
    p2p_port: int | None  # None when the node has no peer port (it is the network)


async def serve(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    on_started: Callable[[Started], None] | None = None,
) -> None:
    """Run a node until ``shutdown_trigger()`` returns, then shut it down within
    ``settings.shutdown_timeout`` seconds. ``on_started`` is told the bound ports once
    every task runs. Raises :class:`NodeFailure` on unrecoverable faults (a shutdown
    past its timeout among them) and ``ConfigError`` for a setting checked only here."""
    s = settings
    log.info("starting", version=__version__, settings=s.redacted())
    signer, genesis, store = await _open(s)
    deadline = asyncio.timeout(None)  # set when the shutdown begins
    try:
        async with deadline:
            await _run(s, signer, genesis, store, deadline, shutdown_trigger, on_started)
    except BaseException as e:  # one cause is chosen, the rest logged
        if isinstance(e, TimeoutError) and deadline.expired():
            raise NodeFailure(
                f"the shutdown took longer than {s.shutdown_timeout:g} s (QUDAG_SHUTDOWN_TIMEOUT)"
            ) from None
        # Not ``except*``: before 3.11.4 (Debian bookworm has 3.11.2), an exception
        # raised in an except* clause comes out wrapped in a new ExceptionGroup
        # (CPython gh-103590), which ended the process in a traceback.
        raise stop_cause(e) from None
    finally:
        # Never cut short: each connection has a thread that would keep the process
        # alive (past the deadline, the watchdog of serve_until_signalled ends it).
        await _close(store, genesis)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The parts of a node that run, built over the open database."""

    node: Node
    view: NodeView
    metrics: Metrics
    syncer: Syncer
    network: PeerNetwork | None
    p2p_port: int | None
    quorum: QuorumWatch
    pruner: Pruner
    stream: Broadcaster


async def _run(
    s: Settings,
    signer: Signer,
    genesis: Genesis,
    store: Store,
    deadline: asyncio.Timeout,
    shutdown_trigger: Callable[[], Awaitable[object]],
    on_started: Callable[[Started], None] | None,
) -> None:
    """Build the parts over the open database, run them, and shut them down in order."""
    verifier = ThreadedVerifier(worker_count())  # threads start on first use
    tracing = start_tracing(signer.node_id, s.engine_params())
    try:
        parts = await _build(s, signer, genesis, store, verifier, tracing)
        node = parts.node
        app = make_app(parts.view, parts.metrics, s, parts.stream, tracing)
        runner, api_port = await start_api(app, s.api_host, s.api_port)
        log.info("api_listening", host=s.api_host or "*", port=api_port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(node.run_pump(tg))
                others = _start_tasks(tg, s, parts, store)
                parts.view.mark_started()
                if on_started is not None:
                    on_started(Started(api_port, parts.p2p_port))
                await shutdown_trigger()
                deadline.reschedule(asyncio.get_running_loop().time() + s.shutdown_timeout)
                await _shut_down(node, parts.stream, runner, others)
        finally:
            node.fail_queued()
            await runner.cleanup()
    finally:
        verifier.close()
        if tracing is not None:  # the last spans leave (within the exporter's timeout)
            await asyncio.to_thread(tracing.shutdown)


async def _build(
    s: Settings,
    signer: Signer,
    genesis: Genesis,
    store: Store,
    verifier: ThreadedVerifier,
    tracing: Tracing | None,
) -> _Parts:
    """Every part over the open database, wired: the engine loaded from it, the parts
    around the pump (:func:`_wire`), the quorum watch and the read side."""
    params = s.engine_params()
    engine, metrics, vertices = await _load_engine(s, params, genesis, signer, store, verifier)
    disk = DiskGuard(s.data_path, s.min_free_disk_mb)
    pruner = Pruner(store, RetentionSettings.of(s), metrics)
    await pruner.refresh()
    length, _ = await store.log_head()
    stream = Broadcaster(metrics, s.stream_max_subscribers, log_length=length)
    node, syncer, submissions, network, p2p_port = await _wire(
        s,
        signer,
        genesis,
        store,
        verifier,
        engine,
        metrics,
        disk,
        vertices,
        pruner,
        stream,
        tracing,
    )
    quorum = QuorumWatch(
        network, metrics, quorum=genesis.quorum, validator=engine.role is Role.VALIDATOR
    )
    view = NodeView(
        s,
        genesis=genesis,
        node_id=signer.node_id,
        public_key=signer.public_key,
        store=store,
        pump=node,
        submissions=submissions,
        syncer=syncer,
        network=network,
        p2p_port=p2p_port,
        quorum=quorum,
        disk=disk,
        pruner=pruner,
    )
    return _Parts(node, view, metrics, syncer, network, p2p_port, quorum, pruner, stream)


async def _wire(
    s: Settings,
    signer: Signer,
    genesis: Genesis,
    store: Store,
    verifier: ThreadedVerifier,
    engine: Engine,
    metrics: Metrics,
    disk: DiskGuard,
    vertices: int,
    pruner: Pruner,
    stream: Broadcaster,
    tracing: Tracing | None,
) -> tuple[Node, Syncer, Submissions, PeerNetwork | None, int | None]:
    """The node that drives ``engine`` and what brings it work: the syncer, the peer
    links (listening; None when the node is the network, with the port bound) and the
    client submissions; it publishes what became durable to ``stream``. A state sync's
    install restarts the node from the checkpoint, then has ``pruner`` read what the
    node holds now. ``tracing``, if the node traces, hears of the peers' trace contexts
    and follows the pump's steps."""
    params = s.engine_params()
    wakeup = asyncio.Event()  # the pump's: set by whatever brings it work
    alone = genesis.n == 1 and genesis.index_of(signer.node_id) == 0
    # The syncer and the submissions read the engine the node holds now (a disk-full
    # recovery replaces it) through ``node``, bound below; the syncer sends through
    # ``network``, which needs the syncer's inbox first.
    node: Node
    network: PeerNetwork | None = None

    def send(peer: PeerId, data: bytes) -> bool:
        return network is not None and network.send(peer, data)

    async def install(checkpoint: InstallCheckpoint) -> None:
        await node.install_checkpoint(checkpoint)
        await pruner.refresh()

    started = engine.statistics()  # what the node holds as it starts
    base = await store.backfill_base()
    metrics.on_backfill_base(0 if base is None else base.length)
    start = log_hash_start(genesis.hash)
    resume = None if base is None else await store.backfill_resume(base, start)
    prefix = None if base is None else await store.log_prefix(base.length)
    syncer = Syncer(
        store,
        send,
        lambda: node.position(),  # noqa: PLW0108 - node is bound below
        metrics,
        params,
        s.dag_sync_interval,
        needs_peers=not alone,
        on_catching_up=lambda catching_up: node.on_catching_up(catching_up),  # noqa: PLW0108
        trust=genesis.f + 1,
        joining=None
        if alone
        else Joining(
            genesis,
            params,
            verifier,
            genesis.f + 1,
            enabled=s.state_sync == "on",
            fresh=started.committed_round == 0 and started.log_length == 0,
        ),
        install=install,
        backfill=None
        if alone
        else Backfill(
            genesis,
            verifier,
            enabled=s.backfill == "on" and s.kept_transactions.archive,
            base=base,
            resume=resume,
            prefix=prefix,
        ),
    )
    peer_inbox = PeerInbox(syncer, wakeup.set, tracing=tracing)
    engine.set_catching_up(syncer.catching_up, engine_time())
    submissions = Submissions(
        params,
        store,
        metrics,
        pool=lambda: node.pending,
        disk_short=disk.shortage,
        wakeup=wakeup.set,
    )
    network = _peer_network(s, genesis, signer, peer_inbox, metrics, alone)
    p2p_port = None if network is None else await _listen(s, network)
    node = Node(
        s,
        genesis=genesis,
        signer=signer,
        store=store,
        engine=engine,
        verifier=verifier,
        metrics=metrics,
        disk=disk,
        syncer=syncer,
        peer_inbox=peer_inbox,
        network=network,
        submissions=submissions,
        stream=stream,
        wakeup=wakeup,
        vertices=vertices,
        tracing=tracing,
    )
    return node, syncer, submissions, network, p2p_port


def _start_tasks(
    tg: asyncio.TaskGroup, s: Settings, parts: _Parts, store: Store
) -> list[asyncio.Task[None]]:
    """Start every task but the pump in ``tg``: the syncer, the pruner, the links, the
    quorum watch, discovery, and the database's integrity check."""
    tasks = [tg.create_task(parts.syncer.run()), tg.create_task(parts.pruner.run())]
    network = parts.network
    if network is not None:
        tasks.append(tg.create_task(network.run()))
        tasks.append(tg.create_task(parts.quorum.run()))
        if s.peers:
            discovery = Discovery(s.peers, Resolver(s.dns_servers), store, s.dag_sync_interval)
            tasks.append(tg.create_task(discovery.run(network.set_candidates)))
    tasks.append(tg.create_task(_check_integrity(s, store)))
    return tasks


async def _shut_down(
    node: Node, stream: Broadcaster, runner: web.AppRunner, others: list[asyncio.Task[None]]
) -> None:
    """Stop taking work, in order: refuse new submissions and answer finality waiters,
    end the log streams, close the API (in-flight requests finish), stop the other
    tasks (the links close, nothing more comes in), and let the pump commit what is
    queued and return."""
    log.info("stopping")
    node.close()
    stream.close()
    await runner.cleanup()
    for task in others:
        task.cancel()
    node.drain()


async def _open(s: Settings) -> tuple[Signer, Genesis, Store]:
    """The node key, the genesis, and the database, in a data dir that is accepted
    before anything is written into it."""
    try:
        try:
            await asyncio.to_thread(s.data_path.mkdir, parents=True, exist_ok=True)
        except FileExistsError:  # a file, a FIFO or a dangling symlink
            raise NodeFailure(f"data dir {s.data_path}: not a directory") from None
        signer, new_key = await asyncio.to_thread(load_signer, s)
        genesis = s.genesis(signer.public_key)
        # nothing is written into the data dir before it is accepted
        await asyncio.to_thread(accept, s.data_path, genesis)
        if new_key:
            key_path = s.data_path / KEY_FILENAME
            await asyncio.to_thread(write_key, key_path, signer)
            log.info("node_key_created", path=str(key_path))
        log.info("opening_database", path=str(s.data_path))
        opening = time.monotonic()
        store = await Store.open(s.data_path, genesis)
        log.info(
            "database_opened",
            path=str(store.path),
            seconds=round(time.monotonic() - opening, 3),
        )
    except StoreError as e:
        raise NodeFailure(f"database {s.data_path}: {e}") from None
    except OSError as e:
        disk = " (no space left)" if is_disk_full(e) else ""
        raise NodeFailure(f"data dir {s.data_path}: {e.strerror}{disk}") from None
    return signer, genesis, store


async def _close(store: Store, genesis: Genesis) -> None:
    """Close the database and log where the committed log stands, for the next start's
    ``state_loaded`` line to match."""
    durable: dict[str, Any] = {}
    with contextlib.suppress(sqlite3.Error, ValueError):
        length, log_hash = await store.log_head()
        log_hash = log_hash or log_hash_start(genesis.hash)
        durable = {"log_length": length, "log_hash": log_hash.hex()}
    try:
        await store.close()
    except StoreError as e:
        log.warning("database_close_failed", error=str(e))
    log.info("stopped", **durable)


async def _load_engine(
    s: Settings,
    params: Params,
    genesis: Genesis,
    signer: Signer,
    store: Store,
    verifier: ThreadedVerifier,
) -> tuple[Engine, Metrics, int]:
    """The engine built from the state on disk, the metrics set to the stored totals,
    and the number of vertices stored; what was loaded is logged."""
    started = time.monotonic()
    try:
        snapshot = await store.load_snapshot(genesis, params.gc_depth, signer.node_id)
        totals = await store.totals()
    except sqlite3.DatabaseError as e:  # damage in the pages the state is read from
        raise NodeFailure(f"database {s.data_path}: cannot load the state: {e}") from None
    engine = Engine(genesis, params, signer, snapshot, verifier=verifier)
    metrics = Metrics(__version__)
    metrics.set_totals(totals.vertices, totals.transactions, totals.log_length)
    metrics.watch_storage(s.data_path, store.path)
    log.info(
        "state_loaded",
        vertices=totals.vertices,
        transactions=totals.transactions,
        log_length=totals.log_length,
        # SQLite cannot tell a WAL cut short behind its back: compare these with
        # the previous run's stopping line and with peers (docs/reliability.md)
        log_hash=snapshot.log_hash.hex(),
        wal_bytes=_size(store.path.with_name(store.path.name + "-wal")),
        pending=len(snapshot.pending),
        seconds=round(time.monotonic() - started, 3),
    )
    return engine, metrics, totals.vertices


def _peer_network(
    s: Settings,
    genesis: Genesis,
    signer: Signer,
    inbox: PeerInbox,
    metrics: Metrics,
    alone: bool,
) -> PeerNetwork | None:
    """The peer links, if this node has any to talk to (which needs the token)."""
    if s.peer_auth_token is None:
        if not alone:
            raise ConfigError(
                "PEER_AUTH_TOKEN is not set, but this network has other nodes: peers prove"
                " knowledge of a shared token; set the same PEER_AUTH_TOKEN on every node"
            )
        log.info("peer_port_closed", reason="no PEER_AUTH_TOKEN: this node is the network")
        return None
    return PeerNetwork(
        genesis,
        signer,
        s.peer_auth_token.reveal().encode(),
        inbox,
        metrics,
        dataclasses.replace(
            LinkLimits.for_interval(s.dag_sync_interval), max_queue_bytes=s.peer_queue_bytes
        ),
        previous_token=(
            s.peer_auth_token_previous.reveal().encode()
            if s.peer_auth_token_previous is not None
            else None
        ),
        tls=(
            LinkTls.create(f"qudag-link {signer.node_id.hex()[:16]}", datetime.now(UTC))
            if s.peer_transport == "tls"
            else None
        ),
    )


async def _listen(s: Settings, network: PeerNetwork) -> int:
    """Listen for peers on ``QUDAG_P2P_PORT``; returns the port bound."""
    try:
        port = await network.start(s.p2p_port)
    except OSError as e:
        raise NodeFailure(f"cannot listen on peer port {s.p2p_port}: {e.strerror}") from None
    log.info(
        "p2p_listening",
        port=port,
        peers=list(s.peers),
        transport=network.transport,
        openssl=ssl.OPENSSL_VERSION if network.transport == "tls" else None,
    )
    return port


async def _check_integrity(s: Settings, store: Store) -> None:
    """Check the whole database file once, after start: the check reads every page,
    so it would make start-up grow with the DAG. A damaged file stops the node."""
    log.info("integrity_check_started", check="quick_check")
    started = time.monotonic()
    try:
        await store.check_integrity()
    except StoreError as e:
        raise NodeFailure(f"database {s.data_path}: {e}") from None
    log.info("integrity_check_passed", seconds=round(time.monotonic() - started, 3))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class ShutdownWatchdog:
    """Ends the process (exit code 1) if a shutdown has not finished ``seconds`` after
    it began: whatever a task is doing, SIGTERM stops the node within
    ``QUDAG_SHUTDOWN_TIMEOUT``. A thread, so that it fires even if the event loop is
    stuck."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        """Start counting (once; later calls change nothing)."""
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._expired)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        """The shutdown finished: stop counting."""
        if self._timer is not None:
            self._timer.cancel()

    def _expired(self) -> None:
        log.error("shutdown_timed_out", seconds=self.seconds)
        sys.stdout.flush()
        os._exit(1)


async def serve_until_signalled(settings: Settings) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down cleanly, within
    ``QUDAG_SHUTDOWN_TIMEOUT`` (after which the process exits with 1 all the same,
    even if the event loop is stuck)."""
    watchdog = ShutdownWatchdog(settings.shutdown_timeout)
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        watchdog.start()
        signalled.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await serve(settings, shutdown_trigger=signalled.wait)
    finally:
        watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    sys.stdout.flush()

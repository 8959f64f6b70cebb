"""Four validators on this machine: ``qudag-node testnet`` on loopback under load.

Starts ``qudag-node testnet --nodes N`` in a temporary directory and waits until every
node is ready. Then the load generator's own process keeps CLIENTS connections (spread
over the nodes) submitting batches of BATCH transactions of SIZE random bytes with
``wait=final`` for DURATION seconds (closed loop: the full load). Measured over that
window:

- transactions finalized per second network-wide (node 1's log length at the window's
  end minus at its start; every node appends the same log),
- finality latency as clients see it (submit to ``final`` answer) p50 / p99 / max,
- bytes on the wire per finalized transaction: every frame every node sent (length
  prefix included, from ``qudag_peer_bytes_total``), divided by the transactions
  finalized, and that divided by the N - 1 nodes each transaction must reach,
- database growth per finalized transaction on each node (the file and its WAL), also
  as a multiple of the raw transaction bytes.

Afterwards: that all N logs end equal (length and hash) and each node's RSS; with
``--paced RATE``, the finality latency at RATE transactions per second (requests sent on
a fixed schedule, latency counted from each one's scheduled time); with ``--idle
SECONDS``, the rounds made, the bytes all nodes send per second and how fast each
database grows with no load (heartbeat rounds and anti-entropy only), or with
``--trickle RATE`` one-transaction submits a second; with ``--late-observer``, how fast an
observer started afterwards on an empty store catches up (transactions in the log per
second from its start until its log equals the others').

``--clients 0`` skips the load, so ``--clients 0 --idle 300 --sync-interval 30``
measures an idle network with Fly's sync interval.

Usage: python -m bench.network [--nodes 4] [--duration 30] [--clients 8] [--batch 100]
       [--size 256] [--sync-interval 5] [--paced RATE] [--idle SECONDS [--trickle RATE]]
       [--late-observer] [--scheme mldsa65-ed25519|ed25519] [--peer-transport tls|plain]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.ingest import shared_ingest
from bench.lab import TX_SIZE, Lab
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.nodes import (
    NodeProcess,
    Testnet,
    cpu_busy_seconds,
    cpu_seconds,
    dag_round,
    database_bytes,
    database_pages_bytes,
    log_head,
    log_length,
    metric_sum,
    peak_rss_bytes,
    rss_bytes,
    testnet_running,
)
from bench.report import Row, per_second
from qudag_node.config import PEER_TRANSPORTS
from qudag_node.core.crypto import DEFAULT_SCHEME, SCHEME_LABELS, SIGNATURE_SIZES, Scheme

GOAL_RATE = 5_000
GOAL_P50 = 0.300
GOAL_P99 = 1.0
#: The suite's full load: connections (spread over the nodes) and transactions per
#: request, enough to keep the machine's cores busy (8 x 100 waits on finality instead:
#: about 4,000 tx/s with the nodes using half the machine).
CLIENTS = 8
BATCH = 1000
#: Transactions per request of the paced phase: small batches, so that the latency
#: quantiles rest on many requests.
PACED_BATCH = 100
#: The command line's default load.
COMMAND_BATCH = 100
#: Seconds allowed for the nodes' logs to become equal after the load.
CONVERGE_TIMEOUT = 60.0
FINAL_QUERY = "wait=final&timeout=60"


@dataclass(frozen=True)
class Phase:
    """One load phase: what the clients saw and what the network finalized meanwhile."""

    load: LoadResult
    window: float
    finalized: int
    wire: float  # bytes all nodes sent during the window
    disk: list[int]  # each node's database growth during the window
    cores: float  # CPU time all nodes used during the window, in cores
    rounds: int  # rounds node 1's DAG advanced during the window
    busy: float  # cores the whole machine was busy during the window (anything, not idle)

    @property
    def other_cores(self) -> float:
        """Cores busy with other work than the nodes and the load generator: what else
        shared the machine during the window."""
        return max(0.0, self.busy - self.cores - self.load.cpu_seconds / self.load.elapsed)

    @property
    def rate(self) -> float:
        """Transactions finalized network-wide per second."""
        return self.finalized / self.window


@dataclass(frozen=True)
class NetworkRun:
    """A full-load phase, optionally a paced one, and the state at the end."""

    nodes: int
    scheme: Scheme
    full: Phase
    paced: Phase | None
    logs_equal: bool
    rss: list[tuple[int, int]]  # (now, peak) per node


async def _wire_bytes(session: aiohttp.ClientSession, urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        total += await metric_sum(session, url, "qudag_peer_bytes_total", 'direction="sent"')
    return total


async def load_phase(session: aiohttp.ClientSession, net: Testnet, spec: LoadSpec) -> Phase:
    """Apply ``spec`` to the testnet and read the network around its window."""
    marks: list[tuple[float, int, float, list[int], float, int, float]] = []

    async def mark() -> None:
        length = await log_length(session, net.urls[0])
        wire = await _wire_bytes(session, net.urls)
        disks = [database_bytes(net.data_dir(k)) for k in range(net.nodes)]
        cpu = sum(cpu_seconds(pid) for pid in net.pids)
        round_ = await dag_round(session, net.urls[0])
        marks.append((time.monotonic(), length, wire, disks, cpu, round_, cpu_busy_seconds()))

    load = await run_load(spec, mark, mark)
    if load.failed:
        raise RuntimeError(f"submits failed: {load.first_error}")
    (t0, l0, w0, d0, c0, r0, b0), (t1, l1, w1, d1, c1, r1, b1) = marks
    disk = [b - a for a, b in zip(d0, d1, strict=True)]
    window = t1 - t0
    return Phase(
        load, window, l1 - l0, w1 - w0, disk, (c1 - c0) / window, r1 - r0, (b1 - b0) / window
    )


async def converged(session: aiohttp.ClientSession, urls: list[str], timeout: float) -> bool:
    """Whether every node's log has the same length and hash (waiting up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        heads = set()
        for url in urls:
            try:
                heads.add(await log_head(session, url))
            except aiohttp.ClientError:
                heads.add((-1, url))
        if len(heads) == 1:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)


def closed_spec(net: Testnet, seconds: float, clients: int, batch: int, size: int) -> LoadSpec:
    """The full load: ``clients`` connections, each waiting for its batch to be final."""
    return LoadSpec(
        urls=tuple(net.urls),
        connections=clients,
        duration=seconds,
        batch=batch,
        size=size,
        query=FINAL_QUERY,
    )


def paced_spec(net: Testnet, seconds: float, tx_rate: float, batch: int, size: int) -> LoadSpec:
    """``tx_rate`` transactions per second in batches on a fixed schedule."""
    requests_per_second = tx_rate / batch
    return LoadSpec(
        urls=tuple(net.urls),
        connections=max(2 * net.nodes, int(4 * requests_per_second)),
        duration=seconds,
        batch=batch,
        size=size,
        rate=requests_per_second,
        query=FINAL_QUERY,
    )


async def measure_network(
    net: Testnet,
    seconds: float,
    clients: int = CLIENTS,
    batch: int = BATCH,
    size: int = TX_SIZE,
    paced_rate: float | None = None,
    paced_batch: int = PACED_BATCH,
) -> NetworkRun:
    """The full load for ``seconds``, then (with ``paced_rate``) the paced load."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        full = await load_phase(session, net, closed_spec(net, seconds, clients, batch, size))
        paced = None
        if paced_rate is not None:
            spec = paced_spec(net, seconds, paced_rate, paced_batch, size)
            paced = await load_phase(session, net, spec)
        equal = await converged(session, net.urls, CONVERGE_TIMEOUT)
    rss = [(rss_bytes(pid), peak_rss_bytes(pid)) for pid in net.pids]
    return NetworkRun(net.nodes, net.scheme, full, paced, equal, rss)


async def shared_network(lab: Lab, scheme: Scheme = DEFAULT_SCHEME) -> NetworkRun:
    """The suite's four-validator run in ``scheme`` (made once, read by several
    scenarios)."""

    async def measure() -> NetworkRun:
        net = Testnet(lab.directory(f"network-{scheme.label}"), scheme=scheme)
        async with testnet_running(net) as running:
            seconds = lab.scale.network_seconds
            return await measure_network(running, seconds, paced_rate=GOAL_RATE / 2)

    return await lab.shared(f"network-{scheme.label}", measure)


def signature_bytes_per_round(nodes: int, scheme: Scheme) -> int:
    """The signature bytes a round of ``nodes`` validators sends network-wide, by the
    protocol: each validator's vertex to the n - 1 others, its n - 1 votes (one to each
    other author), and its certificate of q votes to the n - 1 others."""
    quorum = nodes - (nodes - 1) // 3
    return nodes * (nodes - 1) * (2 + quorum) * SIGNATURE_SIZES[scheme]


async def scenario(lab: Lab) -> list[Row]:
    """Network-wide finalized throughput, and finality latency at half the goal's load,
    for each scheme (the default first)."""
    single = await shared_ingest(lab)
    order = [DEFAULT_SCHEME, *(s for s in Scheme if s is not DEFAULT_SCHEME)]
    return [_scheme_row(await shared_network(lab, scheme), single.rate) for scheme in order]


def _scheme_row(run: NetworkRun, single_rate: float) -> Row:
    """One scheme's network row."""
    full, paced = run.full, run.paced
    assert paced is not None
    ok = (
        full.rate >= GOAL_RATE
        and paced.load.p50 <= GOAL_P50
        and paced.load.p99 <= GOAL_P99
        and run.logs_equal
    )
    return Row(
        f"network ({run.scheme.label})",
        f"{per_second(full.rate)} finalized; at {per_second(paced.rate)} finality p50"
        f" {paced.load.p50 * 1000:.0f} ms, p99 {paced.load.p99 * 1000:.0f} ms",
        f"{per_second(single_rate)} one node (ingest)",
        full.rate / single_rate,
        f">= {GOAL_RATE:,} tx/s; at {GOAL_RATE // 2:,} tx/s p50 <= {GOAL_P50 * 1000:.0f}"
        f" ms, p99 <= {GOAL_P99:g} s",
        ok,
        (
            f"{run.nodes} validator processes (qudag-node testnet); full load: {CLIENTS}"
            f" connections x {BATCH}-transaction batches with wait=final for"
            f" {full.window:.0f} s (batch finality p50 {full.load.p50 * 1000:.0f} ms, p99"
            f" {full.load.p99 * 1000:.0f} ms); then {GOAL_RATE // 2:,} tx/s offered on a"
            f" fixed schedule in batches of {PACED_BATCH} for {paced.window:.0f} s,"
            " latency from each batch's scheduled time to its final answer",
            f"{full.rounds / full.window:.1f} rounds/s at full load, each sending"
            f" {signature_bytes_per_round(run.nodes, run.scheme):,} signature bytes"
            f" network-wide ({full.finalized / max(1, full.rounds):,.0f} tx per round);"
            f" the nodes used {full.cores:.2f} cores at full load, {paced.cores:.2f} paced;"
            f" logs equal on all nodes at the end: {run.logs_equal}; node RSS"
            f" {', '.join(f'{now / 2**20:.0f}' for now, _ in run.rss)} MiB",
            "the ratio is to the single-node ingest rate of this run (no goal): each"
            f" transaction is stored by {run.nodes} processes sharing the machine",
        ),
    )


# --------------------------------------------------------------- command line


async def idle(net: Testnet, seconds: float, rate: float = 0.0) -> None:
    """For ``seconds`` with no load, or ``rate`` one-transaction requests a second (a
    trickle: each may start rounds of its own): the rounds made, the bytes sent and how
    fast each database grows."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        disk_before = [database_pages_bytes(net.data_dir(k)) for k in range(net.nodes)]
        sent_before = await _wire_bytes(session, net.urls)
        round_before = await dag_round(session, net.urls[0])
        if rate > 0:
            spec = LoadSpec(
                urls=tuple(net.urls), connections=2, duration=seconds, kind="single", rate=rate
            )
            load = await run_load(spec)
            if load.failed:
                raise RuntimeError(f"submits failed: {load.first_error}")
        else:
            await asyncio.sleep(seconds)
        wire = await _wire_bytes(session, net.urls) - sent_before
        rounds = await dag_round(session, net.urls[0]) - round_before
    growth = [
        (database_pages_bytes(net.data_dir(k)) - before) * 3600 / seconds
        for k, before in enumerate(disk_before)
    ]
    per_round = max(growth) * seconds / 3600 / max(1, rounds)
    what = "idle" if rate <= 0 else f"{rate:g} tx/s"
    print(
        f"{what} for {seconds:.0f} s: {rounds} rounds; {wire / seconds:,.0f} B/s sent"
        f" network-wide ({wire / seconds / net.nodes:,.0f} B/s per node); database growth"
        f" per node {min(growth) / 1e6:.2f} to {max(growth) / 1e6:.2f} MB per hour (pages in"
        f" use, the write-ahead log's included), {per_round:,.0f} B per round"
    )


async def late_observer(net: Testnet) -> None:
    """Start an observer with an empty store and time its catch-up to the others' log."""
    observer = NodeProcess(
        net.directory / "observer",
        {
            "NODE_ID": "observer",
            "QUDAG_PEERS": ",".join(f"127.0.0.1:{port}" for port in net.p2p_ports),
            "QUDAG_GENESIS": str(net.genesis()),
            "PEER_AUTH_TOKEN": net.token(),
        },
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        if not await converged(session, net.urls, CONVERGE_TIMEOUT):
            raise RuntimeError("the validators' logs differ")
        length = await log_length(session, net.urls[0])
        await observer.start(ready=False)
        try:
            equal = await converged(session, [*net.urls, observer.url], 600)
            elapsed = time.monotonic() - observer.started_at
        finally:
            await observer.stop()
    print(
        f"late observer: caught up with {length:,} transactions in {elapsed:.1f} s"
        f" from its start = {length / elapsed:,.0f} tx/s; log equal: {equal}"
    )


def report(run: NetworkRun, clients: int, batch: int, size: int) -> None:
    """Print a run as the command line shows it."""
    peers = run.nodes - 1
    print(f"nodes {run.nodes}, clients {clients}, batch {batch}, size {size} B")
    phases = [("full load", run.full)] + ([("paced", run.paced)] if run.paced else [])
    for name, phase in phases:
        final, load = phase.finalized, phase.load
        print(
            f"{name}: finalized {final} transactions in {phase.window:.1f} s ="
            f" {phase.rate:,.0f} tx/s; the nodes used {phase.cores:.2f} cores"
        )
        print(
            f"  finality latency (client, per batch): p50 {load.p50 * 1000:.0f} ms,"
            f" p99 {load.p99 * 1000:.0f} ms, max {load.max * 1000:.0f} ms"
            f" over {load.accepted} batches"
        )
        per_peer = phase.wire / final / peers
        print(
            f"  bytes on the wire per finalized transaction: {phase.wire / final:,.0f}"
            f" network-wide, {per_peer:,.0f} per receiving peer ({per_peer / size:.2f} x the"
            f" transaction size; each transaction must reach the {peers} other nodes)"
        )
        per_tx = sum(phase.disk) / len(phase.disk) / final
        print(
            f"  database growth per finalized transaction: {per_tx:,.0f} B per node"
            f" ({per_tx / size:.2f} x the raw transaction bytes)"
        )
    print(f"logs equal on all nodes: {run.logs_equal}")
    shown = ", ".join(f"{now / 2**20:.0f} MiB (peak {peak / 2**20:.0f})" for now, peak in run.rss)
    print(f"node RSS: {shown or 'not available'}")


async def command(args: argparse.Namespace, directory: Path) -> None:
    """The command line's run."""
    scheme = Scheme.from_label(args.scheme)
    net = Testnet(
        directory, args.nodes, args.sync_interval, args.log_level, scheme, args.peer_transport
    )
    async with testnet_running(net):
        print(f"testnet in {directory}/net (logs: nodeI/node.log)")
        if args.clients > 0:
            run = await measure_network(
                net, args.duration, args.clients, args.batch, args.size, args.paced, args.batch
            )
            report(run, args.clients, args.batch, args.size)
        if args.idle > 0:
            await idle(net, args.idle, args.trickle)
        if args.late_observer:
            await late_observer(net)


def main() -> int:
    """Entry point of ``python -m bench.network``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--batch", type=int, default=COMMAND_BATCH)
    parser.add_argument("--size", type=int, default=TX_SIZE)
    parser.add_argument("--sync-interval", type=float, default=5.0)
    parser.add_argument("--paced", type=float, help="then offer RATE tx/s on a fixed schedule")
    parser.add_argument("--idle", type=float, default=0.0, help="then measure SECONDS idle")
    parser.add_argument(
        "--trickle", type=float, default=0.0, help="during --idle, RATE one-transaction submits/s"
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--scheme", choices=SCHEME_LABELS, default=DEFAULT_SCHEME.label)
    parser.add_argument("--peer-transport", choices=PEER_TRANSPORTS, default=PEER_TRANSPORTS[0])
    parser.add_argument("--keep", type=Path, help="keep the testnet directory here")
    parser.add_argument(
        "--late-observer",
        action="store_true",
        help="then start an observer with an empty store and time its catch-up",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qudag-bench-net-") as scratch:
        asyncio.run(command(args, args.keep or Path(scratch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

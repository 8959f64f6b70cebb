"""Four-validator network benchmark: ``qudag-node testnet`` on loopback under load.

Starts ``qudag-node testnet --nodes N`` in a temporary directory, waits until every
node is ready, then for DURATION seconds CLIENTS concurrent clients submit batches of
BATCH transactions of SIZE bytes with ``wait=final``, to the nodes in turn. Prints:

- transactions finalized per second (network-wide: each is final on every node),
- finality latency as clients see it (submit to ``final`` answer) p50 / p99 / max,
- bytes on the wire per finalized transaction: every frame every node sent (length
  prefix included, from ``qudag_peer_bytes_total``), divided by the transactions
  finalized, and that divided by the N - 1 nodes each transaction must reach,
- that all N logs end equal (length and hash), and each node's RSS (now and peak),
- disk: how much each node's database (with its WAL) grew per finalized transaction,
  also as a multiple of the raw transaction bytes,
- with ``--idle SECONDS``: afterwards, with no load, the bytes all nodes send per second
  and how fast each database grows (heartbeat rounds and anti-entropy only),
- with ``--late-observer``: how fast an observer started afterwards on an empty store
  catches up (transactions in the log per second from its start until its log equals
  the others').

``--clients 0`` skips the load, so ``--clients 0 --idle 300 --sync-interval 30`` measures
an idle network with Fly's sync interval.

Usage: python bench/network.py [--nodes 4] [--duration 30] [--clients 8] [--batch 100]
       [--size 256] [--sync-interval 5] [--idle SECONDS] [--late-observer]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def free_port_block(count: int) -> int:
    """A first port of ``count`` consecutive ports that are free now on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65536:
            continue
        socks = []
        try:
            for k in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


async def metric_sum(session: aiohttp.ClientSession, url: str, name: str, match: str) -> float:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and match in line
    )


async def bytes_sent(session: aiohttp.ClientSession, urls: list[str]) -> float:
    """Bytes of peer frames all nodes sent so far."""
    total = 0.0
    for url in urls:
        total += await metric_sum(session, url, "qudag_peer_bytes_total", 'direction="sent"')
    return total


async def status(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url + "/api/v1/status") as resp:
        doc: dict[str, object] = await resp.json()
        return doc


async def wait_ready(session: aiohttp.ClientSession, urls: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = 0
        for url in urls:
            try:
                async with session.get(url + "/ready") as resp:
                    ready += resp.status == 200
            except aiohttp.ClientError:
                pass
        if ready == len(urls):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the testnet did not become ready")
        await asyncio.sleep(0.2)


async def client(
    session: aiohttp.ClientSession,
    urls: list[str],
    k: int,
    args: argparse.Namespace,
    until: float,
    latencies: list[float],
    done: list[int],
) -> None:
    n = 0
    while time.monotonic() < until:
        url = urls[(k + n) % len(urls)]
        n += 1
        body = {
            "transactions": [
                base64.b64encode(os.urandom(args.size)).decode() for _ in range(args.batch)
            ]
        }
        started = time.monotonic()
        async with session.post(
            url + "/api/v1/transactions?wait=final&timeout=60", json=body
        ) as resp:
            doc = await resp.json()
        if resp.status == 200 and doc.get("status") == "final":
            latencies.append(time.monotonic() - started)
            done[0] += args.batch
        elif resp.status == 503:
            await asyncio.sleep(0.05)  # back-pressure: pool full
        else:
            raise RuntimeError(f"submit failed: {resp.status} {doc}")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


async def converged(
    session: aiohttp.ClientSession, urls: list[str], timeout: float
) -> set[tuple[object, object]]:
    """The (length, hash) heads of the nodes' logs, once equal (or at the deadline)."""
    heads: set[tuple[object, object]] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heads = set()
        for url in urls:
            try:
                log = (await status(session, url))["log"]
            except aiohttp.ClientError:  # not answering yet
                heads.add((url, None))
                continue
            assert isinstance(log, dict)
            heads.add((log["length"], log["hash"]))
        if len(heads) == 1:
            break
        await asyncio.sleep(0.2)
    return heads


def database_bytes(directory: Path, nodes: int) -> list[int]:
    """Each node's database size in use: its pages (the write-ahead log's included) less
    the free ones. The files' sizes would mislead: the log file keeps its largest size
    between checkpoints, and each commit fills whole pages of it."""
    sizes = []
    for k in range(1, nodes + 1):
        uri = f"file:{directory / f'node{k}' / 'qudag.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            pages, free, size = (
                db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("page_count", "freelist_count", "page_size")
            )
        sizes.append((pages - free) * size)
    return sizes


async def measure(args: argparse.Namespace, urls: list[str], directory: Path) -> None:
    """Load the network, then print throughput, latency, bytes on the wire and on disk."""
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=max(1, args.clients * 2))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await wait_ready(session, urls, 60)
        if args.clients == 0:
            return
        disk_before = database_bytes(directory, len(urls))
        sent_before = await bytes_sent(session, urls)
        latencies: list[float] = []
        done = [0]
        started = time.monotonic()
        until = started + args.duration
        await asyncio.gather(
            *(client(session, urls, k, args, until, latencies, done) for k in range(args.clients))
        )
        elapsed = time.monotonic() - started
        wire = await bytes_sent(session, urls) - sent_before
        heads = await converged(session, urls, 30)
    disk = [
        after - before
        for after, before in zip(database_bytes(directory, len(urls)), disk_before, strict=True)
    ]
    final = done[0]
    peers = len(urls) - 1
    print(f"nodes {len(urls)}, clients {args.clients}, batch {args.batch}, size {args.size} B")
    print(f"finalized: {final} transactions in {elapsed:.1f} s = {final / elapsed:,.0f} tx/s")
    print(
        f"finality latency (client, per batch): p50 {quantile(latencies, 0.5) * 1000:.0f} ms,"
        f" p99 {quantile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f" over {len(latencies)} batches"
    )
    print(
        f"bytes on the wire per finalized transaction: {wire / final:,.0f} network-wide,"
        f" {wire / final / peers:,.0f} per receiving peer"
        f" ({wire / final / peers / args.size:.2f} x the transaction size; each transaction"
        f" must reach the {peers} other nodes)"
    )
    per_tx = sum(disk) / len(disk) / final
    print(
        f"database growth per finalized transaction: {per_tx:,.0f} B per node"
        f" ({per_tx / args.size:.2f} x the raw transaction bytes)"
    )
    print(f"logs equal on all nodes: {len(heads) == 1} {sorted(heads)[:1]}")


async def idle(urls: list[str], directory: Path, seconds: float) -> None:
    """With no load for ``seconds``: bytes sent per second and database growth per hour."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        disk_before = database_bytes(directory, len(urls))
        sent_before = await bytes_sent(session, urls)
        await asyncio.sleep(seconds)
        wire = await bytes_sent(session, urls) - sent_before
    growth = [
        (after - before) * 3600 / seconds
        for after, before in zip(database_bytes(directory, len(urls)), disk_before, strict=True)
    ]
    print(
        f"idle for {seconds:.0f} s: {wire / seconds:,.0f} B/s sent network-wide"
        f" ({wire / seconds / len(urls):,.0f} B/s per node); database growth per node"
        f" {min(growth) / 1e6:.2f} to {max(growth) / 1e6:.2f} MB per hour"
    )


async def late_observer(directory: Path, urls: list[str], p2p: list[int]) -> None:
    """Start an observer with an empty store and time its catch-up to the others' log."""
    api = free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUDAG_", "NODE_"))}
    env.update(
        {
            "NODE_ID": "observer",
            "QUDAG_DATA_DIR": str(directory / "observer"),
            "QUDAG_API_HOST": "127.0.0.1",
            "QUDAG_API_PORT": str(api),
            "QUDAG_P2P_PORT": "0",
            "QUDAG_PEERS": ",".join(f"127.0.0.1:{port}" for port in p2p),
            "QUDAG_GENESIS": str(directory / "genesis.json"),
            "PEER_AUTH_TOKEN": (directory / "peer-token").read_text().strip(),
        }
    )
    url = f"http://127.0.0.1:{api}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        [(length, _)] = await converged(session, urls, 30)
        started = time.monotonic()
        observer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qudag_node", "run", env=env, stdout=subprocess.DEVNULL
        )
        try:
            heads = await converged(session, [*urls, url], 600)
            elapsed = time.monotonic() - started
        finally:
            observer.send_signal(signal.SIGTERM)
            await asyncio.wait_for(observer.wait(), 60)
    assert isinstance(length, int)
    print(
        f"late observer: caught up with {length:,} transactions in {elapsed:.1f} s"
        f" from its start = {length / elapsed:,.0f} tx/s; log equal: {len(heads) == 1}"
    )


def print_memory(testnet_output: Path) -> None:
    """Each node's resident memory now and at its peak, from /proc (Linux)."""
    figures = []
    for pid in re.findall(r"\bpid (\d+)", testnet_output.read_text()):
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            now, peak = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
            figures.append(f"{now:.0f} MiB (peak {peak:.0f})")
    print(f"node RSS: {', '.join(figures) or 'not available'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sync-interval", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=0.0, help="then measure SECONDS idle")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--keep", help="keep the testnet directory here")
    parser.add_argument(
        "--late-observer",
        action="store_true",
        help="then start an observer with an empty store and time its catch-up",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qudag-bench-net-") as scratch:
        tmp = args.keep or scratch
        api = free_port_block(args.nodes)
        p2p = free_port_block(args.nodes)
        command = [sys.executable, "-m", "qudag_node", "testnet", "--nodes", str(args.nodes)]
        command += ["--dir", str(Path(tmp) / "net"), "--api-port", str(api)]
        command += ["--p2p-port", str(p2p), "--sync-interval", str(args.sync_interval)]
        env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
        env["LOG_LEVEL"] = args.log_level
        Path(tmp).mkdir(parents=True, exist_ok=True)
        out = Path(tmp) / "testnet.out"
        with out.open("w") as sink:
            testnet = subprocess.Popen(command, stdout=sink, env=env)
        print(f"testnet in {tmp}/net (logs: nodeI/node.log)")
        try:
            urls = [f"http://127.0.0.1:{api + k}" for k in range(args.nodes)]
            asyncio.run(measure(args, urls, Path(tmp) / "net"))
            if args.idle > 0:
                asyncio.run(idle(urls, Path(tmp) / "net", args.idle))
            print_memory(out)
            if args.late_observer:
                ports = [p2p + k for k in range(args.nodes)]
                asyncio.run(late_observer(Path(tmp) / "net", urls, ports))
        finally:
            testnet.send_signal(signal.SIGINT)
            testnet.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())

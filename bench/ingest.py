"""Batched-submit ingest benchmark against a real node process on loopback.

Starts ``python -m qudag_node run`` in a temporary data dir, submits TOTAL
transactions of SIZE bytes as JSON batches of BATCH from CLIENTS concurrent
connections, waits until all are final, and prints:

- acknowledged and finalized transactions per second,
- the node's RSS (current and peak) at the end,
- the reference measured in the same run: raw ``sqlite3`` ``executemany`` of rows of
  the same shape (id, data) into a WAL database in one transaction per BATCH rows,
  and our finalized rate as a ratio of it.

Usage: python bench/ingest.py [--total N] [--batch N] [--clients N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def reference_rate(rows: int, batch: int, size: int, directory: Path) -> float:
    """Rows per second of plain sqlite3 executemany, one transaction per batch."""
    db = sqlite3.connect(directory / "reference.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id BLOB NOT NULL UNIQUE, data BLOB NOT NULL)")
    payload = os.urandom(size)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        chunk = [
            (hashlib.blake2b(payload + i.to_bytes(8, "big"), digest_size=32).digest(), payload)
            for i in range(start, min(rows, start + batch))
        ]
        db.execute("BEGIN")
        db.executemany("INSERT INTO t (id, data) VALUES (?, ?)", chunk)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


def start_node(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ)
    env.update(
        {
            "QUDAG_DATA_DIR": str(data_dir),
            "QUDAG_API_PORT": "0",
            "QUDAG_LOG_FORMAT": "json",
            "QUDAG_MAX_PENDING": "1000000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    out = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qudag_node", "run"], stdout=out, stderr=out, env=env
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "api_listening":
                return proc, int(record["port"])
        if proc.poll() is not None:
            raise SystemExit(f"node exited: {log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("node did not start")


async def load(url: str, total: int, batch: int, clients: int, size: int) -> tuple[float, float]:
    """Submit everything; returns (seconds to acknowledge, seconds until all final)."""
    bodies = []
    counter = 0
    for _ in range(0, total, batch):
        txs = []
        for _ in range(batch):
            txs.append(counter.to_bytes(8, "big") + os.urandom(size - 8))
            counter += 1
        bodies.append(json.dumps({"transactions": [base64.b64encode(t).decode() for t in txs]}))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(
                    url + "/api/v1/transactions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    if resp.status == 202:
                        break
                    if resp.status != 503:
                        raise SystemExit(f"submit failed: {resp.status} {await resp.text()}")
                await asyncio.sleep(0.01)  # back-pressure: the pool is full

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(client(session))
        acked = time.perf_counter() - started
        while True:
            async with session.get(url + "/api/v1/status") as resp:
                status = await resp.json()
            if status["log"]["length"] >= total:
                break
            await asyncio.sleep(0.02)
        return acked, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qudag-bench-") as tmp:
        work = Path(tmp)
        ref = reference_rate(min(args.total, 200_000), args.batch, args.size, work)
        proc, port = start_node(work / "data", work / "node.log")
        try:
            acked, final = asyncio.run(
                load(f"http://127.0.0.1:{port}", args.total, args.batch, args.clients, args.size)
            )
            rss, peak = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        db_bytes = sum(f.stat().st_size for f in (work / "data").glob("qudag.db*"))
    rate = args.total / final
    shape = f"{args.total} x {args.size} B in batches of {args.batch}, {args.clients} clients"
    print(f"transactions:          {shape}")
    print(f"acknowledged:          {args.total / acked:,.0f} tx/s")
    print(f"finalized:             {rate:,.0f} tx/s")
    print(
        f"reference (sqlite3):   {ref:,.0f} rows/s executemany, {args.batch} rows per transaction"
    )
    print(f"ratio:                 {rate / ref:.2f} x reference")
    print(f"node RSS:              {rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)")
    ratio = db_bytes / (args.total * args.size)
    print(f"database on disk:      {db_bytes / (1 << 20):.1f} MiB = {ratio:.2f} x raw bytes")


if __name__ == "__main__":
    main()

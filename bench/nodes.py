"""Real node processes for the benchmarks, and what /proc and the API say about them.

:class:`NodeProcess` runs ``python -m qudag_node run`` on loopback in a data dir of its
own, optionally pinned to one CPU (``taskset``, so that every thread it starts stays
there) and under ``strace`` counting its fsync and fdatasync calls (the filter runs
in the kernel: only those calls stop the process). :class:`Testnet` runs ``qudag-node
testnet``. Both stop their processes with a signal and wait for them, always.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.ports import free_port_block
from qudag_node.config import PEER_TRANSPORTS
from qudag_node.core.crypto import DEFAULT_SCHEME, Scheme

#: Seconds a node has to print its API port, and then to answer /ready.
START_TIMEOUT = 60.0
#: Seconds a node has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 120.0
#: Environment variables of ours that a node must not inherit.
CLEARED_PREFIXES = ("QUDAG_", "NODE_", "PEER_", "FLY_", "DAG_", "LOG_", "OTEL_")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SYNC_CALL = re.compile(rb"^\d+\s+(\d+\.\d+)\s+f(?:data)?sync\(")
_BUCKET_BOUND = re.compile(r'\ble="([^"]+)"')


# ------------------------------------------------------------------ /proc


def proc_status(pid: int) -> dict[str, str]:
    """The fields of /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (VmRSS)."""
    return int(proc_status(pid)["VmRSS"].split()[0]) * 1024


def peak_rss_bytes(pid: int) -> int:
    """Highest resident memory of a process so far (VmHWM)."""
    return int(proc_status(pid)["VmHWM"].split()[0]) * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat[stat.rindex(")") + 2 :].split()
    return (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS


def cpu_busy_seconds(cpu: int | None = None) -> float:
    """Seconds CPU ``cpu`` (without it: all CPUs together) has spent on anything
    (processes, interrupts, the hypervisor's steal) rather than idle, from /proc/stat."""
    wanted = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name == wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS
    raise ValueError(f"no {wanted} in /proc/stat")


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User plus system CPU time of one thread of a process so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return 0.0
    after_name = stat[stat.rindex(")") + 2 :].split()
    return (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS


def _child_running(pid: int, program: str) -> int | None:
    """A child of ``pid`` whose executable is ``program``, if one runs now."""
    target = os.path.realpath(program)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/exe") == target:
                return int(child)
    return None


async def traced_child(pid: int, program: str) -> int:
    """The child of ``pid`` (strace) that runs ``program``: strace also starts
    short-lived children of its own to probe the kernel."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        child = _child_running(pid, program)
        if child is not None:
            return child
        await asyncio.sleep(0.01)
    raise RuntimeError(f"process {pid} started no {program} child")


def sync_calls(trace: Path, start: float, end: float) -> int:
    """fsync and fdatasync calls in an ``strace -f -ttt`` log made between two wall times."""
    count = 0
    with trace.open("rb") as lines:
        for line in lines:
            match = _SYNC_CALL.match(line)
            if match and start <= float(match.group(1)) <= end:
                count += 1
    return count


def strace_available() -> bool:
    """Whether syscalls can be counted with strace here."""
    return shutil.which("strace") is not None


def database_bytes(data_dir: Path) -> int:
    """Bytes of a node's database: the file, its write-ahead log and shared memory."""
    return sum(f.stat().st_size for f in data_dir.glob("qudag.db*"))


def database_pages_bytes(data_dir: Path) -> int:
    """Bytes of a node's database as SQLite sees it (pages in use, whether they are in
    the file or still in the write-ahead log): unlike :func:`database_bytes`, it does not
    jump with the log's size between checkpoints. Read through a read-only connection."""
    uri = f"file:{data_dir / 'qudag.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    return int(pages) * int(size)


# ------------------------------------------------------------------- API


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """GET a JSON document."""
    async with session.get(url) as resp:
        resp.raise_for_status()
        doc: dict[str, object] = await resp.json()
        return doc


async def dag_round(session: aiohttp.ClientSession, url: str) -> int:
    """The round a node's DAG has reached."""
    dag = (await get_json(session, url + "/api/v1/status"))["dag"]
    assert isinstance(dag, dict)
    return int(dag["round"])


async def log_length(session: aiohttp.ClientSession, url: str) -> int:
    """The length of a node's finalized log."""
    log = (await get_json(session, url + "/api/v1/status"))["log"]
    assert isinstance(log, dict)
    return int(log["length"])


async def log_head(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """A node's log length and running hash."""
    log = (await get_json(session, url + "/api/v1/status"))["log"]
    assert isinstance(log, dict)
    return int(log["length"]), str(log["hash"])


async def metric_sum(session: aiohttp.ClientSession, url: str, name: str, match: str = "") -> float:
    """The sum of a metric's samples whose labels contain ``match``."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if (line.startswith(name + "{") or line.startswith(name + " ")) and match in line
    )


@dataclass(frozen=True)
class Histogram:
    """A histogram metric summed over its label sets (and over nodes with :meth:`merged`):
    how many observations, their sum, and the cumulative count at each bucket bound."""

    count: int
    total: float
    buckets: tuple[tuple[float, int], ...]  # (upper bound, observations up to it), ascending

    @property
    def mean(self) -> float:
        """The mean observation (0.0 for none)."""
        return self.total / self.count if self.count else 0.0

    @property
    def highest_bound(self) -> float:
        """The smallest bucket bound that every observation is under: what the histogram
        says of the largest one (0.0 for none, ``inf`` past the last finite bound)."""
        for bound, seen in self.buckets:
            if self.count and seen >= self.count:
                return bound
        return 0.0

    @staticmethod
    def merged(parts: list[Histogram]) -> Histogram:
        """The histograms of ``parts`` added bucket by bucket."""
        buckets: dict[float, int] = {}
        for part in parts:
            for bound, seen in part.buckets:
                buckets[bound] = buckets.get(bound, 0) + seen
        count = sum(p.count for p in parts)
        return Histogram(count, sum(p.total for p in parts), tuple(sorted(buckets.items())))


async def histogram(session: aiohttp.ClientSession, url: str, name: str) -> Histogram:
    """A node's histogram metric ``name`` (its samples summed over their label sets)."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    count, total = 0.0, 0.0
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, labels = sample.partition("{")
        if metric == name + "_count":
            count += float(value)
        elif metric == name + "_sum":
            total += float(value)
        elif metric == name + "_bucket" and (bound := _BUCKET_BOUND.search(labels)):
            le = float(bound.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(value)
    return Histogram(int(count), total, tuple((b, int(n)) for b, n in sorted(buckets.items())))


async def wait_until_ready(
    session: aiohttp.ClientSession,
    url: str,
    timeout: float,
    process: asyncio.subprocess.Process | None = None,
) -> None:
    """Poll ``/ready`` every 10 ms until it answers 200; fails at once if ``process``
    (the one that serves ``url``) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/ready") as resp:
                if resp.status == 200:
                    return
        if process is not None and process.returncode is not None:
            raise RuntimeError(f"{url}: its process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready within {timeout} s")
        await asyncio.sleep(0.01)


async def wait_for_log(
    session: aiohttp.ClientSession, url: str, length: int, timeout: float
) -> float:
    """Poll until a node's log holds ``length`` entries; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            if await log_length(session, url) >= length:
                return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not reach log length {length} within {timeout} s")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------- nodes


def node_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """Our environment without node settings, plus ``settings`` and JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    env.update(
        {
            "QUDAG_API_HOST": "127.0.0.1",
            "QUDAG_API_PORT": "0",
            "QUDAG_P2P_PORT": "0",
            "QUDAG_LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings)
    return env


@dataclass
class NodeProcess:
    """One ``python -m qudag_node run`` on loopback."""

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    trace: Path | None = None  # strace's log of fsync calls, when traced
    cpu: int | None = None  # pin the node (every thread it starts) to this CPU
    pid: int = 0  # the node's own pid (strace's child when traced)
    url: str = ""
    p2p_port: int | None = None
    started_at: float = 0.0  # monotonic time of the spawn
    _proc: asyncio.subprocess.Process | None = None
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.data_dir.parent / f"{self.data_dir.name}.log"

    async def start(self, ready: bool = True) -> NodeProcess:
        """Spawn the node; return once its API listens (and, with ``ready``, is ready)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "qudag_node", "run"]
        if self.trace is not None:
            command = [
                *("strace", "-f", "--seccomp-bpf", "-qq", "-ttt", "-o", str(self.trace)),
                *("-e", "trace=fsync,fdatasync", *command),
            ]
        if self.cpu is not None:  # taskset execs the command: its threads inherit the mask
            command = ["taskset", "--cpu-list", str(self.cpu), *command]
        env = node_environment({"QUDAG_DATA_DIR": str(self.data_dir), **self.settings})
        with self._log.open("ab") as out:
            offset = out.tell()
            self.started_at = time.monotonic()
            self._proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        traced = self.trace is not None
        self.pid = await traced_child(self._proc.pid, sys.executable) if traced else self._proc.pid
        await self._read_ports(offset)
        if ready:
            async with aiohttp.ClientSession() as session:
                await wait_until_ready(session, self.url, START_TIMEOUT, self._proc)
        return self

    async def _read_ports(self, offset: int) -> None:
        """Find the ports in what this run wrote to the log (from ``offset`` on)."""
        self.url = ""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            with self._log.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if self._proc.returncode is not None:
                raise RuntimeError(f"node exited: {text[-3000:]}")
            for line in text.splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    event = record.get("event") if isinstance(record, dict) else None
                    if event == "p2p_listening":
                        self.p2p_port = int(record["port"])
                    elif event == "api_listening":
                        self.url = f"http://127.0.0.1:{record['port']}"
            if self.url:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("the node did not print its API port")

    async def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after :data:`STOP_TIMEOUT`); the exit code."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                proc.kill()
                await proc.wait()
        self._proc = None
        return proc.returncode or 0


@contextlib.asynccontextmanager
async def running(node: NodeProcess, ready: bool = True) -> AsyncIterator[NodeProcess]:
    """Start ``node`` and stop it on the way out, whatever happens."""
    try:
        yield await node.start(ready)
    finally:
        await node.stop()


@dataclass
class Testnet:
    """``qudag-node testnet`` on consecutive loopback ports, in ``directory``."""

    directory: Path
    nodes: int = 4
    sync_interval: float = 5.0
    log_level: str = "warning"
    scheme: Scheme = DEFAULT_SCHEME
    peer_transport: str = PEER_TRANSPORTS[0]
    urls: list[str] = field(default_factory=list)
    p2p_ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None

    @property
    def output(self) -> Path:
        """Where the testnet command's own output goes."""
        return self.directory / "testnet.out"

    def data_dir(self, k: int) -> Path:
        """Node ``k``'s data dir (0-based)."""
        return self.directory / "net" / f"node{k + 1}"

    async def start(self) -> Testnet:
        """Start the testnet; return once every node answers /ready."""
        api = free_port_block(self.nodes)
        p2p = free_port_block(self.nodes, avoid=range(api, api + self.nodes))
        self.urls = [f"http://127.0.0.1:{api + k}" for k in range(self.nodes)]
        self.p2p_ports = [p2p + k for k in range(self.nodes)]
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "qudag_node", "testnet", "--nodes", str(self.nodes)]
        command += ["--dir", str(self.directory / "net"), "--api-port", str(api)]
        command += ["--p2p-port", str(p2p), "--sync-interval", f"{self.sync_interval:g}"]
        command += ["--scheme", self.scheme.label, "--peer-transport", self.peer_transport]
        env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
        env["LOG_LEVEL"] = self.log_level
        with self.output.open("wb") as sink:
            self._proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink, env=env
            )
        async with aiohttp.ClientSession() as session:
            for url in self.urls:
                await wait_until_ready(session, url, START_TIMEOUT, self._proc)
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.pids) < self.nodes:  # each node's line comes once all are healthy
            if time.monotonic() > deadline:
                raise RuntimeError(f"the testnet did not name its nodes: {self.output}")
            await asyncio.sleep(0.05)
            self.pids = [int(p) for p in re.findall(r"\bpid (\d+)", self.output.read_text())]
        return self

    def genesis(self) -> Path:
        """The testnet's genesis file."""
        return self.directory / "net" / "genesis.json"

    def token(self) -> str:
        """The testnet's peer token."""
        return (self.directory / "net" / "peer-token").read_text().strip()

    async def stop(self) -> None:
        """SIGINT (the testnet stops its nodes) and wait."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def testnet_running(net: Testnet) -> AsyncIterator[Testnet]:
    """Start ``net`` and stop it on the way out, whatever happens."""
    try:
        yield await net.start()
    finally:
        await net.stop()
